"""Per-loop roll-ups: every field from events, exact where exact, null where undefined."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from bus.events import (
    ContextReboot,
    ContextUsage,
    Event,
    IterationCompleted,
    LoopStarted,
    MetricsReset,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from projections.config import ProjectionConfig
from projections.exposition.jsonformat import render_json
from projections.fold import Projection
from projections.ralph.rollup import LoopRollup

FIELDS = {
    "total_iterations",
    "successful_iterations",
    "failed_iterations",
    "total_reboots",
    "total_execution_time_s",
    "avg_iteration_duration_s",
    "context_usage_percent",
    "tests",
    "progress",
    "session",
    "iteration_duration_quantiles_s",
}


class Near:
    """Equal to a sketch's estimate of quantile ``q`` of ``values`` (rank rounded either way)."""

    def __init__(self, values: list[float], q: float) -> None:
        ordered = sorted(values)
        rank = q * (len(ordered) - 1)
        self.candidates = {ordered[math.floor(rank)], ordered[math.ceil(rank)]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and any(
            other == pytest.approx(c, rel=0.0101) for c in self.candidates
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Near({sorted(self.candidates)})"


def it(ts: float, duration: float, *, ok: bool = True, progress: float | None = None) -> Event:
    return IterationCompleted(
        ts=ts,
        loop_id="L",
        iteration=int(ts),
        duration_s=duration,
        success=ok,
        made_progress=progress is not None and progress > 0,
        progress_score=progress,
        files_changed=2 if progress else 0,
    )


def rollups(events: list[Event], config: ProjectionConfig | None = None) -> dict[str, LoopRollup]:
    projection = Projection(config)
    projection.fold_events(events)
    return projection.rollups()


def test_every_field_is_computed_from_events() -> None:
    events: list[Event] = [
        LoopStarted(ts=0, loop_id="L"),
        SessionStarted(ts=0, loop_id="L", session_id="s1"),
        it(1, 2.0, progress=0.5),
        it(2, 4.0, ok=False),
        it(3, 6.0, ok=False),
        it(4, 8.0, progress=0.7),
        it(5, 10.0),
        ContextUsage(ts=6, loop_id="L", percent=81.5),
        ContextReboot(ts=7, loop_id="L", session_id="s1", percent=90.0),
        SessionEnded(ts=100, loop_id="L", session_id="s1"),  # 100 s from its start
        SessionStarted(ts=100, loop_id="L", session_id="s2"),
        ContextReboot(ts=150, loop_id="L", session_id="s2", percent=80.0),
        SessionEnded(ts=160, loop_id="L", session_id="s2", duration_s=50.0),
        SessionStarted(ts=170, loop_id="L", session_id="s3"),
        TestsReported(ts=180, loop_id="L", passed=8, failed=2, total=10, flaky=1),
        TestsReported(ts=181, loop_id="L", passed=7, failed=3, total=11, flaky=2),
    ]
    loop = rollups(events)["L"]
    assert msgspec.to_builtins(loop) == {
        "total_iterations": 5,
        "successful_iterations": 3,
        "failed_iterations": 2,
        "total_reboots": 2,
        "total_execution_time_s": 30.0,
        "avg_iteration_duration_s": 6.0,
        "context_usage_percent": 81.5,
        "tests": {
            "total_tests": 11,
            "passing_tests": 7,
            "failing_tests": 3,
            "pass_rate": 7 / 11,
            "failure_streak": 2,
            "flaky_tests": 2,
        },
        "progress": {
            "iterations_with_progress": 2,
            "progress_rate": 0.4,
            "no_progress_streak": 1,
            "velocity": 0.6,
            "files_changed": 4,
        },
        "session": {
            "sessions_created": 3,
            "active_sessions": 1,
            "avg_session_duration_s": 75.0,
            "context_reboots": 2,
            "avg_context_at_reboot": 85.0,
        },
        "iteration_duration_quantiles_s": {
            "p50": pytest.approx(6.0, rel=0.01),
            "p90": Near([2.0, 4.0, 6.0, 8.0, 10.0], 0.9),
            "p99": Near([2.0, 4.0, 6.0, 8.0, 10.0], 0.99),
        },
    }
    assert set(msgspec.structs.asdict(loop)) == FIELDS


def test_undefined_values_are_null_not_nan() -> None:
    projection = Projection()
    projection.fold_events(
        [
            LoopStarted(ts=1, loop_id="idle"),
            TestsReported(ts=2, loop_id="t", passed=0, failed=0, total=0),
        ]
    )
    doc = json.loads(render_json(projection.families(), loops=projection.loops()))
    idle = doc["loops"]["idle"]
    assert idle["avg_iteration_duration_s"] is None
    assert idle["context_usage_percent"] is None
    assert idle["progress"]["progress_rate"] is None
    assert idle["progress"]["velocity"] is None
    assert idle["session"]["avg_session_duration_s"] is None
    assert idle["session"]["avg_context_at_reboot"] is None
    assert idle["iteration_duration_quantiles_s"] == {"p50": None, "p90": None, "p99": None}
    assert doc["loops"]["t"]["tests"]["pass_rate"] is None
    assert "NaN" not in json.dumps(doc["loops"])


def test_velocity_is_the_mean_of_the_last_ten_scores() -> None:
    events = [it(i, 1.0, progress=float(i)) for i in range(1, 16)]
    events.insert(5, it(5.5, 1.0))  # no score: not counted
    loop = rollups(events)["L"]
    assert loop.progress.velocity == pytest.approx(sum(range(6, 16)) / 10)
    assert loop.progress.no_progress_streak == 0


def test_quantiles_cover_the_summary_window_in_event_time() -> None:
    config = ProjectionConfig(summary_window_s=100, summary_age_buckets=4)
    old = [it(t, 1000.0) for t in range(0, 50)]
    new = [it(t, float(t)) for t in range(500, 600)]
    loop = rollups([*old, *new], config)["L"]
    q = loop.iteration_duration_quantiles_s
    assert q.p50 is not None and q.p99 is not None
    assert 500 < q.p50 < 600 and q.p99 < 605  # the old iterations left the window
    assert loop.total_iterations == 150  # counts are all-time


def test_many_buffered_iterations_give_the_same_quantiles() -> None:
    events = [it(i * 0.001, float(i % 97)) for i in range(140_000)]  # all in one window
    projection = Projection()
    projection.fold_events(events)
    q = projection.rollups()["L"].iteration_duration_quantiles_s
    values = [float(i % 97) for i in range(140_000)]
    for got, p in ((q.p50, 0.5), (q.p90, 0.9), (q.p99, 0.99)):
        assert got == Near(values, p)


def test_reset_clears_the_roll_up_with_its_families() -> None:
    events: list[Event] = [
        it(1, 2.0, progress=0.5),
        ContextReboot(ts=2, loop_id="L", percent=90.0),
        MetricsReset(ts=3, prefix="ralph_loop_context"),
        it(4, 3.0),
    ]
    loop = rollups(events)["L"]
    assert loop.total_iterations == 2
    assert loop.total_reboots == 0
    assert loop.session.context_reboots == 0
    assert loop.session.avg_context_at_reboot is None
    assert loop.progress.velocity == 0.5
