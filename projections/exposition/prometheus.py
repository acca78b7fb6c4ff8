"""Prometheus text exposition format 0.0.4: families in, bytes out.

Rule: a pure function of the families' state, sorted by family name then label
values, so the same state always renders to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from projections.exposition.text import escape_help, family_samples, help_text
from projections.metrics.summary import AnyFamily

__all__ = ["CONTENT_TYPE", "render_prometheus"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _by_name(family: AnyFamily) -> str:
    return family.name


def render_prometheus(families: Iterable[AnyFamily]) -> bytes:
    """``# HELP`` (always, generated when the family has none) and ``# TYPE``, then the
    samples of each family.

    Counters keep their name as is (no ``_total`` added); histograms give
    cumulative ``_bucket{le=...}`` samples ending with ``le="+Inf"``, then
    ``_sum`` and ``_count``; summaries give ``{quantile="0.5"}``, ``0.9`` and
    ``0.99`` (NaN when their window is empty), then ``_sum`` and ``_count``.
    Numbers are written as Go writes them (:func:`textformat.format_float`).
    """
    parts: list[str] = []
    for family in sorted(families, key=_by_name):
        name = family.name
        text = escape_help(help_text(family))
        parts.append(f"\n# HELP {name} {text}\n# TYPE {name} {family.kind}")
        parts += family_samples(family, openmetrics=False).parts
    if not parts:
        return b""
    parts[0] = parts[0][1:]
    parts.append("\n")
    return "".join(parts).encode()
