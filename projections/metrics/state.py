"""Family state as plain msgspec Structs: one API for snapshots of every metric kind.

Rule: ``family_from_state(family_to_state(f))`` equals ``f`` exactly (floats
included, with msgpack; JSON has no NaN/Inf) and the state of equal families is
equal: series are listed in label order and derived render caches are left out.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from projections.clock import EventClock
from projections.metrics.families import (
    CounterFamily,
    Exemplar,
    GaugeFamily,
    HistogramFamily,
    HistogramSeries,
    OverflowCounts,
)
from projections.metrics.summary import AnyFamily, SummaryFamily, SummarySeries

__all__ = [
    "AgeBucketState",
    "CounterState",
    "FamilyState",
    "GaugeState",
    "HistogramSeriesState",
    "HistogramState",
    "LabeledValue",
    "SummarySeriesState",
    "SummaryState",
    "families_to_state",
    "family_from_state",
    "family_to_state",
    "summary_from_state",
    "summary_to_state",
]


class LabeledValue(msgspec.Struct, frozen=True, array_like=True):
    labels: tuple[str, ...]
    value: float


class HistogramSeriesState(msgspec.Struct, frozen=True, array_like=True):
    labels: tuple[str, ...]
    #: Per-bucket (not cumulative) counts; the last one is ``+Inf``.
    counts: list[int]
    sum: float
    count: int
    #: Bucket index -> its exemplar, by bucket (only in a family with an exemplar label).
    exemplars: dict[int, Exemplar] = {}


class AgeBucketState(msgspec.Struct, frozen=True, array_like=True):
    index: int
    #: Sketch bin keys, ascending, and their counts.
    keys: list[int]
    counts: list[int]


class SummarySeriesState(msgspec.Struct, frozen=True, array_like=True):
    labels: tuple[str, ...]
    sum: float
    count: int
    buckets: list[AgeBucketState]


class _FamilyHead(msgspec.Struct, frozen=True, tag_field="kind"):
    """The fields every family state starts with (encoded first, in this order)."""

    name: str
    help: str
    label_names: tuple[str, ...]
    max_series: int


class CounterState(_FamilyHead, frozen=True, tag="counter"):
    values: list[LabeledValue]
    #: When each series last changed (event clock), in label order.
    touched: list[LabeledValue] = []


class GaugeState(_FamilyHead, frozen=True, tag="gauge"):
    values: list[LabeledValue]
    #: When each series last changed (event clock), in label order.
    touched: list[LabeledValue] = []


class HistogramState(_FamilyHead, frozen=True, tag="histogram"):
    bounds: tuple[float, ...]
    series: list[HistogramSeriesState]
    exemplar_label: str = ""
    #: When each series last changed (event clock), in label order.
    touched: list[LabeledValue] = []


class SummaryState(_FamilyHead, frozen=True, tag="summary"):
    window_s: float
    age_buckets: int
    relative_error: float
    max_bins: int
    series: list[SummarySeriesState]
    #: When each series last changed (event clock), in label order.
    touched: list[LabeledValue] = []


FamilyState = CounterState | GaugeState | HistogramState | SummaryState


def _check_labels(state: FamilyState, labels: tuple[str, ...]) -> tuple[str, ...]:
    if len(labels) != len(state.label_names):
        raise ValueError(f"{state.name!r}: labels {labels!r} do not match {state.label_names!r}")
    return labels


def _values(values: dict[tuple[str, ...], float]) -> list[LabeledValue]:
    return [LabeledValue(labels, values[labels]) for labels in sorted(values)]


def summary_to_state(family: SummaryFamily) -> SummaryState:
    """Only age buckets still in (or ahead of) the window: the rest can never be read again."""
    first, _ = family.window()
    series = []
    for labels in sorted(family.series):
        s = family.series[labels]
        buckets = []
        for index in sorted(i for i in s.windows if i >= first):
            bins = s.windows[index]
            keys = sorted(bins)
            buckets.append(AgeBucketState(index, keys, [bins[k] for k in keys]))
        series.append(SummarySeriesState(labels, s.sum, s.count, buckets))
    return SummaryState(
        family.name,
        family.help,
        family.label_names,
        family.max_series,
        family.window_s,
        family.age_buckets,
        family.relative_error,
        family.max_bins,
        series,
        _values(family.touched),
    )


def summary_from_state(
    state: SummaryState, *, clock: EventClock, overflow: OverflowCounts | None = None
) -> SummaryFamily:
    family = SummaryFamily(
        state.name,
        state.help,
        state.label_names,
        clock=clock,
        window_s=state.window_s,
        age_buckets=state.age_buckets,
        relative_error=state.relative_error,
        max_bins=state.max_bins,
        max_series=state.max_series,
        overflow=overflow,
    )
    for s in state.series:
        series = family.series[_check_labels(state, s.labels)] = SummarySeries()
        series.sum = s.sum
        series.count = s.count
        for bucket in s.buckets:
            series.windows[bucket.index] = dict(zip(bucket.keys, bucket.counts, strict=True))
    _restore_touched(family.touched, state)
    return family


def _restore_touched(touched: dict[tuple[str, ...], float], state: FamilyState) -> None:
    touched.update((_check_labels(state, t.labels), t.value) for t in state.touched)


def family_to_state(family: AnyFamily) -> FamilyState:
    """The exact state of any family, series sorted by label values."""
    match family:
        case CounterFamily():
            return CounterState(
                family.name,
                family.help,
                family.label_names,
                family.max_series,
                _values(family.values),
                _values(family.touched),
            )
        case GaugeFamily():
            return GaugeState(
                family.name,
                family.help,
                family.label_names,
                family.max_series,
                _values(family.values),
                _values(family.touched),
            )
        case HistogramFamily():
            series = [
                HistogramSeriesState(
                    labels, list(s.counts), s.sum, s.count, dict(sorted(s.exemplars.items()))
                )
                for labels, s in sorted(family.series.items(), key=_by_labels)
            ]
            return HistogramState(
                family.name,
                family.help,
                family.label_names,
                family.max_series,
                family.bounds,
                series,
                family.exemplar_label,
                _values(family.touched),
            )
        case SummaryFamily():
            return summary_to_state(family)
    raise TypeError(f"not a metric family: {family!r}")


def _by_labels(item: tuple[tuple[str, ...], object]) -> tuple[str, ...]:
    return item[0]


def _histogram_from_state(
    state: HistogramState, overflow: OverflowCounts | None
) -> HistogramFamily:
    family = HistogramFamily(
        state.name,
        state.help,
        state.label_names,
        bounds=state.bounds,
        max_series=state.max_series,
        overflow=overflow,
        exemplar_label=state.exemplar_label,
    )
    for s in state.series:
        if len(s.counts) != len(family.bounds) + 1:
            raise ValueError(f"histogram {state.name!r}: {len(s.counts)} bucket counts")
        series = family.series[_check_labels(state, s.labels)] = HistogramSeries(len(family.bounds))
        series.counts = list(s.counts)
        series.sum = s.sum
        series.count = s.count
        if any(not 0 <= bucket < len(s.counts) for bucket in s.exemplars):
            raise ValueError(f"histogram {state.name!r}: an exemplar outside the buckets")
        series.exemplars = dict(s.exemplars)
    _restore_touched(family.touched, state)
    return family


def family_from_state(
    state: FamilyState, *, clock: EventClock, overflow: OverflowCounts | None = None
) -> AnyFamily:
    """A live family from its state; ``clock`` is shared by summaries, ``overflow`` by all."""
    match state:
        case CounterState() | GaugeState():
            cls = CounterFamily if isinstance(state, CounterState) else GaugeFamily
            scalar = cls(
                state.name,
                state.help,
                state.label_names,
                max_series=state.max_series,
                overflow=overflow,
            )
            scalar.values.update((_check_labels(state, v.labels), v.value) for v in state.values)
            _restore_touched(scalar.touched, state)
            return scalar
        case HistogramState():
            return _histogram_from_state(state, overflow)
        case SummaryState():
            return summary_from_state(state, clock=clock, overflow=overflow)
    raise TypeError(f"not a family state: {state!r}")


def families_to_state(families: Iterable[AnyFamily]) -> list[FamilyState]:
    """States of ``families``, sorted by family name."""
    return [family_to_state(f) for f in sorted(families, key=lambda f: f.name)]
