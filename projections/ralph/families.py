"""The loop families, rendered from the loops' states at render time.

Rule: read only. A loop has a series in a family iff the family's presence bit
is set in its state; values are read from the fields the family holds
(``catalogue.LOOP``), through a reader only where a value is derived.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Final

from projections.catalogue.loops import PER_LOOP, LoopFamily
from projections.metrics.families import (
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    HistogramSeries,
)
from projections.ralph.state import BIT, LoopState

__all__ = ["loop_families"]

#: One value of a loop's series; None leaves the series out.
Reader = Callable[[LoopState], float | None]


def _percent(value: float | None) -> float | None:
    return None if value is None else value / 100.0


#: Values that are not one held field as is.
_DERIVED: Final[dict[str, Reader]] = {
    "progress_velocity": lambda s: sum(s.scores) / len(s.scores) if s.scores else None,
    "active_sessions": lambda s: float(len(s.open_sessions)),
    "context_usage_ratio": lambda s: _percent(s.context_percent),
    "test_pass_ratio": lambda s: s.tests_passed / s.tests_total if s.tests_total > 0 else None,
    "cpu_usage_ratio": lambda s: s.cpu_percent / 100.0,
}


def _held(field: str) -> Reader:
    read = attrgetter(field)

    def value(s: LoopState) -> float | None:
        v = read(s)
        return None if v is None else float(v)

    return value


def _series(row: LoopFamily) -> tuple[tuple[tuple[str, ...], Reader], ...]:
    """A loop's series of a scalar family: the label values after ``loop``, and a reader.

    Unless derived, a family reads the fields it holds, in order: one per value
    of its last label where the row fixes them (``iterations_total``: ok, then
    failed), else its one field.
    """
    derived = _DERIVED.get(row.suffix)
    if derived is not None:
        return (((), derived),)
    if not row.label_values:
        (field,) = row.holds
        return (((), _held(field)),)
    fields = row.holds[: len(row.label_values)]
    return tuple(((v,), _held(f)) for v, f in zip(row.label_values, fields, strict=True))


def _histogram(row: LoopFamily) -> Callable[[LoopState], HistogramSeries]:
    """A histogram holds its per-bucket counts, then its sum, then its exemplars if it has
    an exemplar label (then roll-up only fields)."""
    counts_of, sum_of = attrgetter(row.holds[0]), attrgetter(row.holds[1])
    exemplars_of = attrgetter(row.holds[2]) if row.exemplar else None

    def series(s: LoopState) -> HistogramSeries:
        counts: list[int] = counts_of(s)
        out = HistogramSeries(len(counts) - 1)
        out.counts = list(counts)
        out.sum = sum_of(s)
        out.count = sum(counts)
        if exemplars_of is not None:
            out.exemplars = exemplars_of(s)  # read at render, before the next fold
        return out

    return series


_SCALARS: Final = tuple(
    (row.suffix, BIT[row.suffix], _series(row)) for row in PER_LOOP if row.kind != "histogram"
)
_HISTOGRAMS: Final = tuple(
    (row.suffix, BIT[row.suffix], _histogram(row)) for row in PER_LOOP if row.kind == "histogram"
)


def loop_families(
    families: dict[str, Family], loops: dict[str, LoopState], active_loops: int
) -> None:
    """Refill the loop ``families`` (keyed by suffix, built from ``catalogue.loop_specs``).

    Each family gets a fresh series dict built from ``loops``. The cardinality
    guard acted when loops were admitted (``LoopFold``), so series are filled in
    directly, without counting overflow again.
    """
    for suffix, bit, series in _SCALARS:
        scalar = families[suffix]
        assert isinstance(scalar, CounterFamily | GaugeFamily)
        values: dict[tuple[str, ...], float] = {}
        for loop_id, s in loops.items():
            if s.seen & bit:
                for tail, read in series:
                    value = read(s)
                    if value is not None:
                        values[(loop_id, *tail)] = value
        scalar.values = values
    for suffix, bit, series_of in _HISTOGRAMS:
        histogram = families[suffix]
        assert isinstance(histogram, HistogramFamily)
        histogram.series = {
            (loop_id,): series_of(s) for loop_id, s in loops.items() if s.seen & bit
        }
    active = families["active_loops"]
    assert isinstance(active, GaugeFamily)
    active.values = {(): float(active_loops)}
