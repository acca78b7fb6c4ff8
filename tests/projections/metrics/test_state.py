"""Family state: exact round trips through msgspec for every kind of family."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.clock import EventClock
from projections.exposition.prometheus import render_prometheus
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.state import (
    CounterState,
    FamilyState,
    SummaryState,
    families_to_state,
    family_from_state,
    family_to_state,
)
from projections.metrics.summary import AnyFamily, SummaryFamily
from tests.support.families import sample_families

_msgpack_decoder = msgspec.msgpack.Decoder(FamilyState)
_json_decoder = msgspec.json.Decoder(FamilyState)


def _msgpack_round_trip(family: AnyFamily, clock: EventClock) -> AnyFamily:
    data = msgspec.msgpack.encode(family_to_state(family))
    return family_from_state(_msgpack_decoder.decode(data), clock=clock)


def test_every_kind_round_trips_exactly() -> None:
    families = sample_families()
    summary = families[3]
    assert isinstance(summary, SummaryFamily)
    clock = summary.clock
    for family in families:
        again = _msgpack_round_trip(family, clock)
        assert type(again) is type(family)
        assert family_to_state(again) == family_to_state(family)
        assert render_prometheus([again]) == render_prometheus([family])
    # JSON is exact for finite floats too.
    for family in families:
        state = family_to_state(family)
        assert _json_decoder.decode(msgspec.json.encode(state)) == state


@given(
    st.dictionaries(
        st.tuples(st.text(max_size=5), st.text(max_size=5)),
        st.floats(allow_nan=False) | st.just(math.nan),
        max_size=20,
    )
)
def test_float_values_round_trip_bit_exactly(values: dict[tuple[str, str], float]) -> None:
    gauge = GaugeFamily("x_ratio", "X.", ("a", "b"))
    gauge.values.update(values)
    again = _msgpack_round_trip(gauge, EventClock())
    assert isinstance(again, GaugeFamily)
    assert {k: repr(v) for k, v in again.values.items()} == {k: repr(v) for k, v in values.items()}


def test_state_is_canonical() -> None:
    """Insertion order and derived caches do not show in the state."""
    a = CounterFamily("x_total", "X.", ("k",))
    b = CounterFamily("x_total", "X.", ("k",))
    for k in "abc":
        a.inc((k,))
    for k in "cba":
        b.inc((k,))
    render_prometheus([a])
    assert msgspec.msgpack.encode(family_to_state(a)) == msgspec.msgpack.encode(family_to_state(b))


def test_summary_state_keeps_only_readable_buckets() -> None:
    clock = EventClock(0.0)
    family = SummaryFamily("x_seconds", "X.", clock=clock, window_s=100.0, age_buckets=5)
    for ts in (0.0, 25.0, 45.0, 65.0, 85.0):
        clock.advance(ts)
        family.observe((), 1.0, ts)
    clock.advance(100.0)  # bucket 0 has left the window
    state = family_to_state(family)
    assert isinstance(state, SummaryState)
    assert [b.index for b in state.series[0].buckets] == [1, 2, 3, 4]
    again = family_from_state(state, clock=clock)
    assert isinstance(again, SummaryFamily)
    assert again.quantiles(()) == family.quantiles(())
    assert (again.series[()].count, again.series[()].sum) == (5, 5.0)


def test_overflow_and_clock_are_shared() -> None:
    overflow: dict[str, float] = {}
    clock = EventClock(10.0)
    state = CounterState("x_total", "X.", ("k",), 1, [])
    counter = family_from_state(state, clock=clock, overflow=overflow)
    assert isinstance(counter, CounterFamily)
    counter.inc(("a",))
    counter.inc(("b",))
    assert overflow == {"x_total": 1.0}
    summary = family_from_state(
        SummaryState("y_seconds", "Y.", (), 10, 600.0, 5, 0.01, 2048, []), clock=clock
    )
    assert isinstance(summary, SummaryFamily)
    assert summary.clock is clock


def test_bad_histogram_state_is_refused() -> None:
    hist = HistogramFamily("h_seconds", "H.", bounds=(1.0, 2.0))
    hist.observe((), 1.5)
    state = msgspec.structs.replace(
        family_to_state(hist),
        bounds=(1.0,),  # type: ignore[call-arg]
    )
    with pytest.raises(ValueError, match="bucket counts"):
        family_from_state(state, clock=EventClock())


def test_families_to_state_sorted_by_name() -> None:
    states = families_to_state(reversed(sample_families()))
    assert [s.name for s in states] == sorted(s.name for s in states)
