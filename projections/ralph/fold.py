"""The loop fold: Ralph-loop events -> per-loop state, roll-ups and the ``P_*`` families.

Rule: no I/O, no wall clock: time is the event ``ts`` (``now`` = the fold's clock);
a loop's state changes only through the handlers here, in log order.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from itertools import compress, repeat
from typing import Any, Final

import msgspec

from bus.events import (
    ContextReboot,
    ContextUsage,
    EventBase,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    ResourceSample,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from projections import catalogue as cat
from projections.clock import EventClock, elapsed
from projections.config import ProjectionConfig
from projections.metrics.families import OVERFLOW, Family, OverflowCounts
from projections.metrics.state import FamilyState, family_from_state, family_to_state
from projections.metrics.summary import SummaryFamily
from projections.ralph.rollup import (
    ITERATION_BITS,
    REBOOT_BITS,
    RESOURCE_BITS,
    SCORE_BITS,
    SESSION_DURATION_BIT,
    SESSION_ENDED_BITS,
    SESSION_STARTED_BITS,
    TESTS_BITS,
    USAGE_BITS,
    LoopRollup,
    LoopState,
    LoopStateRecord,
    QuantilesRollup,
    loop_families,
    rollup,
)

__all__ = ["LoopFold", "LoopFoldState"]

Handler = Callable[[Any, float], None]

_SESSION_BOUNDS: Final = cat.SESSION_DURATION_BUCKETS
_REBOOT_BOUNDS: Final = cat.REBOOT_RATIO_BUCKETS
#: Iteration durations buffered (all loops) before the expired ones are dropped.
_PENDING_LIMIT: Final = 1 << 16
#: Iterations waiting in the loops' lists (all loops) before they are folded.
_SETTLE_EVERY: Final = 1 << 12
#: Loop families each loop event feeds (for overflow accounting of refused loops).
_FEEDS: Final[dict[type[EventBase], tuple[str, ...]]] = {
    LoopStarted: (),
    IterationCompleted: (
        "iterations_total",
        "iteration_duration_seconds",
        "iterations_with_progress_total",
        "no_progress_streak",
        "files_changed_total",
    ),
    SessionStarted: ("sessions_created_total", "active_sessions"),
    SessionEnded: ("active_sessions",),
    ContextUsage: ("context_usage_ratio",),
    ContextReboot: ("context_reboots_total", "context_at_reboot_ratio"),
    TestsReported: ("tests", "flaky_tests", "test_pass_ratio", "test_failure_streak"),
    ResourceSample: ("resident_memory_bytes", "cpu_usage_ratio"),
}


class LoopFoldState(msgspec.Struct, kw_only=True):
    """Everything a ``LoopFold`` holds, as records (part of a snapshot)."""

    loops: dict[str, LoopStateRecord]
    active_loops: list[str]
    iteration_sketch: FamilyState


class LoopFold:
    """Every loop's state. Loops past ``max_series_per_family`` share one ``__overflow__`` loop.

    ``iteration_completed`` is folded lazily, in two steps, because it is the
    commonest loop event and its fold is the dearest. The handler admits the
    loop (so loops are admitted in log order) and appends the event to the
    loop's ``iterations``; ``settle`` folds those lists a loop at a time, each in
    one loop over local variables (in log order within a loop, which is all a
    loop's state depends on), before anything reads or resets the state and
    whenever ``_SETTLE_EVERY`` iterations wait. Settling feeds
    the iteration-duration quantiles (roll-up only) a buffer that enters the
    sketch before anything reads it, which gives the same quantiles as observing
    them at once (an observation is only ever dropped once its age bucket has
    left the window for good).
    """

    def __init__(
        self,
        config: ProjectionConfig,
        specs: dict[str, cat.FamilySpec],
        clock: EventClock,
        overflow: OverflowCounts,
    ) -> None:
        self.config = config
        self.clock = clock
        self.overflow = overflow
        self._specs = specs
        self._max = config.max_series_per_family
        self._bounds = config.iteration_buckets
        self.loops: dict[str, LoopState] = {}
        self.active_loops: dict[str, None] = {}
        self.sketch = self._new_sketch()
        self._unsettled = 0  # iterations waiting in the loops' ``iterations`` lists
        #: Iterations not yet in the quantile sketch, as three parallel columns (loop_id,
        #: ts, duration): appending to lists allocates nothing the garbage collector tracks.
        self._pending_loops: list[str] = []
        self._pending_ts: list[float] = []
        self._pending_durations: list[float] = []
        self.handlers: dict[type[EventBase], Handler] = {
            LoopStarted: self.loop_started,
            LoopStopped: self.loop_stopped,
            IterationCompleted: self.iteration_completed,
            SessionStarted: self.session_started,
            SessionEnded: self.session_ended,
            ContextUsage: self.context_usage,
            ContextReboot: self.context_reboot,
            TestsReported: self.tests_reported,
            ResourceSample: self.resource_sample,
        }

    def _new_sketch(self) -> SummaryFamily:
        # Not rendered: it feeds the roll-up's iteration_duration_quantiles_s.
        return SummaryFamily(
            f"{self.config.loop_prefix}_iteration_duration_sketch",
            "Iteration duration sketch behind the roll-up quantiles.",
            ("loop",),
            clock=self.clock,
            window_s=self.config.summary_window_s,
            age_buckets=self.config.summary_age_buckets,
            max_series=self._max + 1,
        )

    # -- handlers ----------------------------------------------------------------

    def _loop(self, loop_id: str, cls: type[EventBase]) -> LoopState:
        """The state of a loop not seen yet: a new one, or the overflow loop past the limit."""
        loops = self.loops
        admitted = len(loops) - (OVERFLOW in loops)
        if admitted >= self._max:
            for suffix in _FEEDS[cls]:
                name = self._specs[suffix].name
                self.overflow[name] = self.overflow.get(name, 0.0) + 1.0
            loop_id = OVERFLOW
        state = loops.get(loop_id)
        if state is None:
            state = loops[loop_id] = LoopState(
                len(self._bounds), len(_SESSION_BOUNDS), len(_REBOOT_BOUNDS)
            )
        return state

    def loop_started(self, ev: LoopStarted, now: float) -> None:
        self.active_loops[ev.loop_id] = None
        if ev.loop_id not in self.loops:
            self._loop(ev.loop_id, LoopStarted)

    def loop_stopped(self, ev: LoopStopped, now: float) -> None:
        self.active_loops.pop(ev.loop_id, None)

    def iteration_completed(self, ev: IterationCompleted, now: float) -> None:
        s = self.loops.get(ev.loop_id) or self._loop(ev.loop_id, IterationCompleted)
        if ev.ts is None:  # it happened at the clock: keep that with it
            ev = msgspec.structs.replace(ev, ts=now)
        s.iterations.append(ev)
        self._unsettled += 1
        if self._unsettled >= _SETTLE_EVERY:
            self.clock.now = now
            self.settle()

    def settle(self) -> None:
        """Fold the iterations waiting in each loop's list into its state (see the class)."""
        if not self._unsettled:
            return
        self._unsettled = 0
        for loop_id, s in self.loops.items():
            if s.iterations:
                iterations, s.iterations = s.iterations, []
                self._settle(loop_id, s, iterations)
        if len(self._pending_loops) >= _PENDING_LIMIT:
            self._trim_pending()

    def _settle(self, loop_id: str, s: LoopState, iterations: list[IterationCompleted]) -> None:
        """What folding ``iterations`` one by one, in order, does to ``s`` (in local variables)."""
        bounds, counts = self._bounds, s.duration_counts
        ok = with_progress = files = 0
        total, streak, score = s.duration_sum, s.no_progress_streak, s.score
        scores: list[float] = []
        ts_column, durations = self._pending_ts, self._pending_durations
        for ev in iterations:
            if ev.success:
                ok += 1
            duration = ev.duration_s
            counts[bisect_left(bounds, duration)] += 1
            total += duration
            if ev.made_progress:
                with_progress += 1
                streak = 0
            else:
                streak += 1
            files += ev.files_changed
            if ev.progress_score is not None:
                score = ev.progress_score
                scores.append(score)
            ts_column.append(ev.ts)  # type: ignore[arg-type]  # stamped by the handler
            durations.append(duration)
        n = len(iterations)
        s.iterations_ok += ok
        s.iterations_failed += n - ok
        s.duration_sum = total
        s.with_progress += with_progress
        s.no_progress_streak = streak
        s.files_changed += files
        s.seen |= ITERATION_BITS
        if scores:
            s.score = score
            s.scores.extend(scores)
            s.seen |= SCORE_BITS
        self._pending_loops.extend(repeat(loop_id, n))

    def session_started(self, ev: SessionStarted, now: float) -> None:
        s = self.loops.get(ev.loop_id) or self._loop(ev.loop_id, SessionStarted)
        s.sessions_created += 1
        ts = ev.ts
        s.open_sessions[ev.session_id] = now if ts is None else ts
        s.seen |= SESSION_STARTED_BITS

    def session_ended(self, ev: SessionEnded, now: float) -> None:
        s = self.loops.get(ev.loop_id) or self._loop(ev.loop_id, SessionEnded)
        start = s.open_sessions.pop(ev.session_id, None)
        s.seen |= SESSION_ENDED_BITS
        duration = ev.duration_s
        if duration is None:
            duration = elapsed(start, ev.ts, now)
            if duration is None:
                return
        s.session_counts[bisect_left(_SESSION_BOUNDS, duration)] += 1
        s.session_sum += duration
        s.seen |= SESSION_DURATION_BIT

    def context_usage(self, ev: ContextUsage, now: float) -> None:
        s = self.loops.get(ev.loop_id) or self._loop(ev.loop_id, ContextUsage)
        s.context_percent = ev.percent
        s.seen |= USAGE_BITS

    def context_reboot(self, ev: ContextReboot, now: float) -> None:
        s = self.loops.get(ev.loop_id) or self._loop(ev.loop_id, ContextReboot)
        percent = ev.percent
        ratio = percent / 100.0
        s.reboots += 1
        s.reboot_counts[bisect_left(_REBOOT_BOUNDS, ratio)] += 1
        s.reboot_ratio_sum += ratio
        s.reboot_percent_sum += percent
        s.seen |= REBOOT_BITS

    def tests_reported(self, ev: TestsReported, now: float) -> None:
        s = self.loops.get(ev.loop_id) or self._loop(ev.loop_id, TestsReported)
        s.tests_passed = ev.passed
        s.tests_failed = failed = ev.failed
        s.tests_total = ev.total
        s.tests_flaky = ev.flaky
        s.test_failure_streak = s.test_failure_streak + 1 if failed else 0
        s.seen |= TESTS_BITS

    def resource_sample(self, ev: ResourceSample, now: float) -> None:
        s = self.loops.get(ev.loop_id) or self._loop(ev.loop_id, ResourceSample)
        s.rss_bytes = ev.rss_bytes
        s.cpu_percent = ev.cpu_percent
        s.seen |= RESOURCE_BITS

    def _trim_pending(self) -> None:
        """Drop buffered durations that left the sketch's window; drain if many are left."""
        sketch = self.sketch
        first, _ = sketch.window()
        horizon = (first - 1) * sketch.width  # older ones can never be read again
        keep = [ts >= horizon for ts in self._pending_ts]
        self._pending_loops = list(compress(self._pending_loops, keep))
        self._pending_ts = list(compress(self._pending_ts, keep))
        self._pending_durations = list(compress(self._pending_durations, keep))
        if len(self._pending_loops) >= _PENDING_LIMIT // 2:
            self.drain()

    def drain(self) -> None:
        """Observe every buffered iteration duration into the quantile sketch (in log order)."""
        observe = self.sketch.observe
        for loop_id, ts, duration in zip(
            self._pending_loops, self._pending_ts, self._pending_durations, strict=True
        ):
            observe((loop_id,), duration, ts)
        self._clear_pending()

    def _clear_pending(self) -> None:
        self._pending_loops, self._pending_ts, self._pending_durations = [], [], []

    # -- resets, reading, records -------------------------------------------------

    def reset(self, prefix: str) -> None:
        """Clear the loop families named ``prefix...`` and the roll-up state behind them."""
        matched = [s for s, spec in self._specs.items() if spec.name.startswith(prefix)]
        if not matched:
            return
        self.settle()  # iterations before the reset are folded before it clears them
        if len(matched) == len(self._specs):
            self.loops.clear()
            self.active_loops.clear()
            self.sketch = self._new_sketch()
            self._clear_pending()
            return
        for suffix in matched:
            if suffix == "active_loops":
                self.active_loops.clear()
                continue
            for s in self.loops.values():
                s.clear(suffix)
            if suffix == "iteration_duration_seconds":
                self.sketch = self._new_sketch()
                self._clear_pending()

    def refill(self, families: dict[str, Family]) -> None:
        """Refill the loop families (keyed by suffix) from the loop states."""
        self.settle()
        loop_families(families, self.loops, len(self.active_loops))

    def rollups(self) -> dict[str, LoopRollup]:
        """Every loop's roll-up (``__overflow__`` collects the loops past the series limit)."""
        self.settle()
        if self._pending_loops:
            self.drain()
        out: dict[str, LoopRollup] = {}
        for loop_id, s in self.loops.items():
            p50, p90, p99 = (
                None if math.isnan(q) else q for q in self.sketch.quantiles((loop_id,))
            )
            out[loop_id] = rollup(s, QuantilesRollup(p50=p50, p90=p90, p99=p99))
        return out

    def export_state(self) -> LoopFoldState:
        self.settle()
        if self._pending_loops:
            self.drain()
        return LoopFoldState(
            loops={loop_id: s.to_record() for loop_id, s in self.loops.items()},
            active_loops=list(self.active_loops),
            iteration_sketch=family_to_state(self.sketch),
        )

    def restore(self, state: LoopFoldState) -> None:
        """Take over ``state`` (into a fresh fold); ``ValueError`` if it does not fit the config."""
        sizes = (len(self._bounds), len(_SESSION_BOUNDS), len(_REBOOT_BOUNDS))
        for loop_id, record in state.loops.items():
            got = (
                len(record.duration_counts) - 1,
                len(record.session_counts) - 1,
                len(record.reboot_counts) - 1,
            )
            if got != sizes:
                raise ValueError(f"state: loop {loop_id!r} has bucket counts {got}, not {sizes}")
            self.loops[loop_id] = LoopState.from_record(record)
        self.active_loops = dict.fromkeys(state.active_loops)
        sketch = family_from_state(state.iteration_sketch, clock=self.clock)
        if not isinstance(sketch, SummaryFamily):
            raise ValueError("state: iteration_sketch is not a summary")
        self.sketch = sketch
