"""The metric reference's tables (``docs/metrics.md``), written from the catalogue.

Rule: a pure function of the declarations: every row comes from a ``FamilySpec``,
a ``catalogue.LOOP`` row or a default setting, so the reference cannot say
anything the code does not (a test checks the file holds exactly these tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from projections.catalogue.conductor import CONDUCTOR
from projections.catalogue.loops import CONDITIONS, LOOP, Feed, LoopFamily
from projections.catalogue.self_metrics import REJECT_REASONS, SELF, SERVER
from projections.catalogue.spec import FamilySpec
from projections.config import ProjectionConfig
from projections.exposition.text import format_float

__all__ = ["LOOP_PREFIX", "SETTINGS", "reference_tables"]

#: How the reference writes the configurable loop prefix.
LOOP_PREFIX: Final = "P"
_HEADER: Final = ("name", "type", "labels", "buckets", "help")
#: What each ``[projections]`` setting does to the families (its default comes from the code).
SETTINGS: Final[dict[str, str]] = {
    "loop_prefix": f"`{LOOP_PREFIX}`, the prefix of the Ralph-loop families",
    "iteration_buckets": f"buckets of `{LOOP_PREFIX}_iteration_duration_seconds`",
    "default_buckets": "buckets of histograms created by `metric` events",
    "max_series_per_family": "series per family (and loops) before the `__overflow__` series",
    "summary_window_s": "sliding window of summaries, in seconds of event time",
    "summary_age_buckets": "sub-windows the summary window rotates through",
    "series_ttl_s": "labelled series not updated for this long (event time) are not rendered; "
    "their state is kept (0: off)",
    "forget_after_s": "labelled series not updated for this long (event time) are freed: "
    "a counter reset (0: off)",
    "otlp": "set in `[otlp]`: which OTLP attributes become labels, cumulative streams kept",
    "rules": "set by `[[rules]]`: events and OTLP log event names mapped to families",
    "event_types": "set by `[[event_types]]`: event types of your own, counted like the built-ins",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _numbers(values: Iterable[float]) -> str:
    return " ".join(format_float(float(v)) for v in values)


def _labels(names: Sequence[str], values: Sequence[str] = ()) -> str:
    text = ", ".join(names)
    return f"{text} ({', '.join(values)})" if values else text


def _exemplars(label: str) -> str:
    """What a histogram's buckets carry besides counts (see the README's Exemplars)."""
    return f"; exemplars: `{label}`, `offset`" if label else ""


def _family_row(spec: FamilySpec) -> tuple[str, ...]:
    name, labels, buckets = f"`{spec.name}`", _labels(spec.label_names), _numbers(spec.buckets)
    return (name, spec.kind, labels, buckets + _exemplars(spec.exemplar), spec.help)


def _feed(feed: Feed) -> str:
    tag = f"`{feed.event.__struct_config__.tag}`"
    condition = CONDITIONS[feed.when]
    return f"{tag} {condition}" if condition else tag


def _loop_row(row: LoopFamily) -> tuple[str, ...]:
    buckets = _numbers(row.buckets)
    if row.setting:
        buckets += f" (default; setting `{row.setting}`)"
    buckets += _exemplars(row.exemplar)
    return (
        f"`{LOOP_PREFIX}_{row.suffix}`",
        row.kind,
        _labels(row.labels, row.label_values),
        buckets,
        ", ".join(_feed(f) for f in row.feeds),
        row.help,
    )


def _setting(value: object) -> str:
    if isinstance(value, msgspec.Struct):
        return "see the README"
    if value == ():
        return "none"
    if isinstance(value, tuple):
        return _numbers(value)
    if isinstance(value, float):
        return format_float(value)
    return f"`{value}`" if isinstance(value, str) else str(value)


def reference_tables() -> dict[str, str]:
    """The reference's tables as Markdown, by the heading they stand under."""
    defaults = ProjectionConfig()
    return {
        "Conductor families": _table(_HEADER, map(_family_row, CONDUCTOR)),
        "Ralph-loop families": _table(
            ("name", "type", "labels", "buckets", "updated by", "help"), map(_loop_row, LOOP)
        ),
        "Self-metrics": _table(_HEADER, map(_family_row, SELF)),
        "Server families": _table(_HEADER, map(_family_row, SERVER)),
        "Rejected metric events": _table(
            ("reason", "meaning"), ((f"`{r}`", m) for r, m in REJECT_REASONS.items())
        ),
        "Settings": _table(
            ("setting", "default", "what it sets"),
            ((f"`{k}`", _setting(getattr(defaults, k)), v) for k, v in SETTINGS.items()),
        ),
    }
