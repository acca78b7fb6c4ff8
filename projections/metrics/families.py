"""Metric primitives: families of series keyed by label values.

No I/O and no wall clock here: time comes from event ts. State is plain
dicts, lists and floats so that folds stay cheap and snapshots are exact.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise
from typing import Final, Literal

import msgspec

from bus.errors import TallyError

__all__ = [
    "OVERFLOW",
    "CounterFamily",
    "Exemplar",
    "Family",
    "GaugeFamily",
    "HistogramFamily",
    "HistogramSeries",
    "Kind",
    "Labels",
    "MetricNameError",
    "OverflowCounts",
    "validate_bounds",
    "validate_label_name",
    "validate_metric_name",
]

Kind = Literal["counter", "gauge", "histogram", "summary"]
#: Label values in the order of the family's ``label_names``.
Labels = tuple[str, ...]
#: family name -> label sets refused by the cardinality guard.
OverflowCounts = dict[str, float]

OVERFLOW: Final = "__overflow__"
DEFAULT_MAX_SERIES: Final = 10_000

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED_LABELS: Final = frozenset({"le", "quantile"})


class MetricNameError(TallyError, ValueError):
    """Raised when a metric name, label name or bucket layout is not valid."""

    exit_code = 2
    http_status = 400


def validate_metric_name(name: str) -> str:
    if not _METRIC_NAME.fullmatch(name):
        raise MetricNameError(f"invalid metric name {name!r}")
    return name


def validate_label_name(name: str) -> str:
    if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise MetricNameError(f"invalid label name {name!r}")
    return name


def validate_bounds(bounds: Sequence[float]) -> tuple[float, ...]:
    """Histogram upper bounds: finite, strictly ascending; ``+Inf`` is implicit."""
    out = tuple(float(b) for b in bounds)
    if out and out[-1] == math.inf:
        out = out[:-1]
    if not out:
        raise MetricNameError("a histogram needs at least one finite bucket bound")
    for b in out:
        if not math.isfinite(b):
            raise MetricNameError(f"bucket bound {b!r} is not finite")
    for lo, hi in pairwise(out):
        if not lo < hi:
            raise MetricNameError(f"bucket bounds must ascend strictly: {lo!r} then {hi!r}")
    return out


class _FamilyBase:
    """Name, help, label names and the cardinality guard shared by every kind."""

    # __weakref__: renderers keep derived text caches keyed weakly by family.
    __slots__ = (
        "__weakref__",
        "help",
        "label_names",
        "max_series",
        "name",
        "overflow",
        "touched",
    )
    kind: Kind

    def __init__(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        overflow: OverflowCounts | None = None,
    ) -> None:
        self.name = validate_metric_name(name)
        self.help = help
        names = tuple(validate_label_name(n) for n in label_names)
        if len(set(names)) != len(names):
            raise MetricNameError(f"duplicate label name in {names!r}")
        self.label_names: tuple[str, ...] = names
        self.max_series = max_series
        self.overflow: OverflowCounts = {} if overflow is None else overflow
        #: labels -> the event clock when the series last changed (``now`` of the update).
        self.touched: dict[Labels, float] = {}

    def _admit(self, labels: Labels, size: int) -> Labels:
        """Labels for a series not yet present: itself, or the overflow series."""
        if size < self.max_series:
            return labels
        self.overflow[self.name] = self.overflow.get(self.name, 0.0) + 1.0
        return (OVERFLOW,) * len(self.label_names)


class _ScalarFamily(_FamilyBase):
    """One float per series: what counters and gauges share."""

    __slots__ = ("values",)

    def __init__(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        overflow: OverflowCounts | None = None,
    ) -> None:
        super().__init__(name, help, label_names, max_series=max_series, overflow=overflow)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0, *, now: float | None = None) -> None:
        """Add ``amount``; ``now`` (the event clock), if given, is when the series changed."""
        values = self.values
        current = values.get(labels)
        if current is None:
            labels = self._admit(labels, len(values))
            current = values.get(labels, 0.0)
        values[labels] = current + amount
        if now is not None:
            self.touched[labels] = now

    def clear(self) -> None:
        """Forget every series; an unlabelled family keeps its one series, at 0."""
        self.values.clear()
        self.touched.clear()
        if not self.label_names:
            self.values[()] = 0.0


class CounterFamily(_ScalarFamily):
    __slots__ = ()
    kind: Kind = "counter"


class GaugeFamily(_ScalarFamily):
    __slots__ = ()
    kind: Kind = "gauge"

    def set(self, labels: Labels, value: float, *, now: float | None = None) -> None:
        values = self.values
        if labels not in values:
            labels = self._admit(labels, len(values))
        values[labels] = value
        if now is not None:
            self.touched[labels] = now


class Exemplar(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The latest observation that fell in a bucket: whose it was and where it is in the log.

    ``ident`` is the value of the family's ``exemplar_label`` (a ``run_id`` or a
    ``loop_id``), ``offset`` the event's bus position, ``ts`` its event time. Not
    tracked by the garbage collector (it holds no containers): folds make one per
    observation.
    """

    ident: str
    value: float
    ts: float
    offset: int


class HistogramSeries:
    """Per-bucket (not cumulative) counts; the last slot is ``+Inf``.

    ``exemplars`` (bucket index -> ``Exemplar``) is filled only in a family with an
    ``exemplar_label``.
    """

    __slots__ = ("count", "counts", "exemplars", "sum")

    def __init__(self, nbuckets: int) -> None:
        self.counts: list[int] = [0] * (nbuckets + 1)
        self.sum = 0.0
        self.count = 0
        self.exemplars: dict[int, Exemplar] = {}


class HistogramFamily(_FamilyBase):
    """Histogram series; ``exemplar_label`` (``""``: none) names the label of its exemplars
    (beside ``offset``), as the catalogue declares it."""

    __slots__ = ("bounds", "exemplar_label", "series")
    kind: Kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        *,
        bounds: Sequence[float],
        max_series: int = DEFAULT_MAX_SERIES,
        overflow: OverflowCounts | None = None,
        exemplar_label: str = "",
    ) -> None:
        super().__init__(name, help, label_names, max_series=max_series, overflow=overflow)
        if "le" in self.label_names:
            raise MetricNameError(f"histogram {name!r} may not use the label 'le'")
        self.bounds: tuple[float, ...] = validate_bounds(bounds)
        self.series: dict[Labels, HistogramSeries] = {}
        self.exemplar_label = exemplar_label and validate_label_name(exemplar_label)

    def observe(
        self, labels: Labels, value: float, *, now: float | None = None
    ) -> tuple[HistogramSeries, int]:
        """Count ``value``; the series it went to and its bucket index (for an exemplar).

        ``now`` (the event clock), if given, is when the series changed.
        """
        series = self.series.get(labels)
        if series is None:
            labels = self._admit(labels, len(self.series))
            series = self.series.get(labels)
            if series is None:
                series = self.series[labels] = HistogramSeries(len(self.bounds))
        bucket = bisect_left(self.bounds, value)
        series.counts[bucket] += 1
        series.sum += value
        series.count += 1
        if now is not None:
            self.touched[labels] = now
        return series, bucket

    def add(
        self,
        labels: Labels,
        counts: Sequence[int],
        total: float,
        count: int,
        *,
        now: float | None = None,
    ) -> None:
        """Add observations already bucketed (per-bucket counts, +Inf last, as ``bounds``)."""
        if len(counts) != len(self.bounds) + 1:
            raise ValueError(f"{self.name}: {len(counts)} counts for {len(self.bounds)} bounds")
        series = self.series.get(labels)
        if series is None:
            labels = self._admit(labels, len(self.series))
            series = self.series.get(labels)
            if series is None:
                series = self.series[labels] = HistogramSeries(len(self.bounds))
        mine = series.counts
        for i, n in enumerate(counts):
            mine[i] += n
        series.sum += total
        series.count += count
        if now is not None:
            self.touched[labels] = now

    def clear(self) -> None:
        """Forget every series; an unlabelled family keeps its one series, empty."""
        self.series.clear()
        self.touched.clear()
        if not self.label_names:
            self.series[()] = HistogramSeries(len(self.bounds))


# SummaryFamily lives in projections/summary.py (sliding-window sketch).
Family = CounterFamily | GaugeFamily | HistogramFamily
