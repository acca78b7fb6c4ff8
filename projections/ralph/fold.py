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
from projections.exemplars import ExemplarRecorder
from projections.metrics.families import OVERFLOW, Exemplar, Family, OverflowCounts
from projections.metrics.state import FamilyState, family_from_state, family_to_state
from projections.metrics.summary import SummaryFamily
from projections.ralph.families import loop_families
from projections.ralph.rollup import LoopRollup, QuantilesRollup, rollup
from projections.ralph.state import BIT, LoopState, LoopStateRecord, fed_bits

__all__ = ["LoopFold", "LoopFoldState"]

Handler = Callable[[Any, float], None]

_SESSION_BOUNDS: Final = cat.SESSION_DURATION_BUCKETS
_REBOOT_BOUNDS: Final = cat.REBOOT_RATIO_BUCKETS
#: Iteration durations buffered (all loops) before the expired ones are dropped.
_PENDING_LIMIT: Final = 1 << 16
#: Iterations waiting in the loops' lists (all loops) before they are folded.
_SETTLE_EVERY: Final = 1 << 12
#: The family whose durations the roll-up's quantile sketch also holds (reset with it).
_SKETCHED: Final = "iteration_duration_seconds"
#: The presence bits each handler sets (``catalogue.LOOP``'s feeds).
_ITERATION: Final = fed_bits(IterationCompleted)
_SCORED: Final = fed_bits(IterationCompleted, "scored")
_SESSION_STARTED: Final = fed_bits(SessionStarted)
_SESSION_ENDED: Final = fed_bits(SessionEnded)
_SESSION_TIMED: Final = fed_bits(SessionEnded, "timed")
_USAGE: Final = fed_bits(ContextUsage)
_REBOOT: Final = fed_bits(ContextReboot)
_TESTS: Final = fed_bits(TestsReported)
_RESOURCES: Final = fed_bits(ResourceSample)


class LoopFoldState(msgspec.Struct, kw_only=True):
    """Everything a ``LoopFold`` holds, as records (part of a snapshot)."""

    loops: dict[str, LoopStateRecord]
    active_loops: list[str]
    iteration_sketch: FamilyState


class LoopFold:
    """Every loop's state. Loops past ``max_series_per_family`` share one ``__overflow__`` loop.

    A refused loop's event is folded as an event of the ``__overflow__`` loop and
    counted in the overflow counts once for each loop family it updated: the
    presence bits it set, which come from ``catalogue.LOOP`` as the handlers' do.

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
        exemplars: ExemplarRecorder | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.overflow = overflow
        self._specs = specs
        self._max = config.max_series_per_family
        self._families: dict[str, Family] = {
            suffix: cat.build_family(spec, max_series=self._max, overflow=overflow)
            for suffix, spec in specs.items()
        }
        #: (presence bit, family name) of every per-loop family, for overflow accounting.
        self._bit_names = tuple((BIT[suffix], specs[suffix].name) for suffix in BIT)
        self._bounds = config.iteration_buckets
        #: Where iterations note their exemplars, when the catalogue gives the family a label.
        self._exemplars = exemplars if specs[_SKETCHED].exemplar else None
        if self._exemplars is not None:
            self._exemplars.watch(self.exemplar_slots)
        #: The event types whose handlers record exemplars (the dispatch loop tells them where).
        self.indexed: tuple[type[EventBase], ...] = (
            (IterationCompleted,) if self._exemplars is not None else ()
        )
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

    # -- admitting loops ------------------------------------------------------------

    def _unseen(self, ev: Any, now: float, handler: Handler) -> None:
        """An event of a loop not seen yet: admit the loop and fold the event, or, past
        the limit, fold it into the ``__overflow__`` loop (``_refused``)."""
        loops = self.loops
        if len(loops) - (OVERFLOW in loops) < self._max:
            loops[ev.loop_id] = self._new_state()
            handler(ev, now)
        else:
            self._refused(ev, now, handler)

    def _refused(self, ev: Any, now: float, handler: Handler) -> None:
        """Fold ``ev`` as an event of the ``__overflow__`` loop, and count one overflow
        for each loop family it updated: those whose presence bit it set."""
        s = self.loops.get(OVERFLOW)
        if s is None:
            s = self.loops[OVERFLOW] = self._new_state()
        self.clock.now = now  # settling may trim the sketch's buffer, which reads the clock
        self._settle_loop(OVERFLOW, s)  # iterations waiting there are not this event's
        seen, s.seen = s.seen, 0
        handler(msgspec.structs.replace(ev, loop_id=OVERFLOW), now)
        self._settle_loop(OVERFLOW, s)  # an iteration is folded at once, to see its bits
        fed = s.seen
        s.seen = seen | fed
        overflow = self.overflow
        for bit, name in self._bit_names:
            if fed & bit:
                overflow[name] = overflow.get(name, 0.0) + 1.0

    def _new_state(self) -> LoopState:
        return LoopState(len(self._bounds), len(_SESSION_BOUNDS), len(_REBOOT_BOUNDS))

    # -- handlers ----------------------------------------------------------------

    def loop_started(self, ev: LoopStarted, now: float) -> None:
        self.active_loops[ev.loop_id] = None
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self._admitted)
            return
        s.last_ts = now

    def _admitted(self, ev: LoopStarted, now: float) -> None:
        """``loop_started`` of a loop just admitted (or refused): it updates no series."""
        self.loops[ev.loop_id].last_ts = now

    def loop_stopped(self, ev: LoopStopped, now: float) -> None:
        self.active_loops.pop(ev.loop_id, None)
        s = self.loops.get(ev.loop_id)
        if s is not None:
            s.last_ts = now

    def iteration_completed(self, ev: IterationCompleted, now: float) -> None:
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self.iteration_completed)
            return
        s.last_ts = now
        if ev.ts is None:  # it happened at the clock: keep that with it
            ev = msgspec.structs.replace(ev, ts=now)
        exemplars = self._exemplars
        if exemplars is not None:  # where it is, noted while its index is known
            base = exemplars.base
            s.codes.append(None if base is None else base - exemplars.cursor[0])
        s.iterations.append(ev)
        self._unsettled += 1
        if self._unsettled >= _SETTLE_EVERY:
            self.clock.now = now
            self.settle()

    def exemplar_slots(self) -> list[dict[int, Exemplar]]:
        """Every loop's iteration-duration exemplar slots (``ExemplarRecorder.watch``),
        the iterations waiting settled first (they write their exemplars then)."""
        self.settle()
        return [s.duration_exemplars for s in self.loops.values()]

    def settle(self) -> None:
        """Fold the iterations waiting in each loop's list into its state (see the class)."""
        if not self._unsettled:
            return
        self._unsettled = 0
        for loop_id, s in self.loops.items():
            if s.iterations:
                iterations, s.iterations = s.iterations, []
                codes, s.codes = s.codes, []
                self._settle(loop_id, s, iterations, codes)
        if len(self._pending_loops) >= _PENDING_LIMIT:
            self._trim_pending()

    def _settle_loop(self, loop_id: str, s: LoopState) -> None:
        """Fold the iterations waiting in one loop's list (``settle`` for one loop)."""
        if s.iterations:
            iterations, s.iterations = s.iterations, []
            codes, s.codes = s.codes, []
            self._unsettled -= len(iterations)
            self._settle(loop_id, s, iterations, codes)
            if len(self._pending_loops) >= _PENDING_LIMIT:
                self._trim_pending()

    def _settle(
        self,
        loop_id: str,
        s: LoopState,
        iterations: list[IterationCompleted],
        codes: list[int | None],
    ) -> None:
        """What folding ``iterations`` one by one, in order, does to ``s`` (in local variables).

        ``codes`` (empty without exemplars) says where each iteration is in the log
        (``ExemplarRecorder.base``): the latest of each bucket becomes its exemplar.
        """
        bounds, counts = self._bounds, s.duration_counts
        ok = with_progress = files = 0
        total, streak, score = s.duration_sum, s.no_progress_streak, s.score
        scores: list[float] = []
        ts_column, durations = self._pending_ts, self._pending_durations
        latest: dict[int, int] = {}  # bucket -> the index of its latest iteration
        for k, ev in enumerate(iterations):
            if ev.success:
                ok += 1
            duration = ev.duration_s
            bucket = bisect_left(bounds, duration)
            counts[bucket] += 1
            latest[bucket] = k
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
        s.seen |= _ITERATION
        if scores:
            s.score = score
            s.scores.extend(scores)
            s.seen |= _SCORED
        self._pending_loops.extend(repeat(loop_id, n))
        if codes:
            slots = s.duration_exemplars
            for bucket, k in latest.items():
                code = codes[k]
                if code is not None:  # None: folded without positions, not recorded
                    ev = iterations[k]
                    slots[bucket] = Exemplar(ev.loop_id, ev.duration_s, ev.ts, code)  # type: ignore[arg-type]

    def session_started(self, ev: SessionStarted, now: float) -> None:
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self.session_started)
            return
        s.last_ts = now
        s.sessions_created += 1
        ts = ev.ts
        s.open_sessions[ev.session_id] = now if ts is None else ts
        s.seen |= _SESSION_STARTED

    def session_ended(self, ev: SessionEnded, now: float) -> None:
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self.session_ended)
            return
        s.last_ts = now
        start = s.open_sessions.pop(ev.session_id, None)
        s.seen |= _SESSION_ENDED
        duration = ev.duration_s
        if duration is None:
            duration = elapsed(start, ev.ts, now)
            if duration is None:
                return
        s.session_counts[bisect_left(_SESSION_BOUNDS, duration)] += 1
        s.session_sum += duration
        s.seen |= _SESSION_TIMED

    def context_usage(self, ev: ContextUsage, now: float) -> None:
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self.context_usage)
            return
        s.last_ts = now
        s.context_percent = ev.percent
        s.seen |= _USAGE

    def context_reboot(self, ev: ContextReboot, now: float) -> None:
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self.context_reboot)
            return
        s.last_ts = now
        percent = ev.percent
        ratio = percent / 100.0
        s.reboots += 1
        s.reboot_counts[bisect_left(_REBOOT_BOUNDS, ratio)] += 1
        s.reboot_ratio_sum += ratio
        s.reboot_percent_sum += percent
        s.seen |= _REBOOT

    def tests_reported(self, ev: TestsReported, now: float) -> None:
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self.tests_reported)
            return
        s.last_ts = now
        s.tests_passed = ev.passed
        s.tests_failed = failed = ev.failed
        s.tests_total = ev.total
        s.tests_flaky = ev.flaky
        s.test_failure_streak = s.test_failure_streak + 1 if failed else 0
        s.seen |= _TESTS

    def resource_sample(self, ev: ResourceSample, now: float) -> None:
        s = self.loops.get(ev.loop_id)
        if s is None:
            self._unseen(ev, now, self.resource_sample)
            return
        s.last_ts = now
        s.rss_bytes = ev.rss_bytes
        s.cpu_percent = ev.cpu_percent
        s.seen |= _RESOURCES

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
            if suffix in BIT:
                for s in self.loops.values():
                    s.clear(suffix)
            else:  # a family of the whole fold (active_loops)
                self.active_loops.clear()
            if suffix == _SKETCHED:  # the quantile sketch holds the same durations
                self.sketch = self._new_sketch()
                self._clear_pending()

    def quiet(self, cutoff: float) -> set[str]:
        """Loops not running (stopped, or never seen starting) whose last event came before
        ``cutoff``: their series are hidden (``series_ttl_s``) or freed (``forget_after_s``)."""
        active = self.active_loops
        return {
            loop_id
            for loop_id, s in self.loops.items()
            if s.last_ts < cutoff and loop_id not in active
        }

    def forget(self, cutoff: float) -> None:
        """Free the state of every loop ``quiet`` before ``cutoff`` (roll-up included)."""
        gone = self.quiet(cutoff)
        if not gone:
            return
        self.settle()
        if self._pending_loops:
            self.drain()
        sketch = self.sketch
        for loop_id in gone:
            del self.loops[loop_id]
            sketch.series.pop((loop_id,), None)

    def families(self) -> list[Family]:
        """The loop families, refilled from the loop states."""
        self.settle()
        loop_families(self._families, self.loops, len(self.active_loops))
        return list(self._families.values())

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
