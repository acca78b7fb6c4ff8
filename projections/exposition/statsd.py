"""StatsD (DogStatsD) lines for the current values: one metric a line, tags after ``|#``.

Rule: a pure function of the families' state, sorted like the text formats.
Mapping: counters ``name:value|c``, gauges ``name:value|g``; histograms
``name_bucket:N|c`` per bucket (cumulative, tagged ``le:<bound>`` last, ending
``le:+Inf``) plus ``name_sum:S|c`` and ``name_count:N|c``; summaries
``name:v|g`` tagged ``quantile:0.5`` / ``0.9`` / ``0.99`` plus ``name_sum`` and
``name_count`` as gauges. Labels become tags ``label:value``. StatsD's
separators are replaced by ``_`` in names and tag values: ``:`` ``|`` ``,``
``#``, ``@``, carriage return and newline. Values are totals at render time (not
deltas since the last push) and samples whose value is NaN or infinite (a
summary with an empty window) are left out: StatsD has no way to write them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Final

from projections.exposition.text import format_float
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.summary import QUANTILES, AnyFamily, SummaryFamily

__all__ = ["CONTENT_TYPE", "render_statsd", "statsd_safe"]

CONTENT_TYPE: Final = "text/plain; charset=utf-8"

_UNSAFE: Final = str.maketrans({c: "_" for c in ":|,#@\r\n"})


def statsd_safe(text: str) -> str:
    """``text`` with StatsD's separators (``: | , # @`` CR LF) replaced by ``_``."""
    return text.translate(_UNSAFE)


def _tags(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    tags = [f"{n}:{statsd_safe(v)}" for n, v in zip(names, values, strict=True)]
    if extra:
        tags.append(extra)
    return "|#" + ",".join(tags) if tags else ""


def _line(name: str, value: float, kind: str, tags: str) -> str | None:
    if not math.isfinite(value):
        return None
    return f"{name}:{format_float(value)}|{kind}{tags}\n"


def _family_lines(family: AnyFamily) -> list[str | None]:
    name = statsd_safe(family.name)
    names = family.label_names
    lines: list[str | None] = []
    match family:
        case CounterFamily() | GaugeFamily():
            kind = "c" if isinstance(family, CounterFamily) else "g"
            for labels in sorted(family.values):
                lines.append(_line(name, family.values[labels], kind, _tags(names, labels)))
        case HistogramFamily():
            les = [format_float(b) for b in family.bounds] + ["+Inf"]
            for labels in sorted(family.series):
                s = family.series[labels]
                for le, n in zip(les, accumulate(s.counts), strict=True):
                    tags = _tags(names, labels, f"le:{le}")
                    lines.append(f"{name}_bucket:{n}|c{tags}\n")
                tags = _tags(names, labels)
                lines.append(_line(f"{name}_sum", s.sum, "c", tags))
                lines.append(f"{name}_count:{s.count}|c{tags}\n")
        case SummaryFamily():
            for labels in sorted(family.series):
                ss = family.series[labels]
                for q, v in zip(QUANTILES, family.quantiles(ss), strict=True):
                    tags = _tags(names, labels, f"quantile:{format_float(q)}")
                    lines.append(_line(name, v, "g", tags))
                tags = _tags(names, labels)
                lines.append(_line(f"{name}_sum", ss.sum, "g", tags))
                lines.append(f"{name}_count:{ss.count}|g{tags}\n")
    return lines


def render_statsd(families: Iterable[AnyFamily]) -> bytes:
    """Every sample of ``families`` as DogStatsD lines (see the module docstring)."""
    out: list[str] = []
    for family in sorted(families, key=lambda f: f.name):
        out += (line for line in _family_lines(family) if line is not None)
    return "".join(out).encode()
