"""Snapshots: fold, snapshot, restore, fold on == fold in one pass, byte for byte."""

from __future__ import annotations

import functools

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.errors import TallyError
from bus.events import (
    ApiRequest,
    Event,
    IterationCompleted,
    MetricsReset,
    MetricUpdate,
    RunStarted,
    SessionStarted,
)
from projections.config import ProjectionConfig
from projections.exemplars import PositionsOf
from projections.exposition.jsonformat import render_json
from projections.exposition.prometheus import render_prometheus
from projections.fold import Projection
from projections.replay import listed
from projections.snapshot import (
    SNAPSHOT_VERSION,
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    read_snapshot_meta,
)
from tests.support.workload import mixed_events

#: A small window and series limit, so that expiry and overflow happen within the workload.
TIGHT = ProjectionConfig(summary_window_s=5.0, summary_age_buckets=5, max_series_per_family=4)


@functools.cache
def workload() -> tuple[Event, ...]:
    events: list[Event] = list(mixed_events(2_500, seed=5))
    extra: list[Event] = [
        RunStarted(run_id="unstamped", project="p"),  # ts None: at the clock
        SessionStarted(loop_id="ralph-a", session_id="unstamped"),
        IterationCompleted(loop_id="ralph-z", iteration=1, duration_s=3.0, success=True),
        MetricUpdate(name="app_payload_bytes", kind="summary", value=5.0, labels={"kind": "x"}),
        ApiRequest(method="PATCH", status=418),
        MetricsReset(prefix="ralph_loop_progress"),
    ]
    for i, ev in enumerate(extra):
        events.insert(300 + 400 * i, ev)
    return tuple(events)


def rendered(projection: Projection) -> tuple[bytes, bytes]:
    families = projection.families()
    return render_prometheus(families), render_json(families, loops=projection.loops())


def at(start: int, stop: int) -> PositionsOf:
    """Positions for the events ``start:stop`` of the workload (exemplars point there)."""
    return listed(range(100 * start + 7, 100 * stop + 7, 100))


def fold_in_one_pass(events: list[Event], config: ProjectionConfig) -> Projection:
    projection = Projection(config)
    projection.fold_events(events, at(0, len(events)))
    projection.offset = len(events)
    return projection


@functools.cache
def one_pass(config: ProjectionConfig) -> tuple[bytes, bytes]:
    return rendered(fold_in_one_pass(list(workload()), config))


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=len(workload())), max_size=4),
    tight=st.booleans(),
)
def test_restoring_at_any_split_gives_the_same_bytes(cuts: list[int], tight: bool) -> None:
    config = TIGHT if tight else ProjectionConfig()
    events = list(workload())
    projection = Projection(config)
    start = 0
    for cut in sorted(cuts):
        projection.fold_events(events[start:cut], at(start, cut))
        projection.offset = cut
        if cut % 2:  # read the state before snapshotting sometimes: it must not matter
            rendered(projection)
        projection, meta = decode_snapshot(encode_snapshot(projection, bus_identity="b"), config)
        assert meta.offset == cut
        start = cut
    projection.fold_events(events[start:], at(start, len(events)))
    projection.offset = len(events)
    assert rendered(projection) == one_pass(config)
    assert b'"exemplars"' in one_pass(config)[1]  # restored with the rest


def test_a_snapshot_of_a_snapshot_is_the_same_bytes() -> None:
    projection = fold_in_one_pass(list(workload()), TIGHT)
    data = encode_snapshot(projection, bus_identity="log-1")
    again, _ = decode_snapshot(data, TIGHT)
    assert encode_snapshot(again, bus_identity="log-1") == data


def test_meta_carries_offset_clock_identity_and_fingerprint() -> None:
    projection = fold_in_one_pass(list(workload())[:100], ProjectionConfig())
    projection.offset = 12345
    data = encode_snapshot(projection, bus_identity="inode:42")
    meta = read_snapshot_meta(data)
    assert meta.version == SNAPSHOT_VERSION
    assert meta.offset == 12345
    assert meta.bus_identity == "inode:42"
    assert meta.clock == projection.clock.now
    assert meta.fingerprint == ProjectionConfig().fingerprint()
    restored, meta2 = decode_snapshot(data, ProjectionConfig())
    assert meta2 == meta
    assert restored.offset == 12345
    assert restored.clock.now == projection.clock.now
    assert restored.events_by_type == projection.events_by_type


def test_another_config_is_incompatible() -> None:
    data = encode_snapshot(Projection(ProjectionConfig()))
    for other in (
        ProjectionConfig(loop_prefix="agent"),
        ProjectionConfig(iteration_buckets=(1.0, 2.0)),
        ProjectionConfig(default_buckets=(1.0,)),
    ):
        with pytest.raises(SnapshotError, match="another projection config"):
            decode_snapshot(data, other)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a snapshot",
        msgspec.msgpack.encode({"meta": {"format": "zip"}}),
        msgspec.msgpack.encode([1, 2, 3]),
    ],
)
def test_garbage_is_a_snapshot_error(data: bytes) -> None:
    with pytest.raises(SnapshotError, match="not a tally snapshot"):
        decode_snapshot(data, ProjectionConfig())


def test_truncated_or_altered_snapshots_are_errors() -> None:
    data = encode_snapshot(fold_in_one_pass(list(workload())[:500], ProjectionConfig()))
    for cut in (1, len(data) // 3, len(data) - 1):
        with pytest.raises(SnapshotError):
            decode_snapshot(data[:cut], ProjectionConfig())
    doc = msgspec.msgpack.decode(data)
    doc["state"]["loops"]["loops"]["ralph-a"][3] = [
        1,
        2,
    ]  # duration bucket counts of the wrong length
    with pytest.raises(SnapshotError, match="corrupt snapshot"):
        decode_snapshot(msgspec.msgpack.encode(doc), ProjectionConfig())
    doc = msgspec.msgpack.decode(data)
    doc["state"]["events_by_type"]["no_such_type"] = 1
    with pytest.raises(SnapshotError, match="corrupt snapshot"):
        decode_snapshot(msgspec.msgpack.encode(doc), ProjectionConfig())
    doc = msgspec.msgpack.decode(data)
    doc["state"]["offset"] += 1
    with pytest.raises(SnapshotError, match="disagree"):
        decode_snapshot(msgspec.msgpack.encode(doc), ProjectionConfig())


def test_another_version_is_refused() -> None:
    doc = msgspec.msgpack.decode(encode_snapshot(Projection()))
    doc["meta"]["version"] = SNAPSHOT_VERSION + 1
    with pytest.raises(SnapshotError, match=f"version {SNAPSHOT_VERSION + 1} is not supported"):
        decode_snapshot(msgspec.msgpack.encode(doc), ProjectionConfig())


@pytest.mark.parametrize("version", [2, 3])
def test_a_snapshot_from_before_exemplars_or_stale_series_is_refused(version: int) -> None:
    """Version 2 held no exemplars, 3 no times series last changed: the server ignores such
    a snapshot (reported) and refolds the log."""
    assert SNAPSHOT_VERSION == 4
    doc = msgspec.msgpack.decode(encode_snapshot(fold_in_one_pass(list(workload()), TIGHT)))
    doc["meta"]["version"] = version
    with pytest.raises(SnapshotError, match=f"version {version} is not supported"):
        decode_snapshot(msgspec.msgpack.encode(doc), TIGHT)


def test_snapshot_error_is_a_tally_error() -> None:
    assert issubclass(SnapshotError, TallyError)
