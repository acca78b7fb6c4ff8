"""Content negotiation for ``/metrics``: an ``Accept`` header in, a format out.

Rule: pure functions of header text. Prometheus text 0.0.4 is the default;
OpenMetrics and JSON are served only when named (wildcards never pick them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from projections.exposition.formats import Format

__all__ = ["negotiate"]

#: media range -> (format, specificity). ``*/*`` and ``text/*`` only reach the default.
_MEDIA: Final[dict[str, tuple[Format, int]]] = {
    "application/openmetrics-text": ("openmetrics", 2),
    "application/json": ("json", 2),
    "text/plain": ("prometheus", 2),
    "text/*": ("prometheus", 1),
    "*/*": ("prometheus", 0),
}
#: OpenMetrics versions we can answer with 1.0.0 (0.0.1 is its pre-release name).
_OPENMETRICS_VERSIONS: Final = frozenset({"", "1.0.0", "0.0.1"})


def _qvalue(text: str) -> float:
    try:
        q = float(text)
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def _elements(header: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """``(token, params, q)`` for each comma-separated element, lower-cased."""
    for element in header.split(","):
        token, *rest = element.split(";")
        params: dict[str, str] = {}
        q = 1.0
        for param in rest:
            key, _, value = param.partition("=")
            key = key.strip().lower()
            value = value.strip().strip('"')
            if key == "q":
                q = _qvalue(value)
            else:
                params[key] = value
        token = token.strip().lower()
        if token:
            yield token, params, q


def negotiate(accept: str | None) -> Format:
    """The format for an ``Accept`` header, honouring q-values.

    Each format gets the q of the most specific range naming it; the highest q
    wins, ties going to the range listed first. With no header, nothing
    acceptable, or only wildcards, the answer is ``"prometheus"``.
    """
    if not accept:
        return "prometheus"
    # format -> (specificity, q, position) of its most specific matching range
    found: dict[Format, tuple[int, float, int]] = {}
    for position, (token, params, q) in enumerate(_elements(accept)):
        match = _MEDIA.get(token)
        if match is None:
            continue
        fmt, specificity = match
        if fmt == "openmetrics" and params.get("version", "") not in _OPENMETRICS_VERSIONS:
            continue
        if specificity == 2 and "version" in params:
            specificity = 3  # a type with a version is more specific than without
        seen = found.get(fmt)
        if seen is None or (specificity, q) > seen[:2]:
            found[fmt] = (specificity, q, position)
    best: Format = "prometheus"
    best_key = (0.0, 0)
    for fmt, (_, q, position) in found.items():
        if q > 0.0 and (q, -position) > best_key:
            best, best_key = fmt, (q, -position)
    return best
