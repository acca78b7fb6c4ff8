"""The summary sketch: its error bound, the event-time window, and order independence."""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.clock import EventClock
from projections.metrics.families import MetricNameError
from projections.metrics.state import summary_to_state
from projections.metrics.summary import QUANTILES, LogMapping, SummaryFamily, add_bins

ALPHA = 0.01
SLACK = 1e-12

finite = st.floats(
    min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
normal = finite.filter(lambda x: x == 0.0 or abs(x) >= 2.2250738585072014e-308)


def _family(clock: EventClock, **kwargs: float) -> SummaryFamily:
    return SummaryFamily("rpc_seconds", "RPC latency.", ("peer",), clock=clock, **kwargs)  # type: ignore[arg-type]


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q * (len(ordered) - 1))]


def _within(estimate: float, exact: float, alpha: float = ALPHA) -> bool:
    return abs(estimate - exact) <= (alpha + SLACK) * abs(exact)


@settings(max_examples=300)
@given(
    st.lists(normal, min_size=1, max_size=300),
    st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=5),
)
def test_quantiles_within_stated_error(values: list[float], extra_qs: list[float]) -> None:
    clock = EventClock(100.0)
    family = _family(clock)
    for v in values:
        family.observe(("db",), v, 100.0)
    for q in (*QUANTILES, 0.0, 1.0, *extra_qs):
        assert _within(family.quantile(("db",), q), _exact(values, q)), q


@given(normal, st.sampled_from([0.001, 0.01, 0.05, 0.2]))
def test_mapping_representative_within_alpha(x: float, alpha: float) -> None:
    mapping = LogMapping(alpha)
    assert _within(mapping.value(mapping.key(x)), x, alpha)


@given(normal, normal)
def test_mapping_keys_are_ordered_like_values(x: float, y: float) -> None:
    mapping = LogMapping(ALPHA)
    if x <= y:
        assert mapping.key(x) <= mapping.key(y)


def test_tiny_and_huge_values() -> None:
    clock = EventClock(0.0)
    family = _family(clock)
    for v in (2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308, 0.0):
        family.observe(("p",), v, 0.0)
    assert family.quantile(("p",), 0.0) == pytest.approx(-1.7976931348623157e308, rel=ALPHA)
    assert family.quantile(("p",), 1.0) == pytest.approx(1.7976931348623157e308, rel=ALPHA)
    assert math.isfinite(family.quantile(("p",), 1.0))
    assert family.quantile(("p",), 1 / 3) == 0.0


def test_nan_when_window_empty_or_series_unknown() -> None:
    clock = EventClock(0.0)
    family = _family(clock)
    assert all(math.isnan(v) for v in family.quantiles(("nobody",)))
    family.observe(("db",), 1.0, 0.0)
    assert family.quantile(("db",), 0.5) == pytest.approx(1.0, rel=ALPHA)
    clock.advance(10_000.0)
    assert math.isnan(family.quantile(("db",), 0.5))
    series = family.series[("db",)]
    assert (series.count, series.sum) == (1, 1.0)


def test_window_slides_with_event_time() -> None:
    # 600 s window in 5 buckets of 120 s.
    clock = EventClock(0.0)
    family = _family(clock)
    for ts, value in ((10.0, 1.0), (130.0, 2.0), (250.0, 3.0), (370.0, 4.0), (490.0, 5.0)):
        clock.advance(ts)
        family.observe(("db",), value, ts)
    assert family.window() == (0, 4)
    assert sum(family.window_bins(("db",)).values()) == 5
    assert family.quantile(("db",), 0.0) == pytest.approx(1.0, rel=ALPHA)
    clock.advance(600.0)  # bucket 5 starts: bucket 0 (ts 10) leaves the window
    assert family.window() == (1, 5)
    assert family.quantile(("db",), 0.0) == pytest.approx(2.0, rel=ALPHA)
    clock.advance(959.9)  # still bucket 7: buckets 3..7 hold only ts 370 and 490
    assert sum(family.window_bins(("db",)).values()) == 2
    clock.advance(1080.0)
    assert math.isnan(family.quantile(("db",), 0.5))
    series = family.series[("db",)]
    assert (series.count, series.sum) == (5, 15.0)  # cumulative over all time


def test_late_and_future_observations() -> None:
    clock = EventClock(1000.0)
    family = _family(clock)
    family.observe(("db",), 7.0, 100.0)  # long before the window: sum/count only
    assert math.isnan(family.quantile(("db",), 0.5))
    assert family.series[("db",)].count == 1
    family.observe(("db",), 9.0, 5000.0)  # ahead of the clock: counted once time gets there
    assert math.isnan(family.quantile(("db",), 0.5))
    clock.advance(5000.0)
    assert family.quantile(("db",), 0.5) == pytest.approx(9.0, rel=ALPHA)


def test_non_finite_values_count_but_skip_the_sketch() -> None:
    clock = EventClock(0.0)
    family = _family(clock)
    family.observe(("db",), math.inf, 0.0)
    family.observe(("db",), 2.0, math.nan)
    family.observe(("db",), 3.0, 0.0)
    series = family.series[("db",)]
    assert series.count == 3
    assert series.sum == math.inf
    assert sum(family.window_bins(series).values()) == 1


observations = st.lists(
    st.tuples(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        st.floats(min_value=0.0, max_value=3000.0),
        st.sampled_from(["a", "b"]),
    ),
    max_size=120,
)


def _state_bytes(family: SummaryFamily) -> bytes:
    return msgspec.msgpack.encode(summary_to_state(family))


def _fold_one_by_one(obs: list[tuple[float, float, str]], max_bins: int) -> SummaryFamily:
    """One event at a time, the clock advanced before each observation."""
    clock = EventClock(0.0)
    family = _family(clock, max_bins=max_bins)
    for value, ts, peer in obs:
        clock.advance(ts)
        family.observe((peer,), value, ts)
    return family


def _fold_batched(obs: list[tuple[float, float, str]], max_bins: int) -> SummaryFamily:
    """Batches of 7, the clock advanced only after each batch."""
    clock = EventClock(0.0)
    family = _family(clock, max_bins=max_bins)
    for start in range(0, len(obs), 7):
        batch = obs[start : start + 7]
        for value, ts, peer in batch:
            family.observe((peer,), value, ts)
        for _, ts, _ in batch:
            clock.advance(ts)
    return family


def _same_quantiles(a: SummaryFamily, b: SummaryFamily) -> None:
    for peer in ("a", "b"):
        qa, qb = a.quantiles((peer,)), b.quantiles((peer,))
        assert qa == qb or all(math.isnan(x) and math.isnan(y) for x, y in zip(qa, qb, strict=True))


@settings(max_examples=150)
@given(observations, st.sampled_from([4, 2048]))
def test_state_independent_of_batching(obs: list[tuple[float, float, str]], max_bins: int) -> None:
    one_by_one = _fold_one_by_one(obs, max_bins)
    batched = _fold_batched(obs, max_bins)
    assert _state_bytes(one_by_one) == _state_bytes(batched)
    _same_quantiles(one_by_one, batched)


@settings(max_examples=150)
@given(observations, st.randoms(use_true_random=False), st.sampled_from([4, 2048]))
def test_sketch_independent_of_order(
    obs: list[tuple[float, float, str]], rnd: random.Random, max_bins: int
) -> None:
    """Any order gives the same sketch and count; ``sum`` is a float running total in fold
    order (as for histograms), so only it may differ, in its last bits."""
    shuffled = list(obs)
    rnd.shuffle(shuffled)
    a = summary_to_state(_fold_one_by_one(obs, max_bins))
    b = summary_to_state(_fold_batched(shuffled, max_bins))
    for sa, sb in zip(a.series, b.series, strict=True):
        assert (sa.labels, sa.count, sa.buckets) == (sb.labels, sb.count, sb.buckets)
        assert sa.sum == pytest.approx(sb.sum, rel=1e-9, abs=1e-6)
    _same_quantiles(_fold_one_by_one(obs, max_bins), _fold_batched(shuffled, max_bins))


@given(
    st.lists(st.integers(min_value=-50, max_value=50), max_size=200),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=12),
)
def test_bins_merge_in_any_order(keys: list[int], rnd: random.Random, max_bins: int) -> None:
    """Collapsing depends on the set of bins only: any split and merge order agrees."""
    whole: dict[int, int] = {}
    for k in keys:
        add_bins(whole, k, 1, max_bins)
    shuffled = list(keys)
    rnd.shuffle(shuffled)
    cut = len(shuffled) // 2
    left: dict[int, int] = {}
    right: dict[int, int] = {}
    for k in shuffled[:cut]:
        add_bins(left, k, 1, max_bins)
    for k in shuffled[cut:]:
        add_bins(right, k, 1, max_bins)
    merged = dict(right)
    for k, n in left.items():
        add_bins(merged, k, n, max_bins)
    assert merged == whole
    assert len(whole) <= max_bins
    assert sum(whole.values()) == len(keys)
    if keys:  # the top bins are exact
        distinct = sorted(set(keys))
        kept = distinct[-max_bins:]
        for k in kept[1:]:
            assert whole[k] == keys.count(k)


def test_collapse_keeps_high_quantiles_exact_within_alpha() -> None:
    clock = EventClock(0.0)
    family = _family(clock, max_bins=50)
    values = [1.5**i for i in range(-200, 100)]  # 300 values, each in its own bin
    for v in values:
        family.observe(("db",), v, 0.0)
    bins = family.series[("db",)].windows[0]
    assert len(bins) == 50
    for q in (0.9, 0.99, 1.0):
        assert _within(family.quantile(("db",), q), _exact(values, q))


def test_validation() -> None:
    clock = EventClock()
    with pytest.raises(MetricNameError):
        SummaryFamily("x_seconds", "X.", ("quantile",), clock=clock)
    with pytest.raises(ValueError, match="relative_error"):
        SummaryFamily("x_seconds", "X.", clock=clock, relative_error=1.0)
    with pytest.raises(ValueError, match="window_s"):
        SummaryFamily("x_seconds", "X.", clock=clock, window_s=0.0)
    with pytest.raises(ValueError, match="age_buckets"):
        SummaryFamily("x_seconds", "X.", clock=clock, age_buckets=0)
    family = SummaryFamily("x_seconds", "X.", clock=clock)
    with pytest.raises(ValueError, match="quantile"):
        family.quantile((), 1.5)


def test_cardinality_guard() -> None:
    overflow: dict[str, float] = {}
    family = SummaryFamily(
        "x_seconds", "X.", ("k",), clock=EventClock(), max_series=2, overflow=overflow
    )
    for k in "abcd":
        family.observe((k,), 1.0, 0.0)
    assert sorted(family.series) == [("__overflow__",), ("a",), ("b",)]
    assert family.series[("__overflow__",)].count == 2
    assert overflow == {"x_seconds": 2.0}


def test_clock_only_moves_forward() -> None:
    clock = EventClock(5.0)
    clock.advance(3.0)
    clock.advance(math.nan)
    clock.advance(math.inf)
    assert clock.now == 5.0
    clock.advance(7.5)
    assert clock.now == 7.5
