"""The loop fold's cardinality guard: refused loops go to ``__overflow__``, counted per family."""

from __future__ import annotations

from bus.events import (
    ContextReboot,
    ContextUsage,
    Event,
    IterationCompleted,
    LoopStarted,
    ResourceSample,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily

P = "ralph_loop"
OVERFLOW = "__overflow__"


def it(loop_id: str, ts: float, score: float | None = None) -> IterationCompleted:
    return IterationCompleted(
        ts=ts, loop_id=loop_id, iteration=int(ts), duration_s=2.0, success=True,
        made_progress=score is not None, progress_score=score, files_changed=1,
    )  # fmt: skip


#: Events of loops refused by a limit of one loop (``A`` is admitted first), each with the
#: loop families it updates: the ``__overflow__`` loop's series, counted in the overflow total.
REFUSED: list[tuple[Event, tuple[str, ...]]] = [
    (LoopStarted(ts=2, loop_id="B"), ()),
    (it("B", 3), ("iterations_total", "iteration_duration_seconds",
                  "iterations_with_progress_total", "no_progress_streak", "files_changed_total")),
    (it("B", 4, score=0.5), ("iterations_total", "iteration_duration_seconds",
                             "iterations_with_progress_total", "no_progress_streak",
                             "progress_score", "progress_velocity", "files_changed_total")),
    (SessionStarted(ts=5, loop_id="B", session_id="s1"),
     ("sessions_created_total", "active_sessions")),
    (SessionEnded(ts=65, loop_id="B", session_id="s1"),  # its start was folded: 60 s
     ("active_sessions", "session_duration_seconds")),
    (SessionEnded(ts=66, loop_id="C", session_id="s9"),  # no start, no duration_s
     ("active_sessions",)),
    (SessionEnded(ts=67, loop_id="C", session_id="s8", duration_s=30.0),
     ("active_sessions", "session_duration_seconds")),
    (ContextUsage(ts=68, loop_id="C", percent=40.0), ("context_usage_ratio",)),
    (ContextReboot(ts=69, loop_id="C", percent=90.0),
     ("context_reboots_total", "context_at_reboot_ratio")),
    (TestsReported(ts=70, loop_id="D", passed=3, failed=1, total=4),
     ("tests", "flaky_tests", "test_pass_ratio", "test_failure_streak")),
    (ResourceSample(ts=71, loop_id="D", rss_bytes=1 << 20, cpu_percent=50.0),
     ("resident_memory_bytes", "cpu_usage_ratio")),
]  # fmt: skip


def fold(events: list[Event]) -> Projection:
    projection = Projection(ProjectionConfig(max_series_per_family=1))
    projection.fold_events([LoopStarted(ts=1, loop_id="A"), *events])
    return projection


def overflow_counts(projection: Projection) -> dict[str, float]:
    family = {f.name: f for f in projection.families()}["tally_series_overflow_total"]
    assert isinstance(family, CounterFamily)
    return {labels[0]: n for labels, n in family.values.items()}


def test_a_refused_loop_counts_every_family_each_event_updates() -> None:
    want: dict[str, float] = {}
    for _, suffixes in REFUSED:
        for suffix in suffixes:
            want[f"{P}_{suffix}"] = want.get(f"{P}_{suffix}", 0.0) + 1.0
    assert overflow_counts(fold([ev for ev, _ in REFUSED])) == want


def test_each_refused_event_alone_counts_what_it_updates() -> None:
    """Event by event (after those before it), the families counted are those updated."""
    for i, (_, suffixes) in enumerate(REFUSED):
        before = overflow_counts(fold([ev for ev, _ in REFUSED[:i]]))
        after = overflow_counts(fold([ev for ev, _ in REFUSED[: i + 1]]))
        grew = {name for name, n in after.items() if n != before.get(name, 0.0)}
        assert grew == {f"{P}_{suffix}" for suffix in suffixes}, REFUSED[i][0]


def test_every_counted_family_has_an_overflow_series() -> None:
    projection = fold([ev for ev, _ in REFUSED])
    families = {f.name: f for f in projection.families()}
    for name in overflow_counts(projection):
        family = families[name]
        if isinstance(family, HistogramFamily):
            keys = set(family.series)
        else:
            assert isinstance(family, CounterFamily | GaugeFamily)
            keys = set(family.values)
        assert any(labels[0] == OVERFLOW for labels in keys), name
    assert set(projection.rollups()) == {"A", OVERFLOW}
