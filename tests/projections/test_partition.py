"""Partitioned folds: each part folded on its own (ticks for the other's lines), merged,
renders byte for byte what one pass renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.events import EVENT_TYPES, ContextUsage, Event, IterationCompleted, RunStarted
from bus.reader import BusReader
from bus.writer import BusConfig, BusWriter
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.partition import LIFECYCLE, PARTS, TRAFFIC, Part, merge
from projections.replay import fold_batches
from server.replay import replay
from tests.support.families import rendered
from tests.support.workload import mixed_events

FORMATS = ("prometheus", "openmetrics", "json", "statsd")


def write(data_dir: Path, events: list[Event]) -> None:
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        for i in range(0, len(events), 700):
            writer.append(events[i : i + 700])


def fold_part(data_dir: Path, part: Part, config: ProjectionConfig, **until: float) -> Projection:
    reader = BusReader(data_dir, quarantine=False, decoder=part.decoder, chunk_bytes=4096)
    until_offset = until.get("until_offset")
    batches = reader.read_from(0, None if until_offset is None else int(until_offset))
    return fold_batches(
        Projection(config, ticks=part.ticks), batches, until_ts=until.get("until_ts")
    )


def merged(data_dir: Path, config: ProjectionConfig, **until: float) -> Projection:
    traffic = fold_part(data_dir, TRAFFIC, config, **until)
    lifecycle = fold_part(data_dir, LIFECYCLE, config, **until)
    assert traffic.corrupt_lines == lifecycle.corrupt_lines == 0
    return merge(traffic.export_state(), lifecycle.export_state(), config)


def assert_same(a: Projection, b: Projection) -> None:
    for fmt in FORMATS:
        assert rendered(a, fmt) == rendered(b, fmt), fmt
    assert a.events_by_type == b.events_by_type
    assert (a.offset, a.clock.now) == (b.offset, b.clock.now)


def test_parts_cover_every_type_once_and_both_fold_resets() -> None:
    assert TRAFFIC.owned | LIFECYCLE.owned == set(EVENT_TYPES)
    assert TRAFFIC.owned & LIFECYCLE.owned == {"metrics_reset"}
    for part in PARTS:
        assert len(part.ticks) == len(EVENT_TYPES) - len(part.owned)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(min_value=0, max_value=6000),
    seed=st.integers(min_value=0, max_value=10**6),
    max_series=st.sampled_from([2, 5, 10_000]),
    forget=st.sampled_from([0.0, 3.0]),
)
def test_merge_equals_one_pass(
    tmp_path_factory: pytest.TempPathFactory, n: int, seed: int, max_series: int, forget: float
) -> None:
    """Any mixed log (resets every 2,000 events, the cardinality guard overflowing or not,
    stale series forgotten or not: each part sweeps what it holds at the same boundaries)."""
    data_dir = tmp_path_factory.mktemp("bus")
    write(data_dir, list(mixed_events(n, seed=seed)))
    config = ProjectionConfig(
        max_series_per_family=max_series, series_ttl_s=2.0 if forget else 0.0, forget_after_s=forget
    )
    assert_same(merged(data_dir, config), replay(data_dir, config=config))


def test_merge_equals_one_pass_as_of_an_offset_and_a_time(data_dir: Path) -> None:
    events = list(mixed_events(5000, seed=3))
    write(data_dir, events)
    config = ProjectionConfig()
    whole = merged(data_dir, config)  # exemplars are the lifecycle part's, kept whole
    assert_same(whole, replay(data_dir, config=config))
    text = rendered(whole, "openmetrics")
    assert b' # {run_id="' in text and b' # {loop_id="' in text
    for until_offset in (0, 1, 123_457, 400_000):
        assert_same(
            merged(data_dir, config, until_offset=until_offset),
            replay(data_dir, config=config, until_offset=until_offset),
        )
    until_ts = events[2500].ts
    assert until_ts is not None
    assert_same(
        merged(data_dir, config, until_ts=until_ts),
        replay(data_dir, config=config, until_ts=until_ts),
    )


def test_unstamped_and_out_of_order_events_see_the_same_clock(data_dir: Path) -> None:
    """An event without ts happens at the clock, which the other part's ticks advanced."""
    events: list[Event] = [
        *mixed_events(300, seed=9),
        RunStarted(run_id="late", project="p", ts=1.0),  # behind the clock
        IterationCompleted(loop_id="ralph-a", iteration=99, duration_s=1.0, success=True),
        ContextUsage(loop_id="ralph-a", percent=50.0),
    ]
    path = data_dir / "bus"
    write(data_dir, events[:300])
    # Unstamped lines as an external writer would leave them (the writer stamps its own).
    with open(next(path.glob("*.jsonl")), "ab") as f:
        f.write(b'{"type":"run_started","run_id":"late","project":"p","ts":1.0}\n')
        f.write(b'{"type":"iteration_completed","loop_id":"ralph-a","iteration":99,')
        f.write(b'"duration_s":1.0,"success":true}\n')
        f.write(b'{"type":"api_request","method":"GET","status":200}\n')
        f.write(b'{"type":"session_started","loop_id":"ralph-a","session_id":"s-x"}\n')
    config = ProjectionConfig()
    assert_same(merged(data_dir, config), replay(data_dir, config=config))


def test_a_corrupt_line_is_seen_by_its_owner(data_dir: Path) -> None:
    """A line its owner rejects is only a tick to the other part: the caller must fall back."""
    write(data_dir, list(mixed_events(200, seed=1)))
    with open(next((data_dir / "bus").glob("*.jsonl")), "ab") as f:
        f.write(
            b'{"type":"iteration_completed","loop_id":"a","iteration":1,"duration_s":-5,"success":true,"ts":2e9}\n'
        )
    config = ProjectionConfig()
    assert fold_part(data_dir, LIFECYCLE, config).corrupt_lines == 1
    assert fold_part(data_dir, TRAFFIC, config).corrupt_lines == 0  # ticked, unchecked


def test_parts_that_disagree_are_refused(data_dir: Path) -> None:
    write(data_dir, list(mixed_events(500, seed=2)))
    config = ProjectionConfig()
    traffic = fold_part(data_dir, TRAFFIC, config, until_offset=10_000)
    lifecycle = fold_part(data_dir, LIFECYCLE, config)
    with pytest.raises(ValueError, match="disagree"):
        merge(traffic.export_state(), lifecycle.export_state(), config)
