"""The conductor fold: its record inside the snapshot's, and resets by family name."""

from __future__ import annotations

import msgspec
import pytest

from bus.events import (
    AgentFallback,
    ApiRequest,
    BusMessage,
    Event,
    MetricsReset,
    RunFinished,
    RunQueued,
    RunStarted,
)
from projections.catalogue import CONDUCTOR_NAMES
from projections.conductor import ConductorState
from projections.fold import Projection, ProjectionState
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.summary import AnyFamily


def fields(cls: type[msgspec.Struct]) -> list[tuple[str, object]]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return [(f.name, f.type) for f in info.fields]


def test_the_snapshot_record_carries_the_conductor_record_field_by_field() -> None:
    """``ProjectionState`` is the format snapshots were always written in."""
    names = [name for name, _ in fields(ProjectionState)]
    assert names == [
        "offset",
        "clock",
        "events_by_type",
        "corrupt_lines",
        "unknown_events",
        "unknown_types",
        "rejected",
        "overflow",
        "queued",
        "active",
        "completed",
        "failed",
        "bus_messages",
        "api_requests",
        "agent_runs",
        "fallbacks",
        "run_durations",
        "agent_runs_touched",
        "fallbacks_touched",
        "api_requests_touched",
        "loops",
        "custom",
        "otel",
        "rules",
    ]
    conductor = fields(ConductorState)
    start = names.index(conductor[0][0])
    assert fields(ProjectionState)[start : start + len(conductor)] == conductor


def traffic() -> list[Event]:
    return [
        RunQueued(ts=1, run_id="q", project="p"),
        RunQueued(ts=1, run_id="r", project="p"),
        RunStarted(ts=2, run_id="r", project="p", agent="claude"),
        RunStarted(ts=2, run_id="s", project="p", agent="codex"),
        RunFinished(ts=9, run_id="s", project="p", agent="codex", status="failed"),
        RunStarted(ts=3, run_id="t", project="p"),
        RunFinished(ts=8, run_id="t", project="p", status="completed", duration_s=5.0),
        BusMessage(ts=4, project="p", msg_type="FACT"),
        ApiRequest(ts=5, method="GET", status=200),
        AgentFallback(ts=6, from_type="claude", to_type="codex"),
    ]


def series(family: AnyFamily) -> object:
    if isinstance(family, HistogramFamily):
        return {labels: (s.counts, s.sum) for labels, s in family.series.items()}
    assert isinstance(family, CounterFamily | GaugeFamily)
    return dict(family.values)


def conductor_series(events: list[Event]) -> dict[str, object]:
    projection = Projection()
    projection.fold_events(events)
    return {f.name: series(f) for f in projection.families() if f.name in CONDUCTOR_NAMES}


@pytest.mark.parametrize("name", CONDUCTOR_NAMES)
def test_a_reset_clears_one_conductor_family_and_leaves_the_others(name: str) -> None:
    before = conductor_series(traffic())
    after = conductor_series([*traffic(), MetricsReset(ts=10, prefix=name)])
    assert after[name] != before[name]
    assert after[name] in ({}, {(): 0.0})
    assert {k: v for k, v in after.items() if k != name} == {
        k: v for k, v in before.items() if k != name
    }


def test_export_and_restore_keep_every_conductor_family() -> None:
    projection = Projection()
    projection.fold_events(traffic())
    restored = Projection.from_state(projection.export_state(), projection.config)
    more = [
        ApiRequest(ts=11, method="GET", status=200),
        BusMessage(ts=12, project="p", msg_type="X"),
    ]
    projection.fold_events(more)
    restored.fold_events(more)  # the dispatch loop bumps the restored api dict in place
    want = {f.name: series(f) for f in projection.families() if f.name in CONDUCTOR_NAMES}
    got = {f.name: series(f) for f in restored.families() if f.name in CONDUCTOR_NAMES}
    assert got == want
