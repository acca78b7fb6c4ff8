"""The conductor fold: run, bus-message, API-request and fallback events -> ``conductor_*``.

Rule: no I/O, no wall clock (time is the event ``ts``; ``now`` is the fold's
clock); the state changes only through the handlers here, in log order, and
through ``add_bus_messages`` and ``api``, which the dispatch loop bumps itself.

Runs: active = started and not finished, queued = queued and not started or
finished; both gauges are set sizes, so a log that starts mid-run (a finish
without a start) never drives them negative. A run's duration is
``run_finished.duration_s``, else ``ts`` minus its start ``ts`` when the start
was folded, else it is not observed. An empty ``agent`` is ``"unknown"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from bus.events import AgentFallback, ApiRequest, EventBase, RunFinished, RunQueued, RunStarted
from projections import catalogue as cat
from projections.clock import EventClock, elapsed
from projections.config import ProjectionConfig
from projections.exemplars import ExemplarRecorder
from projections.metrics.families import (
    OVERFLOW,
    CounterFamily,
    Exemplar,
    Family,
    GaugeFamily,
    HistogramFamily,
    OverflowCounts,
)
from projections.metrics.stale import forget_series
from projections.metrics.state import FamilyState, family_from_state, family_to_state

__all__ = ["ConductorFold", "ConductorState"]

Handler = Callable[[Any, float], None]


class ConductorState(msgspec.Struct, kw_only=True):
    """Everything a ``ConductorFold`` holds, as records.

    ``ProjectionState`` carries these fields as its own, in this order (the
    snapshot format predates the conductor fold's own module).
    """

    queued: list[str]
    active: dict[str, float]
    completed: int
    failed: int
    bus_messages: int
    api_requests: list[tuple[str, int, int]]
    agent_runs: dict[str, int]
    fallbacks: list[tuple[str, str, int]]
    run_durations: FamilyState
    #: When each labelled series last changed (event clock); the histogram keeps its own.
    agent_runs_touched: dict[str, float] = {}
    fallbacks_touched: list[tuple[str, str, float]] = []
    api_requests_touched: list[tuple[str, int, float]] = []


class ConductorFold:
    """The conductor families' state; series past ``max_series`` go to the overflow series.

    ``api`` (method -> status -> count) is bumped in place by the dispatch loop
    for series it already holds; ``api_request`` takes the others.
    """

    def __init__(
        self,
        config: ProjectionConfig,
        specs: Mapping[str, cat.FamilySpec],
        clock: EventClock,
        overflow: OverflowCounts,
        exemplars: ExemplarRecorder | None = None,
    ) -> None:
        self.clock = clock
        self.overflow = overflow
        self._specs = specs
        self._max = max_series = config.max_series_per_family
        self.queued: dict[str, None] = {}
        self.active: dict[str, float] = {}  # run_id -> start ts
        self.completed = 0
        self.failed = 0
        self.bus_messages = 0
        self.api: dict[str, dict[int, int]] = {}  # never replaced: the dispatch loop holds it
        #: method -> status -> when the series last changed (also bumped by the loop).
        self.api_touched: dict[str, dict[int, float]] = {}
        self._api_series = 0
        self.agent_runs: dict[str, int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}
        #: When each agent_runs / fallbacks series last changed (event clock).
        self.agent_runs_touched: dict[str, float] = {}
        self.fallbacks_touched: dict[tuple[str, str], float] = {}
        durations = cat.build_family(
            specs[cat.RUN_DURATION], max_series=max_series, overflow=overflow
        )
        assert isinstance(durations, HistogramFamily)
        self.run_durations = durations
        #: Where finished runs note their exemplars, when the catalogue gives them a label.
        self._exemplars = exemplars if durations.exemplar_label else None
        if self._exemplars is not None:
            self._exemplars.watch(self.exemplar_slots)
        #: The event types whose handlers record exemplars (the dispatch loop tells them where).
        self.indexed: tuple[type[EventBase], ...] = (
            (RunFinished,) if self._exemplars is not None else ()
        )
        #: The scalar families, refilled by ``families`` (the histogram is folded into).
        self._scalars: dict[str, Family] = {
            name: cat.build_family(spec, max_series=max_series, overflow=overflow)
            for name, spec in specs.items()
            if name != cat.RUN_DURATION
        }
        self.handlers: dict[type[EventBase], Handler] = {
            RunQueued: self.run_queued,
            RunStarted: self.run_started,
            RunFinished: self.run_finished,
            AgentFallback: self.agent_fallback,
        }

    # -- handlers ------------------------------------------------------------------

    def run_queued(self, ev: RunQueued, now: float) -> None:
        if ev.run_id not in self.active:
            self.queued[ev.run_id] = None

    def run_started(self, ev: RunStarted, now: float) -> None:
        run_id = ev.run_id
        self.queued.pop(run_id, None)
        ts = ev.ts
        self.active[run_id] = now if ts is None else ts
        agent = ev.agent or "unknown"
        runs = self.agent_runs
        n = runs.get(agent)
        if n is None:
            agent = self._admit(cat.AGENT_RUNS, runs, agent, OVERFLOW)
            n = runs.get(agent, 0)
        runs[agent] = n + 1
        self.agent_runs_touched[agent] = now

    def run_finished(self, ev: RunFinished, now: float) -> None:
        run_id = ev.run_id
        self.queued.pop(run_id, None)
        start = self.active.pop(run_id, None)
        status = ev.status
        if status == "completed":
            self.completed += 1
        else:
            self.failed += 1
        duration = ev.duration_s
        if duration is None:
            duration = elapsed(start, ev.ts, now)
            if duration is None:
                return
        series, bucket = self.run_durations.observe(
            (ev.agent or "unknown", status), duration, now=now
        )
        exemplars = self._exemplars
        if exemplars is not None:
            ts = ev.ts
            exemplars.record(series.exemplars, bucket, run_id, duration, now if ts is None else ts)

    def api_request(self, ev: ApiRequest, now: float) -> None:
        """A (method, status) series not counted yet (the dispatch loop bumps the known ones)."""
        method, status = ev.method, ev.status
        if self._api_series >= self._max:
            self.overflow[cat.API_REQUESTS] = self.overflow.get(cat.API_REQUESTS, 0.0) + 1.0
            method, status = OVERFLOW, 0
        by_status = self.api.setdefault(method, {})
        if status not in by_status:
            self._api_series += 1
        by_status[status] = by_status.get(status, 0) + 1
        self.api_touched.setdefault(method, {})[status] = now

    def agent_fallback(self, ev: AgentFallback, now: float) -> None:
        fallbacks = self.fallbacks
        key = (ev.from_type, ev.to_type)
        n = fallbacks.get(key)
        if n is None:
            key = self._admit(cat.AGENT_FALLBACKS, fallbacks, key, (OVERFLOW, OVERFLOW))
            n = fallbacks.get(key, 0)
        fallbacks[key] = n + 1
        self.fallbacks_touched[key] = now

    def add_bus_messages(self, n: int) -> None:
        """``n`` more ``bus_message`` events (counted by the dispatch loop: their whole fold)."""
        self.bus_messages += n

    def _admit(self, family: str, series: dict[Any, int], key: Any, overflow_key: Any) -> Any:
        """``key`` for a series not yet in ``series``, or the overflow key past the limit."""
        if len(series) < self._max:
            return key
        self.overflow[family] = self.overflow.get(family, 0.0) + 1.0
        return overflow_key

    def exemplar_slots(self) -> list[dict[int, Exemplar]]:
        """The exemplar slots of every run-duration series (``ExemplarRecorder.watch``)."""
        return [series.exemplars for series in self.run_durations.series.values()]

    # -- resets and reading --------------------------------------------------------

    def reset(self, prefix: str) -> None:
        """Clear every conductor family named ``prefix...``."""
        for name in self._specs:
            if name.startswith(prefix):
                self.clear(name)

    def clear(self, name: str) -> None:
        """Forget what fed the conductor family ``name``."""
        match name:
            case cat.ACTIVE_RUNS:
                self.active.clear()
            case cat.QUEUED_RUNS:
                self.queued.clear()
            case cat.COMPLETED_RUNS:
                self.completed = 0
            case cat.FAILED_RUNS:
                self.failed = 0
            case cat.BUS_APPENDS:
                self.bus_messages = 0
            case cat.API_REQUESTS:
                self.api.clear()
                self.api_touched.clear()
                self._api_series = 0
            case cat.AGENT_RUNS:
                self.agent_runs.clear()
                self.agent_runs_touched.clear()
            case cat.AGENT_FALLBACKS:
                self.fallbacks.clear()
                self.fallbacks_touched.clear()
            case cat.RUN_DURATION:
                self.run_durations.clear()

    def families(self, api_requests: Mapping[tuple[str, str], float] | None = None) -> list[Family]:
        """The conductor families, refilled; ``api_requests`` ((method, status) -> count) is
        added to ``conductor_api_requests_total`` for this render only."""
        api: dict[tuple[str, ...], float] = {
            _api_key(method, status): float(n)
            for method, by_status in self.api.items()
            for status, n in by_status.items()
        }
        for key, n in (api_requests or {}).items():
            api[key] = api.get(key, 0.0) + n
        own = api_requests or {}
        api_touched: dict[tuple[str, ...], float] = {  # the server's own: never stale
            key: t
            for method, by_status in self.api_touched.items()
            for status, t in by_status.items()
            if (key := _api_key(method, status)) not in own
        }
        values: dict[str, dict[tuple[str, ...], float]] = {
            cat.ACTIVE_RUNS: {(): float(len(self.active))},
            cat.QUEUED_RUNS: {(): float(len(self.queued))},
            cat.COMPLETED_RUNS: {(): float(self.completed)},
            cat.FAILED_RUNS: {(): float(self.failed)},
            cat.BUS_APPENDS: {(): float(self.bus_messages)},
            cat.API_REQUESTS: api,
            cat.AGENT_RUNS: {(agent,): float(n) for agent, n in self.agent_runs.items()},
            cat.AGENT_FALLBACKS: {k: float(n) for k, n in self.fallbacks.items()},
        }
        touched: dict[str, dict[tuple[str, ...], float]] = {
            cat.AGENT_RUNS: {(agent,): t for agent, t in self.agent_runs_touched.items()},
            cat.AGENT_FALLBACKS: {key: t for key, t in self.fallbacks_touched.items()},
            cat.API_REQUESTS: api_touched,
        }
        for name, series in values.items():
            family = self._scalars[name]
            assert isinstance(family, CounterFamily | GaugeFamily)
            family.values = series
            family.touched = touched.get(name, {})
        return [*self._scalars.values(), self.run_durations]

    def forget(self, cutoff: float) -> None:
        """Free the labelled series last changed before ``cutoff`` (``forget_after_s``).

        ``conductor_api_requests_total`` is only ever hidden: the dispatch loop bumps its
        series without a handler, so no sweep could run before a bump (and method x
        status is a handful of series).
        """
        for agent in [a for a, t in self.agent_runs_touched.items() if t < cutoff]:
            del self.agent_runs_touched[agent]
            del self.agent_runs[agent]
        for key in [k for k, t in self.fallbacks_touched.items() if t < cutoff]:
            del self.fallbacks_touched[key]
            del self.fallbacks[key]
        forget_series(self.run_durations, cutoff)

    # -- state records ---------------------------------------------------------------

    def export_state(self) -> ConductorState:
        return ConductorState(
            queued=list(self.queued),
            active=dict(self.active),
            completed=self.completed,
            failed=self.failed,
            bus_messages=self.bus_messages,
            api_requests=[
                (m, s, n) for m, by_status in self.api.items() for s, n in by_status.items()
            ],
            agent_runs=dict(self.agent_runs),
            fallbacks=[(f, t, n) for (f, t), n in self.fallbacks.items()],
            run_durations=family_to_state(self.run_durations),
            agent_runs_touched=dict(sorted(self.agent_runs_touched.items())),
            fallbacks_touched=sorted((f, t, at) for (f, t), at in self.fallbacks_touched.items()),
            api_requests_touched=[
                (m, s, t) for m, by_status in self.api_touched.items() for s, t in by_status.items()
            ],
        )

    def restore(self, state: ConductorState) -> None:
        """Take over ``state`` (into a fresh fold); ``ValueError`` if it is inconsistent."""
        self.queued = dict.fromkeys(state.queued)
        self.active = dict(state.active)
        self.completed = state.completed
        self.failed = state.failed
        self.bus_messages = state.bus_messages
        for method, status, n in state.api_requests:
            self.api.setdefault(method, {})[status] = n
        self._api_series = len(state.api_requests)
        for method, status, t in state.api_requests_touched:
            self.api_touched.setdefault(method, {})[status] = t
        self.agent_runs = dict(state.agent_runs)
        self.fallbacks = {(f, t): n for f, t, n in state.fallbacks}
        self.agent_runs_touched = dict(state.agent_runs_touched)
        self.fallbacks_touched = {(f, t): at for f, t, at in state.fallbacks_touched}
        durations = family_from_state(state.run_durations, clock=self.clock, overflow=self.overflow)
        if not isinstance(durations, HistogramFamily) or durations.name != cat.RUN_DURATION:
            raise ValueError("state: run_durations is not the run duration histogram")
        if durations.exemplar_label != self.run_durations.exemplar_label:
            raise ValueError("state: run_durations has another exemplar label")
        self.run_durations = durations


def _api_key(method: str, status: int) -> tuple[str, str]:
    """The labels of an ``api[method][status]`` series (the overflow series is (OVERFLOW, 0))."""
    return method, OVERFLOW if method == OVERFLOW and status == 0 else str(status)
