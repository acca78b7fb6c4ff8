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
* Loops (``loops.LoopFold``, ``rollup``): a session's duration is
  ``session_ended.duration_s``, else ``ts`` minus its start ``ts`` when known.
  ``P_test_pass_ratio`` is absent while the last report had ``total == 0`` (the
  roll-up's ``pass_rate`` is null). ``P_iterations_with_progress_total`` and
  both ``result`` series of ``P_iterations_total`` appear with a loop's first
  iteration, at 0 if need be.
* ``metric`` events (``custom.MetricFamilies``): the first event fixes a
  family's kind, label names (its sorted label keys) and, if given, help; events
  that disagree, or name a catalogue family (``conductor_*``, ``P_*``,
  ``tally_*``), are counted in ``tally_rejected_events_total{reason}``, not applied.
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

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from bus.events import (
    EVENT_TYPES,
    AgentFallback,
    ApiRequest,
    BusMessage,
    Event,
    EventBase,
    MetricsReset,
    MetricUpdate,
    RunFinished,
    RunQueued,
    RunStarted,
)
from bus.reader import Batch
from projections import catalogue as cat
from projections.clock import EventClock, elapsed
from projections.config import ProjectionConfig
from projections.dispatch import FoldRun, FoldSpec, fold_run
from projections.metric_events import MetricFamilies
from projections.metrics.families import (
    OVERFLOW,
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    OverflowCounts,
)
from projections.metrics.state import FamilyState, family_from_state, family_to_state
from projections.metrics.summary import AnyFamily
from projections.ralph.fold import LoopFold, LoopFoldState
from projections.ralph.rollup import LoopRollup

__all__ = ["Projection", "ProjectionState"]

_TAG: Final[dict[type[EventBase], str]] = {cls: tag for tag, cls in EVENT_TYPES.items()}
#: Event types by how often a typical log holds them (ticks share their type's tag).
_COMMON: Final = (
    "api_request",
    "bus_message",
    "iteration_completed",
    "metric",
    "context_usage",
    "resource_sample",
    "run_queued",
    "run_started",
    "run_finished",
    "tests_reported",
)
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
    loops: LoopFoldState
    custom: list[FamilyState]


class Projection:
    """The whole folded state: catalogue families, loop roll-ups, ``metric`` families, self-metrics.

    ``families()`` returns family objects owned by the projection: read them
    (render) before folding more. ``ticks`` are event classes that only advance the
    clock (``partition``); ``run`` is the hot loop (``dispatch``), the compiled one
    when it was built: tests and benchmarks pass the reference to compare.
    """

    def __init__(
        self,
        config: ProjectionConfig | None = None,
        *,
        ticks: Iterable[type[EventBase]] = (),
        run: FoldRun | None = None,
    ) -> None:
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
        ticks = tuple(ticks)  # classes that only advance the clock (``partition``)
        self._by_class: dict[type[EventBase], int] = dict.fromkeys((*_TAG, *ticks), 0)
        # conductor
        self._queued: dict[str, None] = {}
        self._active: dict[str, float] = {}  # run_id -> start ts
        self._completed = 0
        self._failed = 0
        self._bus_messages = 0
        self._api: dict[str, dict[int, int]] = {}  # method -> status -> count
        self._api_series = 0
        self._agent_runs: dict[str, int] = {}
        self._fallbacks: dict[tuple[str, str], int] = {}
        self._run_durations = self._build(cat.RUN_DURATION)
        self._loops = LoopFold(config, self.catalogue.loop, self.clock, self.overflow)
        self._metrics = MetricFamilies(
            config, self.catalogue, self.clock, self.overflow, self.rejected
        )
        # families rendered from the state above, refilled by families()
        self._rendered: dict[str, Family] = {
            spec.name: cat.build_family(spec, max_series=self._max, overflow=self.overflow)
            for spec in (*cat.CONDUCTOR, *self.catalogue.loop.values(), *cat.SELF)
            if spec.name != cat.RUN_DURATION
        }
        handlers: dict[type[EventBase], Handler | None] = {
            RunQueued: self._run_queued,
            RunStarted: self._run_started,
            RunFinished: self._run_finished,
            AgentFallback: self._agent_fallback,
            **self._loops.handlers,
            MetricUpdate: self._metrics.apply,
            **dict.fromkeys((*ticks, ApiRequest, BusMessage, MetricsReset)),
        }  # ticks fold nothing but their ts; the loop folds the other Nones itself
        types = sorted(handlers, key=_dispatch_rank)
        self._spec = FoldSpec(
            types=tuple(types),
            handlers=tuple(handlers[cls] for cls in types),
            api=self._api,
            api_miss=self._api_request,
            api_type=ApiRequest,
            bus_type=BusMessage,
            stop_type=MetricsReset,
            ts_field=EventBase.ts,
            method_field=ApiRequest.method,
            status_field=ApiRequest.status,
        )
        self._bus_slot = types.index(BusMessage)
        self._run = run if run is not None else fold_run

    def _build(self, name: str) -> HistogramFamily:
        family = cat.build_family(
            self.catalogue.by_name[name], max_series=self._max, overflow=self.overflow
        )
        assert isinstance(family, HistogramFamily)
        return family

    # -- folding ---------------------------------------------------------------

    @property
    def events_by_type(self) -> dict[str, int]:
        """Events folded so far, by event type (every type, 0 included)."""
        return {_TAG[cls]: n for cls, n in self._by_class.items() if cls in _TAG}

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
        spec, run, by_class = self._spec, self._run, self._by_class
        i, n = 0, len(events)
        while i < n:
            now, i, counts = run(events, i, self.clock.now, spec)
            self.clock.now = now
            for cls, count in zip(spec.types, counts, strict=True):
                if count:
                    by_class[cls] += count
            # bus messages are only counted; a reset clears what came before it
            self._bus_messages += counts[self._bus_slot]
            if i < n:  # the run stopped at a metrics_reset (counted, its ts read)
                reset = events[i]
                assert isinstance(reset, MetricsReset)
                self.reset(reset.prefix)
                i += 1

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
            duration = elapsed(start, ev.ts, now)
            if duration is None:
                return
        self._run_durations.observe((ev.agent or "unknown", status), duration)

    def _api_request(self, ev: ApiRequest, now: float) -> None:
        """A (method, status) series not counted yet (``_fold_run`` bumps the known ones)."""
        method, status = ev.method, ev.status
        if self._api_series >= self._max:
            self.overflow[cat.API_REQUESTS] = self.overflow.get(cat.API_REQUESTS, 0.0) + 1.0
            method, status = OVERFLOW, 0
        by_status = self._api.setdefault(method, {})
        if status not in by_status:
            self._api_series += 1
        by_status[status] = by_status.get(status, 0) + 1

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

    # -- metric events and resets -------------------------------------------------

    def reset(self, prefix: str = "") -> None:
        """Clear every family named ``prefix...`` but ``tally_*`` (what ``metrics_reset`` does)."""
        for name in cat.CONDUCTOR_NAMES:
            if name.startswith(prefix):
                self._reset_conductor(name)
        self._loops.reset(prefix)
        self._metrics.reset(prefix)

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
                self._api_series = 0
            case cat.AGENT_RUNS:
                self._agent_runs.clear()
            case cat.AGENT_FALLBACKS:
                self._fallbacks.clear()
            case cat.RUN_DURATION:
                self._run_durations.clear()

    # -- reading the state ---------------------------------------------------------

    def families(
        self, *, api_requests: Mapping[tuple[str, str], float] | None = None
    ) -> list[AnyFamily]:
        """Every family to render, sorted by name (owned by the projection: render, then fold).

        ``api_requests`` ((method, status) -> count) is added to
        ``conductor_api_requests_total`` for this render only: the server's own
        requests, which are not events.
        """
        r = self._rendered
        api: dict[tuple[str, ...], float] = {
            (method, OVERFLOW if method == OVERFLOW and status == 0 else str(status)): float(n)
            for method, by_status in self._api.items()
            for status, n in by_status.items()
        }
        for key, n in (api_requests or {}).items():
            api[key] = api.get(key, 0.0) + n
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
        self._loops.refill({suffix: r[spec.name] for suffix, spec in self.catalogue.loop.items()})
        custom = self._metrics.families.values()
        out: list[AnyFamily] = [*r.values(), self._run_durations, *custom]
        out.sort(key=_name)
        return out

    def rollups(self) -> dict[str, LoopRollup]:
        """Every loop's roll-up (``__overflow__`` collects the loops past the series limit)."""
        return self._loops.rollups()

    def loops(self) -> dict[str, dict[str, Any]]:
        """``rollups()`` as JSON-ready dicts (undefined values are ``None``)."""
        return {loop_id: msgspec.to_builtins(r) for loop_id, r in self.rollups().items()}

    # -- state records (snapshots) ------------------------------------------------

    def export_state(self) -> ProjectionState:
        """Everything folded, as records; ``Projection.from_state`` rebuilds an equal projection."""
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
            api_requests=[
                (m, s, n) for m, by_status in self._api.items() for s, n in by_status.items()
            ],
            agent_runs=dict(self._agent_runs),
            fallbacks=[(f, t, n) for (f, t), n in self._fallbacks.items()],
            run_durations=family_to_state(self._run_durations),
            loops=self._loops.export_state(),
            custom=self._metrics.export_state(),
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
        for method, status, n in state.api_requests:
            p._api.setdefault(method, {})[status] = n
        p._api_series = len(state.api_requests)
        p._agent_runs = dict(state.agent_runs)
        p._fallbacks = {(f, t): n for f, t, n in state.fallbacks}
        durations = family_from_state(state.run_durations, clock=p.clock, overflow=p.overflow)
        if not isinstance(durations, HistogramFamily) or durations.name != cat.RUN_DURATION:
            raise ValueError("state: run_durations is not the run duration histogram")
        p._run_durations = durations
        p._loops.restore(state.loops)
        p._metrics.restore(state.custom)
        return p


def _dispatch_rank(cls: type[EventBase]) -> int:
    """The commonest events first: the compiled loop finds an event's class by a linear scan."""
    tag = cls.__struct_config__.tag
    return _COMMON.index(tag) if tag in _COMMON else len(_COMMON)


def _name(family: AnyFamily) -> str:
    return family.name
