"""The fold: events in log order -> the whole metric state (``Projection``).

Rule: no I/O, no wall clock, no randomness. Time is the ``EventClock`` (the max
event ``ts`` folded); the same events in the same order give the same state,
however they are batched or snapshotted in between.

Semantics where DESIGN.md is silent (what a production user expects):

* Runs (``conductor.ConductorFold``): see that module.
* Loops (``ralph.LoopFold``): a session's duration is
  ``session_ended.duration_s``, else ``ts`` minus its start ``ts`` when known.
  ``P_test_pass_ratio`` is absent while the last report had ``total == 0`` (the
  roll-up's ``pass_rate`` is null). ``P_iterations_with_progress_total`` and
  both ``result`` series of ``P_iterations_total`` appear with a loop's first
  iteration, at 0 if need be.
* ``metric`` events (``metric_events.MetricFamilies``): the first event fixes a
  family's kind, label names (its sorted label keys) and, if given, help; events
  that disagree, or name a catalogue family (``conductor_*``, ``P_*``,
  ``tally_*``), are counted in ``tally_rejected_events_total{reason}``, not applied.
* ``metrics_reset(prefix)`` clears every family whose name starts with
  ``prefix`` ("" = all) except ``tally_*`` self-metrics, which are never reset.
  Unlabelled series go back to 0; labelled series disappear; the roll-up state
  behind a family is cleared with it. ``metric`` families keep their kind.
* Cardinality: every family shares one overflow dict and the limit
  ``max_series_per_family``; loops beyond the limit are folded into one
  ``__overflow__`` loop, counted once per family each refused event updates.
* Events with ``ts`` None (external writers) happen at ``clock.now``.
* Stale series (``metrics.stale``): every labelled series fed by events is stamped
  with the clock of the event that last changed it (a loop: of its last event).
  ``series_ttl_s`` leaves those older than the ttl out of ``families()`` and
  ``rollups()`` (a loop only once it is not running); ``forget_after_s`` frees them
  at sweeps (``_sweep``), run before the first handler past each sweep boundary.
  ``conductor_api_requests_total``, bumped by the dispatch loop without a handler,
  is stamped there and hidden but never freed; unlabelled series never go stale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, Final

import msgspec

from bus.events import (
    ApiRequest,
    BusMessage,
    Event,
    EventBase,
    MetricsReset,
    MetricUpdate,
    OtelLog,
    OtelMetric,
)
from bus.lines import Batch
from projections import catalogue as cat
from projections.clock import EventClock
from projections.conductor import ConductorFold, ConductorState
from projections.config import ProjectionConfig
from projections.dispatch import FoldRun, FoldSpec, fold_run
from projections.exemplars import ExemplarRecorder, PositionsOf
from projections.metric_events import MetricFamilies
from projections.metrics.families import CounterFamily, Family, GaugeFamily, OverflowCounts
from projections.metrics.stale import StaleTest, forget_series, hide_series, stale_before
from projections.metrics.state import FamilyState
from projections.metrics.summary import AnyFamily
from projections.otel.fold import OtelFold, OtelState
from projections.ralph.fold import LoopFold, LoopFoldState
from projections.ralph.rollup import LoopRollup
from projections.rules.fold import RuleFold, RulesState

__all__ = ["Projection", "ProjectionState"]

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
    """Everything a ``Projection`` holds, as plain records (see ``snapshot``).

    The conductor fold's record (``ConductorState``) is carried field by field,
    ``queued`` to ``run_durations``, as snapshots have always held it.
    """

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
    agent_runs_touched: dict[str, float] = {}
    fallbacks_touched: list[tuple[str, str, float]] = []
    api_requests_touched: list[tuple[str, int, float]] = []
    loops: LoopFoldState
    custom: list[FamilyState]
    otel: OtelState
    rules: RulesState


class Projection:
    """The whole folded state: catalogue families, loop roll-ups, ``metric``, OTLP and rule
    families, self-metrics.

    It composes six folds, which share the clock and the overflow counts: the
    conductor fold (``conductor``), the Ralph-loop fold (``ralph``), the
    ``metric``-event families (``metric_events``), the OTLP data points (``otel``),
    the user rules (``rules``, run after the fold of the event's own type) and its own
    self-metrics. ``metric``, OTLP and rule families share one namespace.
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
        self.catalogue = catalogue = cat.Catalogue(config)
        self.clock = EventClock()
        self.offset = 0
        self.overflow: OverflowCounts = {}
        self.corrupt_lines = 0
        self.unknown_events = 0
        self.unknown_types: dict[str, int] = {}
        self.rejected: dict[str, int] = dict.fromkeys(cat.REJECT_REASONS, 0)
        #: family name -> series hidden at the last ``families()`` (``series_ttl_s``).
        self._stale: dict[str, float] = {}
        ticks = tuple(ticks)  # classes that only advance the clock (``partition``)
        classes = config.schema.classes  # the built-ins, then the declared types
        self._tags: dict[type[EventBase], str] = {cls: tag for tag, cls in classes.items()}
        self._by_class: dict[type[EventBase], int] = dict.fromkeys((*self._tags, *ticks), 0)
        self._exemplars = ExemplarRecorder()
        self._conductor = ConductorFold(
            config, catalogue.conductor, self.clock, self.overflow, self._exemplars
        )
        self._loops = LoopFold(config, catalogue.loop, self.clock, self.overflow, self._exemplars)
        self._metrics = MetricFamilies(config, catalogue, self.clock, self.overflow, self.rejected)
        self._rules = RuleFold(config, self.overflow)
        self._otel = OtelFold(
            config,
            catalogue,
            self.overflow,
            self.rejected,
            taken=_AnyOf(self._metrics.families, self._rules.families),
            clock=self.clock,
        )
        # one namespace: no source takes another's names (the rules' are declared first)
        self._metrics.taken = _AnyOf(self._otel.families, self._rules.families)
        self._self_metrics: dict[str, Family] = {
            name: cat.build_family(
                spec, max_series=config.max_series_per_family, overflow=self.overflow
            )
            for name, spec in catalogue.self_metrics.items()
        }
        handlers: dict[type[EventBase], Handler | None] = {
            **self._conductor.handlers,
            **self._loops.handlers,
            MetricUpdate: self._metrics.apply,
            OtelMetric: self._otel.apply,
            **dict.fromkeys((*ticks, ApiRequest, BusMessage, MetricsReset, OtelLog)),
            **dict.fromkeys(config.schema.declared),
        }  # ticks and declared types fold nothing but their ts (and their count) unless a rule
        # reads them; the loop folds the other Nones itself
        for cls, rules in self._rules.handlers.items():  # rules read after the catalogue folds
            folded = handlers.get(cls)
            handlers[cls] = rules if folded is None else _both(folded, rules)
        #: ``forget_after_s``: sweeps run every quarter of it, at boundaries of event time.
        self._sweep_every = config.forget_after_s / 4
        self._next_sweep = math.inf
        if self._sweep_every:
            self._next_sweep = self._sweep_every
            handlers = {
                cls: None if h is None else self._sweeping(h) for cls, h in handlers.items()
            }
        types = sorted(handlers, key=_dispatch_rank)
        self._spec = FoldSpec(
            types=tuple(types),
            handlers=tuple(handlers[cls] for cls in types),
            api=self._conductor.api,
            api_miss=self._conductor.api_request,
            api_type=ApiRequest,
            bus_type=BusMessage,
            stop_type=MetricsReset,
            ts_field=EventBase.ts,
            method_field=ApiRequest.method,
            status_field=ApiRequest.status,
            indexed=(*self._conductor.indexed, *self._loops.indexed),
            cursor=self._exemplars.cursor,
            api_touched=self._conductor.api_touched,
        )
        self._bus_slot = types.index(BusMessage)
        self._run = run if run is not None else fold_run

    # -- folding ---------------------------------------------------------------

    @property
    def events_by_type(self) -> dict[str, int]:
        """Events folded so far, by event type (every type, 0 included)."""
        tags = self._tags
        return {tags[cls]: n for cls, n in self._by_class.items() if cls in tags}

    def fold_batch(
        self,
        batch: Batch,
        events: list[Event] | None = None,
        positions: PositionsOf | None = None,
    ) -> None:
        """Fold a reader batch (events, corrupt and unknown counts); ``offset`` moves to its end.

        ``events``, if given, is folded instead of ``batch.events`` (a filtered subset),
        and ``positions`` says where its events are in the log (exemplars need it).
        """
        if events is None:
            self.fold_events(batch.events, batch.locator())
        else:
            self.fold_events(events, positions)
        if batch.corrupt:
            self.corrupt_lines += batch.corrupt
        if batch.unknown:
            self.unknown_events += batch.unknown
            for tag, n in batch.unknown_types.items():
                self.unknown_types[tag] = self.unknown_types.get(tag, 0) + n
        self.offset = batch.end

    # -- forgetting (``forget_after_s``) ---------------------------------------------

    def _sweeping(self, handler: Handler) -> Handler:
        """``handler``, after the sweep due at its event's clock (see ``_sweep``)."""

        def sweep_then(ev: Any, now: float) -> None:
            if now >= self._next_sweep:
                self._sweep(now)
            handler(ev, now)

        return sweep_then

    def _sweep(self, now: float) -> None:
        """Free the labelled series not updated for ``forget_after_s`` before the last sweep
        boundary (a multiple of ``forget_after_s / 4``) at or below ``now``.

        The cutoff depends on the boundary alone, and a sweep runs before the first handler
        past a boundary and at the end of every ``fold_events``: so the state is the same
        however the log is batched, snapshotted or partitioned.
        """
        every = self._sweep_every
        k = math.floor(now / every)
        boundary = k * every
        self._next_sweep = (k + 1) * every  # as ``from_state`` computes it
        cutoff = boundary - self.config.forget_after_s
        self.clock.now = max(self.clock.now, now)  # settling loops reads the clock
        self._conductor.forget(cutoff)
        self._loops.forget(cutoff)
        for source in (self._metrics.families, self._otel.families, self._rules.families):
            for family in source.values():
                forget_series(family, cutoff)

    def fold_events(self, events: Iterable[Event], positions: PositionsOf | None = None) -> None:
        """Fold events in order (``offset`` is left alone).

        ``positions`` gives the bus positions of the events at some indices of
        ``events``: histogram exemplars point at their event by it. Without it (events
        that are not read from a log) no exemplar is recorded.
        """
        if not isinstance(events, list):
            events = list(events)
        self._exemplars.start(positions)
        try:
            self._fold_list(events)
        finally:  # what was folded keeps its exemplars
            self._exemplars.settle()

    def _fold_list(self, events: list[Event]) -> None:
        spec, run, by_class = self._spec, self._run, self._by_class
        i, n = 0, len(events)
        while i < n:
            now, i, counts = run(events, i, self.clock.now, spec)
            self.clock.now = now
            for cls, count in zip(spec.types, counts, strict=True):
                if count:
                    by_class[cls] += count
            # bus messages are only counted; a reset clears what came before it
            self._conductor.add_bus_messages(counts[self._bus_slot])
            if i < n:  # the run stopped at a metrics_reset (counted, its ts read)
                reset = events[i]
                assert isinstance(reset, MetricsReset)
                if now >= self._next_sweep:  # sweeps come first, however the log is batched
                    self._sweep(now)
                self.reset(reset.prefix)
                i += 1
        if self.clock.now >= self._next_sweep:
            self._sweep(self.clock.now)

    def reset(self, prefix: str = "") -> None:
        """Clear every family named ``prefix...`` but ``tally_*`` (what ``metrics_reset`` does)."""
        self._conductor.reset(prefix)
        self._loops.reset(prefix)
        self._metrics.reset(prefix)
        self._otel.reset(prefix)
        self._rules.reset(prefix)

    # -- reading the state ---------------------------------------------------------

    def families(
        self, *, api_requests: Mapping[tuple[str, str], float] | None = None
    ) -> list[AnyFamily]:
        """Every family to render, sorted by name (owned by the projection: render, then fold).

        ``api_requests`` ((method, status) -> count) is added to
        ``conductor_api_requests_total`` for this render only: the server's own
        requests, which are not events.
        """
        self._exemplars.resolve()
        loops: list[AnyFamily] = [*self._loops.families()]
        out: list[AnyFamily] = [
            *self._conductor.families(api_requests),
            *self._metrics.families.values(),
            *self._otel.families.values(),
            *self._rules.families.values(),
        ]
        self._stale = {}
        ttl = self.config.series_ttl_s
        if ttl:
            cutoff = self.clock.now - ttl
            out = [self._visible(f, stale_before(f, cutoff)) for f in out]
            quiet = self._loops.quiet(cutoff)
            if quiet:
                loops = [self._visible(f, lambda labels: labels[0] in quiet) for f in loops]
        out.extend(loops)
        out.extend(self._self_metric_families())
        out.sort(key=_name)
        return out

    def _visible(self, family: AnyFamily, stale: StaleTest) -> AnyFamily:
        """``family`` without its stale series, counted in ``tally_stale_series``."""
        view, hidden = hide_series(family, stale)
        if hidden:
            self._stale[family.name] = float(hidden)
        return view

    def _self_metric_families(self) -> list[Family]:
        values: dict[str, dict[tuple[str, ...], float]] = {
            cat.EVENTS_FOLDED: {(tag,): float(n) for tag, n in self.events_by_type.items()},
            cat.CORRUPT_LINES: {(): float(self.corrupt_lines)},
            cat.UNKNOWN_EVENTS: {(): float(self.unknown_events)},
            cat.REJECTED_EVENTS: {(why,): float(n) for why, n in self.rejected.items()},
            cat.FOLDED_OFFSET: {(): float(self.offset)},
            cat.SERIES_OVERFLOW: {(name,): n for name, n in self.overflow.items()},
            cat.RULE_ERRORS: {(rule,): float(n) for rule, n in self._rules.errors.items()},
            cat.STALE_SERIES: {(name,): n for name, n in self._stale.items()},
        }
        for name, series in values.items():
            family = self._self_metrics[name]
            assert isinstance(family, CounterFamily | GaugeFamily)
            family.values = series
        return list(self._self_metrics.values())

    def rollups(self) -> dict[str, LoopRollup]:
        """Every loop's roll-up (``__overflow__`` collects the loops past the series limit);
        loops whose series are stale (``series_ttl_s``) are left out, as from ``families``."""
        rollups = self._loops.rollups()
        ttl = self.config.series_ttl_s
        if ttl:
            quiet = self._loops.quiet(self.clock.now - ttl)
            rollups = {loop_id: r for loop_id, r in rollups.items() if loop_id not in quiet}
        return rollups

    def loops(self) -> dict[str, dict[str, Any]]:
        """``rollups()`` as JSON-ready dicts (undefined values are ``None``)."""
        return {loop_id: msgspec.to_builtins(r) for loop_id, r in self.rollups().items()}

    # -- state records (snapshots) ------------------------------------------------

    def export_state(self) -> ProjectionState:
        """Everything folded, as records; ``Projection.from_state`` rebuilds an equal projection."""
        self._exemplars.resolve()
        conductor = self._conductor.export_state()
        return ProjectionState(
            offset=self.offset,
            clock=self.clock.now,
            events_by_type=self.events_by_type,
            corrupt_lines=self.corrupt_lines,
            unknown_events=self.unknown_events,
            unknown_types=dict(self.unknown_types),
            rejected=dict(self.rejected),
            overflow=dict(self.overflow),
            **{name: getattr(conductor, name) for name in ConductorState.__struct_fields__},
            loops=self._loops.export_state(),
            custom=self._metrics.export_state(),
            otel=self._otel.export_state(),
            rules=self._rules.export_state(),
        )

    @classmethod
    def from_state(cls, state: ProjectionState, config: ProjectionConfig) -> Projection:
        """A projection equal to the one ``state`` came from; ``ValueError`` if inconsistent."""
        p = cls(config)
        p.offset = state.offset
        p.clock.now = state.clock
        if p._sweep_every:  # a folded state is swept up to its clock
            p._next_sweep = (math.floor(state.clock / p._sweep_every) + 1) * p._sweep_every
        classes = config.schema.classes
        unknown = set(state.events_by_type) - set(classes)
        if unknown:
            raise ValueError(f"unknown event types in state: {sorted(unknown)}")
        for tag, n in state.events_by_type.items():
            p._by_class[classes[tag]] = n
        p.corrupt_lines = state.corrupt_lines
        p.unknown_events = state.unknown_events
        p.unknown_types = dict(state.unknown_types)
        p.rejected.update(state.rejected)
        p.overflow.update(state.overflow)  # the dict every family shares
        p._conductor.restore(
            ConductorState(
                **{name: getattr(state, name) for name in ConductorState.__struct_fields__}
            )
        )
        p._loops.restore(state.loops)
        p._metrics.restore(state.custom)
        p._otel.restore(state.otel)
        p._rules.restore(state.rules, p.clock, p.overflow)
        return p


class _AnyOf(Container[str]):
    """Names held by any of some dicts (read live: the dicts grow as families are created)."""

    def __init__(self, *holders: Mapping[str, object]) -> None:
        self.holders = holders

    def __contains__(self, name: object) -> bool:
        return any(name in holder for holder in self.holders)


def _both(first: Handler, second: Handler) -> Handler:
    """A handler that runs two."""

    def both(ev: Any, now: float) -> None:
        first(ev, now)
        second(ev, now)

    return both


def _dispatch_rank(cls: type[EventBase]) -> int:
    """The commonest events first: the compiled loop finds an event's class by a linear scan."""
    tag = cls.__struct_config__.tag
    return _COMMON.index(tag) if tag in _COMMON else len(_COMMON)


def _name(family: AnyFamily) -> str:
    return family.name
