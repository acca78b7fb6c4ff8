"""The OTLP fold: sums, gauges and histograms, delta and cumulative, resends and restarts."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.events import MetricsReset, MetricUpdate, OtelMetric
from projections.catalogue import EXPONENTIAL_BUCKETS
from projections.config import OtlpSettings, ProjectionConfig
from projections.fold import Projection
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.snapshot import decode_snapshot, encode_snapshot

TOKENS = "claude_code_token_usage_tokens_total"
RESOURCE = {"service.name": "claude-code"}


def point(**fields: Any) -> OtelMetric:
    base: dict[str, Any] = {
        "name": "claude_code.token.usage",
        "unit": "tokens",
        "kind": "sum",
        "monotonic": True,
        "temporality": "cumulative",
        "resource": RESOURCE,
        "attributes": {"type": "input", "session.id": "s1"},
    }
    return OtelMetric(**{**base, **fields})


def fold(*events: Any, config: ProjectionConfig | None = None) -> Projection:
    p = Projection(config)
    p.fold_events(list(events))
    return p


def family(p: Projection, name: str) -> Any:
    return next(f for f in p.families() if f.name == name)


def value(p: Projection, name: str, **labels: str) -> float:
    f = family(p, name)
    key = tuple(labels.get(n, "") for n in f.label_names)
    return float(f.values[key])


def test_delta_sums_add_up() -> None:
    p = fold(point(temporality="delta", value=5), point(temporality="delta", value=7))
    assert value(p, TOKENS, service_name="claude-code", type="input") == 12


def test_cumulative_sums_count_increases_once() -> None:
    p = fold(
        point(start_time_unix_nano=100, time_unix_nano=110, value=5),
        point(start_time_unix_nano=100, time_unix_nano=120, value=8),
        point(start_time_unix_nano=100, time_unix_nano=120, value=8),  # resent
        point(start_time_unix_nano=100, time_unix_nano=115, value=6),  # late, older
        point(start_time_unix_nano=200, time_unix_nano=210, value=3),  # sender restarted
        point(start_time_unix_nano=100, time_unix_nano=130, value=9),  # old run, late
        point(start_time_unix_nano=200, time_unix_nano=220, value=4),
    )
    assert value(p, TOKENS, service_name="claude-code", type="input") == 8 + 4


def test_cumulative_without_start_times_take_a_fall_as_a_restart() -> None:
    p = fold(point(value=5), point(value=8), point(value=2))
    assert value(p, TOKENS, service_name="claude-code", type="input") == 10


def test_streams_merged_by_a_dropped_attribute_each_count() -> None:
    p = fold(
        point(start_time_unix_nano=1, value=5),
        point(start_time_unix_nano=1, value=3, attributes={"type": "input", "session.id": "s2"}),
        point(start_time_unix_nano=1, value=6),
    )
    assert value(p, TOKENS, service_name="claude-code", type="input") == 9


def test_up_down_sums_and_gauges() -> None:
    updown = {"name": "queue.size", "unit": "{item}", "monotonic": False, "attributes": {}}
    p = fold(
        point(**updown, temporality="delta", value=5),
        point(**updown, temporality="delta", value=-2),
        point(name="mem", unit="By", kind="gauge", monotonic=False, value=10, attributes={}),
        point(name="mem", unit="By", kind="gauge", monotonic=False, value=7, attributes={}),
        point(name="open", monotonic=False, start_time_unix_nano=1, value=4, attributes={}),
        point(name="open", monotonic=False, start_time_unix_nano=1, value=2, attributes={}),
    )
    assert value(p, "queue_size", service_name="claude-code") == 3
    assert value(p, "mem_bytes", service_name="claude-code") == 7
    assert value(p, "open_tokens", service_name="claude-code") == 2
    assert isinstance(family(p, "open_tokens"), GaugeFamily)


def histogram(**fields: Any) -> OtelMetric:
    base = {
        "name": "api.duration",
        "unit": "s",
        "kind": "histogram",
        "monotonic": False,
        "bounds": [0.1, 1.0],
        "attributes": {},
    }
    return point(**{**base, **fields})


def test_histograms_keep_the_sender_s_bounds_delta_and_cumulative() -> None:
    p = fold(
        histogram(temporality="delta", counts=[1, 0, 1], sum=2.05, count=2),
        histogram(temporality="delta", counts=[0, 1, 0], sum=0.5, count=1),
    )
    f = family(p, "api_duration_seconds")
    assert isinstance(f, HistogramFamily) and f.bounds == (0.1, 1.0)
    s = f.series[("claude-code",)]
    assert (s.counts, s.sum, s.count) == ([1, 1, 1], 2.55, 3)
    p = fold(
        histogram(start_time_unix_nano=1, time_unix_nano=2, counts=[1, 0, 0], sum=0.05, count=1),
        histogram(start_time_unix_nano=1, time_unix_nano=3, counts=[1, 2, 0], sum=1.05, count=3),
        histogram(start_time_unix_nano=1, time_unix_nano=3, counts=[1, 2, 0], sum=1.05, count=3),
        histogram(start_time_unix_nano=9, time_unix_nano=10, counts=[0, 0, 1], sum=5.0, count=1),
    )
    s = family(p, "api_duration_seconds").series[("claude-code",)]
    assert (s.counts, s.sum, s.count) == ([1, 2, 1], 6.05, 4)


def test_other_bounds_and_other_kinds_are_rejected() -> None:
    p = fold(
        histogram(temporality="delta", counts=[1, 0, 0], count=1),
        histogram(temporality="delta", bounds=[1.0], counts=[1, 0], count=1),
        point(name="api.duration", unit="s", kind="gauge", monotonic=False, value=1),
        point(name="tally.x", kind="gauge", unit="", value=1),
        point(temporality="delta", value=-1),
    )
    assert p.rejected["bounds_conflict"] == 1
    assert p.rejected["reserved_name"] == 1
    assert p.rejected["invalid_point"] == 1
    assert family(p, "api_duration_seconds").series[("claude-code",)].count == 1
    assert "api_duration_seconds" not in {f.name for f in p.families() if f.kind == "gauge"}


def test_metric_events_and_otlp_families_never_share_a_name() -> None:
    p = fold(
        MetricUpdate(name="mem_bytes", kind="gauge", value=1),
        point(name="mem", unit="By", kind="gauge", monotonic=False, value=10),
        point(name="cpu", unit="", kind="gauge", monotonic=False, value=10),
        MetricUpdate(name="cpu", kind="gauge", value=1),
    )
    assert p.rejected["name_conflict"] == 2
    assert value(p, "mem_bytes") == 1


def test_exponential_histograms_become_powers_of_two() -> None:
    p = fold(
        point(
            name="lat",
            unit="s",
            kind="exponential_histogram",
            monotonic=False,
            temporality="delta",
            scale=1,
            zero_count=1,
            positive_offset=2,
            positive_counts=[2, 1],
            sum=9.0,
            count=4,
            attributes={},
        )
    )
    f = family(p, "lat_seconds")
    assert f.bounds == EXPONENTIAL_BUCKETS
    counts = f.series[("claude-code",)].counts
    assert counts[0] == 1 and counts[EXPONENTIAL_BUCKETS.index(4.0)] == 3 and sum(counts) == 4


def test_the_allow_list_and_high_cardinality_ids() -> None:
    both = {"type": "input", "session.id": "s1", "user.account_uuid": "u", "model": "m"}
    p = fold(point(temporality="delta", value=1, attributes=both))
    assert family(p, TOKENS).label_names == ("model", "service_name", "type")
    config = ProjectionConfig(
        otlp=OtlpSettings(
            labels={"claude_code.token.usage": ("type", "session.id", "service.name")}
        )
    )
    p = fold(point(temporality="delta", value=1, attributes=both), config=config)
    assert family(p, TOKENS).label_names == ("service_name", "session_id", "type")


def test_a_new_attribute_widens_the_family() -> None:
    p = fold(
        point(temporality="delta", value=1, attributes={"type": "input"}),
        point(temporality="delta", value=2, attributes={"type": "output", "model": "opus"}),
    )
    f = family(p, TOKENS)
    assert f.label_names == ("model", "service_name", "type")
    assert f.values == {("", "claude-code", "input"): 1, ("opus", "claude-code", "output"): 2}


def test_the_cardinality_guard_applies() -> None:
    config = ProjectionConfig(max_series_per_family=3)
    points = [point(temporality="delta", value=1, attributes={"tool": f"t{i}"}) for i in range(10)]
    p = fold(*points, config=config)
    f = family(p, TOKENS)
    assert len(f.values) == 4  # three, and the __overflow__ series
    assert f.values[("__overflow__", "__overflow__")] == 7
    assert sum(f.values.values()) == 10
    assert p.overflow[TOKENS] == 7


def test_a_reset_keeps_the_streams() -> None:
    p = fold(
        point(start_time_unix_nano=1, time_unix_nano=1, value=5),
        MetricsReset(prefix="claude_code_"),
        point(start_time_unix_nano=1, time_unix_nano=2, value=7),
    )
    assert value(p, TOKENS, service_name="claude-code", type="input") == 2


def test_the_series_limit_on_streams_forgets_the_oldest() -> None:
    config = ProjectionConfig(otlp=OtlpSettings(max_streams=1))
    p = fold(
        point(start_time_unix_nano=1, value=5),
        point(start_time_unix_nano=1, value=1, attributes={"type": "output"}),
        point(start_time_unix_nano=1, value=6),  # forgotten: counted as new
        config=config,
    )
    assert value(p, TOKENS, service_name="claude-code", type="input") == 11


_points = st.builds(
    point,
    start_time_unix_nano=st.sampled_from([0, 100, 200]),
    time_unix_nano=st.integers(0, 5),
    value=st.floats(0, 100, allow_nan=False),
    attributes=st.sampled_from([{"type": "a"}, {"type": "b", "session.id": "x"}]),
    temporality=st.sampled_from(["delta", "cumulative"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_points, max_size=12), st.integers(0, 12))
def test_a_snapshot_anywhere_continues_to_the_same_state(
    points: list[OtelMetric], cut: int
) -> None:
    whole = fold(*points)
    first = fold(*points[:cut])
    restored, _ = decode_snapshot(encode_snapshot(first), first.config)
    restored.fold_events(points[cut:])
    assert restored.export_state() == whole.export_state()
    if points:
        assert isinstance(family(whole, TOKENS), CounterFamily)
