"""The fold: events in log order -> the whole metric state (``Projection``).

Rule: no I/O, no wall clock, no randomness. Time is the ``EventClock`` (the max
event ``ts`` folded); the same events in the same order give the same state,
however they are batched or snapshotted in between.

Semantics where DESIGN.md is silent (what a production user expects):

* Runs: active = started and not finished, queued = queued and not started or
  finished; both gauges are set sizes, so a log that starts mid-run (a finish
  without a start) never drives them negative. A run's duration is
  ``run_finished.duration_s``, else ``ts`` minus its start ``ts`` when the start
  was folded, else it is not observed. An empty ``agent`` is ``"unknown"``.
* Loops: see ``rollup``; a session's duration is ``session_ended.duration_s``,
  else ``ts`` minus its start ``ts`` when known. ``P_test_pass_ratio`` is absent
  while the last report had ``total == 0`` (the roll-up's ``pass_rate`` is null).
  Iteration-duration quantiles (roll-up only) are folded lazily: observations
  wait in a per-loop buffer and enter the sketch before they are read, which
  gives the same quantiles as observing them at once.
* ``metric`` events: the first event fixes a family's kind, label names (its
  sorted label keys) and, if given, help; events that disagree, or name a
  catalogue family (``conductor_*``, ``P_*``, ``tally_*``), are counted in
  ``tally_rejected_events_total{reason}`` and not applied.
* ``metrics_reset(prefix)`` clears every family whose name starts with
  ``prefix`` ("" = all) except ``tally_*`` self-metrics, which are never reset.
  Unlabelled series go back to 0; labelled series disappear; the roll-up state
  behind a family is cleared with it. ``metric`` families keep their kind.
* Cardinality: every family shares one overflow dict and the limit
  ``max_series_per_family``; loops beyond the limit are folded into one
  ``__overflow__`` loop, counted once per family each refused event feeds.
* Events with ``ts`` None (external writers) happen at ``clock.now``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec

from bus.events import (
    EVENT_TYPES,
    AgentFallback,
    ApiRequest,
    BusMessage,
    ContextReboot,
    ContextUsage,
    Event,
    EventBase,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    MetricsReset,
    MetricUpdate,
    ResourceSample,
    RunFinished,
    RunQueued,
    RunStarted,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from bus.reader import Batch
from projections import catalogue as cat
from projections.config import ProjectionConfig
from projections.families import (
    OVERFLOW,
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    HistogramSeries,
    MetricNameError,
    OverflowCounts,
)
from projections.rollup import (
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
from projections.state import FamilyState, family_from_state, family_to_state
from projections.summary import AnyFamily, EventClock, SummaryFamily

__all__ = ["Projection", "ProjectionState"]

_INF: Final = math.inf
_TAG: Final[dict[type[EventBase], str]] = {cls: tag for tag, cls in EVENT_TYPES.items()}
_SESSION_BOUNDS: Final = cat.SESSION_DURATION_BUCKETS
_REBOOT_BOUNDS: Final = cat.REBOOT_RATIO_BUCKETS
#: Iteration durations buffered (all loops) before the expired ones are dropped.
_PENDING_LIMIT: Final = 1 << 16
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

Handler = Callable[[Any, float], None]


class ProjectionState(msgspec.Struct, kw_only=True):
    """Everything a ``Projection`` holds, as plain records (see ``snapshot``)."""

    offset: int
    clock: float
    events_by_type: dict[str, int]
    corrupt_lines: int
    unknown_events: int
    unknown_types: dict[str, int]
    rejected: dict[str, int]
    overflow: dict[str, float]
    queued: list[str]
    active: dict[str, float]
    completed: int
    failed: int
    bus_messages: int
    api_requests: list[tuple[str, int, int]]
    agent_runs: dict[str, int]
    fallbacks: list[tuple[str, str, int]]
    run_durations: FamilyState
    loops: dict[str, LoopStateRecord]
    active_loops: list[str]
    iteration_sketch: FamilyState
    custom: list[FamilyState]


class Projection:
    """The whole folded state: catalogue families, loop roll-ups, ``metric`` families, self-metrics.

    ``families()`` returns family objects owned by the projection: read them
    (render) before folding more.
    """

    def __init__(self, config: ProjectionConfig | None = None) -> None:
        self.config = config = config if config is not None else ProjectionConfig()
        self.catalogue = cat.Catalogue(config)
        self.clock = EventClock()
        self.offset = 0
        self.overflow: OverflowCounts = {}
        self.corrupt_lines = 0
        self.unknown_events = 0
        self.unknown_types: dict[str, int] = {}
        self.rejected: dict[str, int] = dict.fromkeys(cat.REJECT_REASONS, 0)
        self._max = config.max_series_per_family
        self._by_class: dict[type[EventBase], int] = dict.fromkeys(_TAG, 0)
        # conductor
        self._queued: dict[str, None] = {}
        self._active: dict[str, float] = {}  # run_id -> start ts
        self._completed = 0
        self._failed = 0
        self._bus_messages = 0
        self._api: dict[tuple[str, int], int] = {}
        self._agent_runs: dict[str, int] = {}
        self._fallbacks: dict[tuple[str, str], int] = {}
        self._run_durations = self._build(cat.RUN_DURATION)
        # loops
        self._loops: dict[str, LoopState] = {}
        self._active_loops: dict[str, None] = {}
        self._iteration_bounds = config.iteration_buckets
        self._iteration_sketch = self._new_sketch()
        #: (loop_id, ts, duration) of iterations not yet in the quantile sketch.
        self._pending: list[tuple[str, float, float]] = []
        # metric events
        self._custom: dict[str, AnyFamily] = {}
        # families rendered from the state above, refilled by families()
        self._rendered: dict[str, Family] = {
            spec.name: cat.build_family(spec, max_series=self._max, overflow=self.overflow)
            for spec in (*cat.CONDUCTOR, *self.catalogue.loop.values(), *cat.SELF)
            if spec.name != cat.RUN_DURATION
        }
        self._handlers: dict[type[EventBase], Handler] = {
            RunQueued: self._run_queued,
            RunStarted: self._run_started,
            RunFinished: self._run_finished,
            BusMessage: self._bus_message,
            ApiRequest: self._api_request,
            AgentFallback: self._agent_fallback,
            LoopStarted: self._loop_started,
            LoopStopped: self._loop_stopped,
            IterationCompleted: self._iteration_completed,
            SessionStarted: self._session_started,
            SessionEnded: self._session_ended,
            ContextUsage: self._context_usage,
            ContextReboot: self._context_reboot,
            TestsReported: self._tests_reported,
            ResourceSample: self._resource_sample,
            MetricUpdate: self._metric,
            MetricsReset: self._metrics_reset,
        }

    def _build(self, name: str) -> HistogramFamily:
        family = cat.build_family(
            self.catalogue.by_name[name], max_series=self._max, overflow=self.overflow
        )
        assert isinstance(family, HistogramFamily)
        return family

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

    # -- folding ---------------------------------------------------------------

    @property
    def events_by_type(self) -> dict[str, int]:
        """Events folded so far, by event type (every type, 0 included)."""
        return {_TAG[cls]: n for cls, n in self._by_class.items()}

    def fold_batch(self, batch: Batch, events: list[Event] | None = None) -> None:
        """Fold a reader batch (events, corrupt and unknown counts); ``offset`` moves to its end.

        ``events``, if given, is folded instead of ``batch.events`` (a filtered subset).
        """
        self.fold_events(batch.events if events is None else events)
        if batch.corrupt:
            self.corrupt_lines += batch.corrupt
        if batch.unknown:
            self.unknown_events += batch.unknown
            for tag, n in batch.unknown_types.items():
                self.unknown_types[tag] = self.unknown_types.get(tag, 0) + n
        self.offset = batch.end

    def fold_events(self, events: Iterable[Event]) -> None:
        """Fold events in order (``offset`` is left alone)."""
        if not isinstance(events, list):
            events = list(events)
        handlers = self._handlers
        now = self.clock.now
        for ev in events:  # the hot loop: handlers that read the clock set it from ``now``
            ts = ev.ts
            if ts is not None and ts > now and ts < _INF:
                now = ts
            handlers[type(ev)](ev, now)
        self.clock.now = now
        by_class = self._by_class
        for cls, n in Counter(map(type, events)).items():
            by_class[cls] += n

    # -- conductor ---------------------------------------------------------------

    def _run_queued(self, ev: RunQueued, now: float) -> None:
        if ev.run_id not in self._active:
            self._queued[ev.run_id] = None

    def _run_started(self, ev: RunStarted, now: float) -> None:
        run_id = ev.run_id
        self._queued.pop(run_id, None)
        ts = ev.ts
        self._active[run_id] = now if ts is None else ts
        agent = ev.agent or "unknown"
        runs = self._agent_runs
        n = runs.get(agent)
        if n is None:
            agent = self._admit(cat.AGENT_RUNS, runs, agent, OVERFLOW)
            n = runs.get(agent, 0)
        runs[agent] = n + 1

    def _run_finished(self, ev: RunFinished, now: float) -> None:
        run_id = ev.run_id
        self._queued.pop(run_id, None)
        start = self._active.pop(run_id, None)
        status = ev.status
        if status == "completed":
            self._completed += 1
        else:
            self._failed += 1
        duration = ev.duration_s
        if duration is None:
            if start is None:
                return
            ts = ev.ts
            duration = max(0.0, (now if ts is None else ts) - start)
        family = self._run_durations
        labels = (ev.agent or "unknown", status)
        series = family.series.get(labels)
        if series is None:
            family.observe(labels, duration)
        else:
            series.counts[bisect_left(family.bounds, duration)] += 1
            series.sum += duration
            series.count += 1

    def _bus_message(self, ev: BusMessage, now: float) -> None:
        self._bus_messages += 1

    def _api_request(self, ev: ApiRequest, now: float) -> None:
        api = self._api
        key = (ev.method, ev.status)
        n = api.get(key)
        if n is None:
            key = self._admit(cat.API_REQUESTS, api, key, (OVERFLOW, 0))
            n = api.get(key, 0)
        api[key] = n + 1

    def _agent_fallback(self, ev: AgentFallback, now: float) -> None:
        fallbacks = self._fallbacks
        key = (ev.from_type, ev.to_type)
        n = fallbacks.get(key)
        if n is None:
            key = self._admit(cat.AGENT_FALLBACKS, fallbacks, key, (OVERFLOW, OVERFLOW))
            n = fallbacks.get(key, 0)
        fallbacks[key] = n + 1

    def _admit(self, family: str, series: dict[Any, int], key: Any, overflow_key: Any) -> Any:
        """``key`` for a series not yet in ``series``, or the overflow key past the limit."""
        if len(series) < self._max:
            return key
        self.overflow[family] = self.overflow.get(family, 0.0) + 1.0
        return overflow_key

    # -- loops -------------------------------------------------------------------

    def _loop(self, loop_id: str, cls: type[EventBase]) -> LoopState:
        """The state of a loop not seen yet: a new one, or the overflow loop past the limit."""
        loops = self._loops
        admitted = len(loops) - (OVERFLOW in loops)
        if admitted >= self._max:
            for suffix in _FEEDS[cls]:
                name = self.catalogue.loop[suffix].name
                self.overflow[name] = self.overflow.get(name, 0.0) + 1.0
            loop_id = OVERFLOW
        state = loops.get(loop_id)
        if state is None:
            state = loops[loop_id] = LoopState(
                len(self._iteration_bounds), len(_SESSION_BOUNDS), len(_REBOOT_BOUNDS)
            )
        return state

    def _loop_started(self, ev: LoopStarted, now: float) -> None:
        self._active_loops[ev.loop_id] = None
        if ev.loop_id not in self._loops:
            self._loop(ev.loop_id, LoopStarted)

    def _loop_stopped(self, ev: LoopStopped, now: float) -> None:
        self._active_loops.pop(ev.loop_id, None)

    def _iteration_completed(self, ev: IterationCompleted, now: float) -> None:
        s = self._loops.get(ev.loop_id) or self._loop(ev.loop_id, IterationCompleted)
        if ev.success:
            s.iterations_ok += 1
        else:
            s.iterations_failed += 1
        duration = ev.duration_s
        s.duration_counts[bisect_left(self._iteration_bounds, duration)] += 1
        s.duration_sum += duration
        if ev.made_progress:
            s.with_progress += 1
            s.no_progress_streak = 0
        else:
            s.no_progress_streak += 1
        s.files_changed += ev.files_changed
        score = ev.progress_score
        if score is None:
            s.seen |= ITERATION_BITS
        else:
            s.score = score
            s.scores.append(score)
            s.seen |= ITERATION_BITS | SCORE_BITS
        ts = ev.ts
        pending = self._pending
        pending.append((ev.loop_id, now if ts is None else ts, duration))
        if len(pending) >= _PENDING_LIMIT:
            self.clock.now = now
            self._trim_pending()

    def _session_started(self, ev: SessionStarted, now: float) -> None:
        s = self._loops.get(ev.loop_id) or self._loop(ev.loop_id, SessionStarted)
        s.sessions_created += 1
        ts = ev.ts
        s.open_sessions[ev.session_id] = now if ts is None else ts
        s.seen |= SESSION_STARTED_BITS

    def _session_ended(self, ev: SessionEnded, now: float) -> None:
        s = self._loops.get(ev.loop_id) or self._loop(ev.loop_id, SessionEnded)
        start = s.open_sessions.pop(ev.session_id, None)
        s.seen |= SESSION_ENDED_BITS
        duration = ev.duration_s
        if duration is None:
            if start is None:
                return
            ts = ev.ts
            duration = max(0.0, (now if ts is None else ts) - start)
        s.session_counts[bisect_left(_SESSION_BOUNDS, duration)] += 1
        s.session_sum += duration
        s.seen |= SESSION_DURATION_BIT

    def _context_usage(self, ev: ContextUsage, now: float) -> None:
        s = self._loops.get(ev.loop_id) or self._loop(ev.loop_id, ContextUsage)
        s.context_percent = ev.percent
        s.seen |= USAGE_BITS

    def _context_reboot(self, ev: ContextReboot, now: float) -> None:
        s = self._loops.get(ev.loop_id) or self._loop(ev.loop_id, ContextReboot)
        percent = ev.percent
        ratio = percent / 100.0
        s.reboots += 1
        s.reboot_counts[bisect_left(_REBOOT_BOUNDS, ratio)] += 1
        s.reboot_ratio_sum += ratio
        s.reboot_percent_sum += percent
        s.seen |= REBOOT_BITS

    def _tests_reported(self, ev: TestsReported, now: float) -> None:
        s = self._loops.get(ev.loop_id) or self._loop(ev.loop_id, TestsReported)
        s.tests_passed = ev.passed
        s.tests_failed = failed = ev.failed
        s.tests_total = ev.total
        s.tests_flaky = ev.flaky
        s.test_failure_streak = s.test_failure_streak + 1 if failed else 0
        s.seen |= TESTS_BITS

    def _resource_sample(self, ev: ResourceSample, now: float) -> None:
        s = self._loops.get(ev.loop_id) or self._loop(ev.loop_id, ResourceSample)
        s.rss_bytes = ev.rss_bytes
        s.cpu_percent = ev.cpu_percent
        s.seen |= RESOURCE_BITS

    def _trim_pending(self) -> None:
        """Drop buffered durations that left the sketch's window; drain if many are left."""
        sketch = self._iteration_sketch
        first, _ = sketch.window()
        horizon = (first - 1) * sketch.width  # older ones can never be read again
        self._pending = [item for item in self._pending if item[1] >= horizon]
        if len(self._pending) >= _PENDING_LIMIT // 2:
            self._drain()

    def _drain(self) -> None:
        """Observe every buffered iteration duration into the quantile sketch (in log order)."""
        observe = self._iteration_sketch.observe
        for loop_id, ts, duration in self._pending:
            observe((loop_id,), duration, ts)
        self._pending = []

    # -- metric events and resets -------------------------------------------------

    def _metric(self, ev: MetricUpdate, now: float) -> None:
        family = self._custom.get(ev.name)
        if family is None:
            family = self._create(ev)
            if family is None:
                return
        elif family.kind != ev.kind:
            self.rejected["kind_conflict"] += 1
            return
        labels = ev.labels
        names = family.label_names
        if len(labels) != len(names):
            self.rejected["label_mismatch"] += 1
            return
        key: tuple[str, ...]
        try:  # unrolled: far cheaper than tuple(map(...)) for the usual one or two labels
            match len(names):
                case 0:
                    key = ()
                case 1:
                    key = (labels[names[0]],)
                case 2:
                    key = (labels[names[0]], labels[names[1]])
                case _:
                    key = tuple([labels[name] for name in names])
        except KeyError:
            self.rejected["label_mismatch"] += 1
            return
        if ev.help and not family.help:
            family.help = ev.help
        value = ev.value
        if type(family) is CounterFamily:
            values = family.values
            current = values.get(key)
            if current is None:
                family.inc(key, value)
            else:
                values[key] = current + value
        elif type(family) is GaugeFamily:
            op = ev.op
            if op == "dec":
                value = -value
            values = family.values
            current = values.get(key)
            if current is None:
                family.set(key, value) if op is None or op == "set" else family.inc(key, value)
            else:
                values[key] = value if op is None or op == "set" else current + value
        elif type(family) is HistogramFamily:
            series = family.series.get(key)
            if series is None:
                family.observe(key, value)
            else:
                series.counts[bisect_left(family.bounds, value)] += 1
                series.sum += value
                series.count += 1
        elif type(family) is SummaryFamily:
            ts = ev.ts
            self.clock.now = now
            family.observe(key, value, now if ts is None else ts)

    def _create(self, ev: MetricUpdate) -> AnyFamily | None:
        name = ev.name
        if self.catalogue.is_reserved(name):
            self.rejected["reserved_name"] += 1
            return None
        names = tuple(sorted(ev.labels))
        family: AnyFamily
        try:
            match ev.kind:
                case "counter":
                    family = CounterFamily(
                        name, ev.help, names, max_series=self._max, overflow=self.overflow
                    )
                case "gauge":
                    family = GaugeFamily(
                        name, ev.help, names, max_series=self._max, overflow=self.overflow
                    )
                case "histogram":
                    family = HistogramFamily(
                        name,
                        ev.help,
                        names,
                        bounds=self.config.default_buckets,
                        max_series=self._max,
                        overflow=self.overflow,
                    )
                case "summary":
                    family = SummaryFamily(
                        name,
                        ev.help,
                        names,
                        clock=self.clock,
                        window_s=self.config.summary_window_s,
                        age_buckets=self.config.summary_age_buckets,
                        max_series=self._max,
                        overflow=self.overflow,
                    )
        except (MetricNameError, ValueError):
            self.rejected["invalid_family"] += 1
            return None
        self._custom[name] = family
        return family

    def _metrics_reset(self, ev: MetricsReset, now: float) -> None:
        self.reset(ev.prefix)

    def reset(self, prefix: str = "") -> None:
        """Clear every family named ``prefix...`` but ``tally_*`` (what ``metrics_reset`` does)."""
        for name in cat.CONDUCTOR_NAMES:
            if name.startswith(prefix):
                self._reset_conductor(name)
        loop_specs = self.catalogue.loop
        matched = [suffix for suffix, spec in loop_specs.items() if spec.name.startswith(prefix)]
        if len(matched) == len(loop_specs):
            self._loops.clear()
            self._active_loops.clear()
            self._iteration_sketch = self._new_sketch()
            self._pending = []
        else:
            for suffix in matched:
                if suffix == "active_loops":
                    self._active_loops.clear()
                    continue
                for s in self._loops.values():
                    s.clear(suffix)
                if suffix == "iteration_duration_seconds":
                    self._iteration_sketch = self._new_sketch()
                    self._pending = []
        for name, family in list(self._custom.items()):
            if name.startswith(prefix):
                self._custom[name] = _emptied(family)

    def _reset_conductor(self, name: str) -> None:
        match name:
            case cat.ACTIVE_RUNS:
                self._active.clear()
            case cat.QUEUED_RUNS:
                self._queued.clear()
            case cat.COMPLETED_RUNS:
                self._completed = 0
            case cat.FAILED_RUNS:
                self._failed = 0
            case cat.BUS_APPENDS:
                self._bus_messages = 0
            case cat.API_REQUESTS:
                self._api.clear()
            case cat.AGENT_RUNS:
                self._agent_runs.clear()
            case cat.AGENT_FALLBACKS:
                self._fallbacks.clear()
            case cat.RUN_DURATION:
                self._run_durations.series.clear()

    # -- reading the state ---------------------------------------------------------

    def families(self) -> list[AnyFamily]:
        """Every family to render, sorted by name (owned by the projection; render, then fold)."""
        r = self._rendered
        api: dict[tuple[str, ...], float] = {
            (method, OVERFLOW if method == OVERFLOW and status == 0 else str(status)): float(n)
            for (method, status), n in self._api.items()
        }
        fallbacks: dict[tuple[str, ...], float] = {k: float(n) for k, n in self._fallbacks.items()}
        scalars: dict[str, dict[tuple[str, ...], float]] = {
            cat.ACTIVE_RUNS: {(): float(len(self._active))},
            cat.QUEUED_RUNS: {(): float(len(self._queued))},
            cat.COMPLETED_RUNS: {(): float(self._completed)},
            cat.FAILED_RUNS: {(): float(self._failed)},
            cat.BUS_APPENDS: {(): float(self._bus_messages)},
            cat.API_REQUESTS: api,
            cat.AGENT_RUNS: {(agent,): float(n) for agent, n in self._agent_runs.items()},
            cat.AGENT_FALLBACKS: fallbacks,
            cat.EVENTS_FOLDED: {(tag,): float(n) for tag, n in self.events_by_type.items()},
            cat.CORRUPT_LINES: {(): float(self.corrupt_lines)},
            cat.UNKNOWN_EVENTS: {(): float(self.unknown_events)},
            cat.REJECTED_EVENTS: {(why,): float(n) for why, n in self.rejected.items()},
            cat.FOLDED_OFFSET: {(): float(self.offset)},
            cat.SERIES_OVERFLOW: {(name,): n for name, n in self.overflow.items()},
        }
        for name, values in scalars.items():
            family = r[name]
            assert isinstance(family, CounterFamily | GaugeFamily)
            family.values = values
        loop_families(
            {suffix: r[spec.name] for suffix, spec in self.catalogue.loop.items()},
            self._loops,
            len(self._active_loops),
        )
        out: list[AnyFamily] = [*r.values(), self._run_durations, *self._custom.values()]
        out.sort(key=_name)
        return out

    def rollups(self) -> dict[str, LoopRollup]:
        """Every loop's roll-up (``__overflow__`` collects the loops past the series limit)."""
        sketch = self._iteration_sketch
        out: dict[str, LoopRollup] = {}
        if self._pending:
            self._drain()
        for loop_id, s in self._loops.items():
            p50, p90, p99 = (None if math.isnan(q) else q for q in sketch.quantiles((loop_id,)))
            out[loop_id] = rollup(s, QuantilesRollup(p50=p50, p90=p90, p99=p99))
        return out

    def loops(self) -> dict[str, dict[str, Any]]:
        """``rollups()`` as JSON-ready dicts (undefined values are ``None``)."""
        return {loop_id: msgspec.to_builtins(r) for loop_id, r in self.rollups().items()}

    # -- state records (snapshots) ------------------------------------------------

    def export_state(self) -> ProjectionState:
        """Everything folded, as records; ``Projection.from_state`` rebuilds an equal projection."""
        if self._pending:
            self._drain()
        return ProjectionState(
            offset=self.offset,
            clock=self.clock.now,
            events_by_type=self.events_by_type,
            corrupt_lines=self.corrupt_lines,
            unknown_events=self.unknown_events,
            unknown_types=dict(self.unknown_types),
            rejected=dict(self.rejected),
            overflow=dict(self.overflow),
            queued=list(self._queued),
            active=dict(self._active),
            completed=self._completed,
            failed=self._failed,
            bus_messages=self._bus_messages,
            api_requests=[(m, s, n) for (m, s), n in self._api.items()],
            agent_runs=dict(self._agent_runs),
            fallbacks=[(f, t, n) for (f, t), n in self._fallbacks.items()],
            run_durations=family_to_state(self._run_durations),
            loops={loop_id: s.to_record() for loop_id, s in self._loops.items()},
            active_loops=list(self._active_loops),
            iteration_sketch=family_to_state(self._iteration_sketch),
            custom=[family_to_state(f) for f in self._custom.values()],
        )

    @classmethod
    def from_state(cls, state: ProjectionState, config: ProjectionConfig) -> Projection:
        """A projection equal to the one ``state`` came from; ``ValueError`` if inconsistent."""
        p = cls(config)
        p.offset = state.offset
        p.clock.now = state.clock
        unknown = set(state.events_by_type) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types in state: {sorted(unknown)}")
        for tag, n in state.events_by_type.items():
            p._by_class[EVENT_TYPES[tag]] = n
        p.corrupt_lines = state.corrupt_lines
        p.unknown_events = state.unknown_events
        p.unknown_types = dict(state.unknown_types)
        p.rejected.update(state.rejected)
        p.overflow.update(state.overflow)  # the dict every family shares
        p._queued = dict.fromkeys(state.queued)
        p._active = dict(state.active)
        p._completed = state.completed
        p._failed = state.failed
        p._bus_messages = state.bus_messages
        p._api = {(m, s): n for m, s, n in state.api_requests}
        p._agent_runs = dict(state.agent_runs)
        p._fallbacks = {(f, t): n for f, t, n in state.fallbacks}
        durations = family_from_state(state.run_durations, clock=p.clock, overflow=p.overflow)
        if not isinstance(durations, HistogramFamily) or durations.name != cat.RUN_DURATION:
            raise ValueError("state: run_durations is not the run duration histogram")
        p._run_durations = durations
        sizes = (len(config.iteration_buckets), len(_SESSION_BOUNDS), len(_REBOOT_BOUNDS))
        for loop_id, record in state.loops.items():
            got = (
                len(record.duration_counts) - 1,
                len(record.session_counts) - 1,
                len(record.reboot_counts) - 1,
            )
            if got != sizes:
                raise ValueError(f"state: loop {loop_id!r} has bucket counts {got}, not {sizes}")
            p._loops[loop_id] = LoopState.from_record(record)
        p._active_loops = dict.fromkeys(state.active_loops)
        sketch = family_from_state(state.iteration_sketch, clock=p.clock)
        if not isinstance(sketch, SummaryFamily):
            raise ValueError("state: iteration_sketch is not a summary")
        p._iteration_sketch = sketch
        for family_state in state.custom:
            family = family_from_state(family_state, clock=p.clock, overflow=p.overflow)
            p._custom[family.name] = family
        return p


def _name(family: AnyFamily) -> str:
    return family.name


def _emptied(family: AnyFamily) -> AnyFamily:
    """A family like ``family`` with no observations; an unlabelled one keeps a zero series."""
    unlabelled = not family.label_names
    fresh: AnyFamily
    match family:
        case CounterFamily() | GaugeFamily():
            fresh = type(family)(
                family.name,
                family.help,
                family.label_names,
                max_series=family.max_series,
                overflow=family.overflow,
            )
            if unlabelled:
                fresh.values[()] = 0.0
        case HistogramFamily():
            fresh = HistogramFamily(
                family.name,
                family.help,
                family.label_names,
                bounds=family.bounds,
                max_series=family.max_series,
                overflow=family.overflow,
            )
            if unlabelled:
                fresh.series[()] = HistogramSeries(len(family.bounds))
        case SummaryFamily():
            fresh = SummaryFamily(
                family.name,
                family.help,
                family.label_names,
                clock=family.clock,
                window_s=family.window_s,
                age_buckets=family.age_buckets,
                relative_error=family.relative_error,
                max_bins=family.max_bins,
                max_series=family.max_series,
                overflow=family.overflow,
            )
    return fresh
