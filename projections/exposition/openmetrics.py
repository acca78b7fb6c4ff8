"""OpenMetrics 1.0 text exposition: a scrape now, or a history of scrapes for backfill.

Rule: pure functions of the families' state (and of the timestamps given),
sorted by family name then label values; same input, same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from projections.exposition.text import escape_label_value, family_samples, help_text
from projections.metrics.families import CounterFamily, Labels
from projections.metrics.summary import AnyFamily

__all__ = ["CONTENT_TYPE", "OpenMetricsHistory", "metadata_name", "render_openmetrics"]

CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF: Final = "# EOF\n"


def metadata_name(family: AnyFamily) -> str:
    """The MetricFamily name: a counter's name without its ``_total`` suffix."""
    name = family.name
    if isinstance(family, CounterFamily) and name.endswith("_total") and len(name) > 6:
        return name[:-6]
    return name


def _metadata(family: AnyFamily) -> str:
    """``# TYPE`` then ``# HELP`` (generated when the family has none)."""
    name = metadata_name(family)
    return f"# TYPE {name} {family.kind}\n# HELP {name} {escape_label_value(help_text(family))}"


def _by_name(family: AnyFamily) -> str:
    return family.name


def render_openmetrics(families: Iterable[AnyFamily]) -> bytes:
    """One exposition ending ``# EOF``: counters as ``name_total``; histograms as
    cumulative ``_bucket{le=...}``, ``_count``, ``_sum``; summaries as
    ``{quantile=...}``, ``_count``, ``_sum``. ``le`` and ``quantile`` values are
    canonical numbers (``1.0``, ``0.5``, ``+Inf``). A histogram with an exemplar label
    writes each bucket's exemplar after its count:
    ``_bucket{le="5.0"} 3 # {run_id="r1",offset="1234"} 4.2 1700000000.5``."""
    parts: list[str] = []
    for family in sorted(families, key=_by_name):
        parts.append("\n" + _metadata(family))
        parts += family_samples(family, openmetrics=True, exemplars=True).parts
    if not parts:
        return _EOF.encode()
    parts[0] = parts[0][1:]
    parts.append("\n" + _EOF)
    return "".join(parts).encode()


def format_timestamp(ts: float) -> str:
    """Seconds in fixed notation (``1700000000.25``), never an exponent."""
    text = repr(float(ts))
    if "e" in text or "n" in text:
        raise ValueError(f"timestamp {ts!r} cannot be written in fixed notation")
    return text


class _FamilyHistory:
    __slots__ = ("kind", "metadata", "series")

    def __init__(self, kind: str, metadata: str) -> None:
        self.kind = kind
        self.metadata = metadata
        #: labels -> [(ts, rendered lines of one MetricPoint)].
        self.series: dict[Labels, list[tuple[float, str]]] = {}


class OpenMetricsHistory:
    """Scrapes taken at several event times, written as ONE OpenMetrics document.

    Each family's metadata appears once; under it each series' points follow in
    ascending time, every sample carrying its timestamp. This is the input
    ``promtool tsdb create-blocks-from openmetrics`` imports. ``add`` keeps text,
    not state, so families may change after it returns. A point added again at
    the same time replaces the earlier one. A family whose type changes keeps
    the first type seen; its samples of another type are left out. Exemplars are
    left out too: each is the latest of its bucket as of the end of the log, not of
    a point in the history.
    """

    __slots__ = ("_families",)

    def __init__(self) -> None:
        self._families: dict[str, _FamilyHistory] = {}

    def add(self, timestamp: float, families: Iterable[AnyFamily]) -> None:
        suffix = " " + format_timestamp(timestamp) + "\n"
        for family in families:
            history = self._families.get(family.name)
            if history is None:
                history = _FamilyHistory(family.kind, _metadata(family))
                self._families[family.name] = history
            elif history.kind != family.kind:
                continue
            order, parts, per_series = family_samples(family, openmetrics=True)
            step = 2 * per_series
            for i, labels in enumerate(order):
                chunk = parts[i * step : (i + 1) * step]
                lines = [chunk[j][1:] + chunk[j + 1] + suffix for j in range(0, step, 2)]
                history.series.setdefault(labels, []).append((timestamp, "".join(lines)))

    def __len__(self) -> int:
        """The number of MetricPoints held (one per series and time)."""
        return sum(
            len({ts for ts, _ in points})
            for history in self._families.values()
            for points in history.series.values()
        )

    def render(self) -> bytes:
        out: list[str] = []
        for name in sorted(self._families):
            history = self._families[name]
            out.append(history.metadata + "\n")
            for labels in sorted(history.series):
                points: dict[float, str] = {}
                for ts, text in sorted(history.series[labels], key=_by_time):
                    points[ts] = text  # the last point added at a time wins
                out += points.values()
        out.append(_EOF)
        return "".join(out).encode()


def _by_time(point: tuple[float, str]) -> float:
    return point[0]
