"""The loop families a loop's events make appear are those the table says they update."""

from __future__ import annotations

import pytest

from bus.events import (
    ContextReboot,
    ContextUsage,
    Event,
    IterationCompleted,
    LoopStarted,
    MetricsReset,
    ResourceSample,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from projections.catalogue import PER_LOOP, When
from projections.fold import Projection
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.summary import AnyFamily

P = "ralph_loop"


def iteration(ts: float, score: float | None = None) -> IterationCompleted:
    return IterationCompleted(
        ts=ts, loop_id="L", iteration=1, duration_s=1.5, success=True,
        made_progress=score is not None, progress_score=score, files_changed=2,
    )  # fmt: skip


#: One event of loop ``L`` (nothing before it), and the conditions it meets.
CASES: list[tuple[Event, tuple[When, ...]]] = [
    (iteration(1), ()),
    (iteration(1, score=0.5), ("scored",)),
    (SessionStarted(ts=1, loop_id="L", session_id="s"), ()),
    (SessionEnded(ts=1, loop_id="L", session_id="s"), ()),
    (SessionEnded(ts=1, loop_id="L", session_id="s", duration_s=5.0), ("timed",)),
    (ContextUsage(ts=1, loop_id="L", percent=30.0), ()),
    (ContextReboot(ts=1, loop_id="L", percent=80.0), ()),
    (TestsReported(ts=1, loop_id="L", passed=3, failed=1, total=4), ()),
    (ResourceSample(ts=1, loop_id="L", rss_bytes=1024, cpu_percent=20.0), ()),
    (LoopStarted(ts=1, loop_id="L"), ()),
]


def loop_series(family: AnyFamily, loop_id: str) -> dict[tuple[str, ...], object]:
    if isinstance(family, HistogramFamily):
        series: dict[tuple[str, ...], object] = {
            labels: (s.counts, s.sum) for labels, s in family.series.items()
        }
    else:
        assert isinstance(family, CounterFamily | GaugeFamily)
        series = dict(family.values)
    return {labels: v for labels, v in series.items() if labels[0] == loop_id}


def with_series(events: list[Event], loop_id: str = "L") -> set[str]:
    projection = Projection()
    projection.fold_events(events)
    families = {f.name: f for f in projection.families()}
    return {row.suffix for row in PER_LOOP if loop_series(families[f"{P}_{row.suffix}"], loop_id)}


@pytest.mark.parametrize(("event", "met"), CASES, ids=lambda c: type(c).__name__)
def test_an_event_makes_appear_the_families_it_feeds(event: Event, met: tuple[When, ...]) -> None:
    want = {
        row.suffix
        for row in PER_LOOP
        for feed in row.feeds
        if type(event) is feed.event and feed.when in ("always", *met)
    }
    assert with_series([event]) == want


def rich_loop() -> list[Event]:
    return [event for event, _ in CASES] + [
        SessionStarted(ts=2, loop_id="L", session_id="open"),
        iteration(3, score=0.25),
    ]


@pytest.mark.parametrize("suffix", [row.suffix for row in PER_LOOP])
def test_a_reset_clears_one_loop_family_and_leaves_the_others(suffix: str) -> None:
    """``test_pass_ratio`` reads the report that ``tests`` holds: it goes with it."""
    before = Projection()
    before.fold_events(rich_loop())
    after = Projection()
    after.fold_events([*rich_loop(), MetricsReset(ts=4, prefix=f"{P}_{suffix}")])
    old = {f.name: f for f in before.families()}
    new = {f.name: f for f in after.families()}
    assert loop_series(new[f"{P}_{suffix}"], "L") == {}
    gone_with = {"tests": {"test_pass_ratio"}}.get(suffix, set())
    for row in PER_LOOP:
        name = f"{P}_{row.suffix}"
        if row.suffix != suffix and row.suffix not in gone_with:
            assert loop_series(new[name], "L") == loop_series(old[name], "L"), row.suffix
