"""The rules fold: each ``[[rules]]`` entry turns matching events into one family's updates.

Rule: no I/O, no wall clock. The families are built when the fold is (they render,
empty, before any event); a value that cannot be read (missing, not a number) is not
applied and counts in ``errors[rule]`` (``tally_rule_errors_total{rule}``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from bus.events import Attributes, EventBase, OtelLog
from projections.clock import EventClock
from projections.metrics.families import (
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    OverflowCounts,
)
from projections.metrics.state import FamilyState, family_from_state, family_to_state
from projections.rules.spec import Rule

if TYPE_CHECKING:  # the configuration holds the rules
    from projections.config import ProjectionConfig

__all__ = ["RuleFold", "RulesState"]

Handler = Callable[[Any, float], None]


class RulesState(msgspec.Struct, kw_only=True):
    """The fold's state in a snapshot: its families and its error counts."""

    families: list[FamilyState] = []
    errors: dict[str, int] = {}


class RuleFold:
    """The families of ``config.rules``, and a handler per event class they read."""

    def __init__(self, config: ProjectionConfig, overflow: OverflowCounts) -> None:
        self.rules = config.rules
        self.errors: dict[str, int] = {rule.name: 0 for rule in config.rules}
        self.families: dict[str, Family] = {}
        for rule in config.rules:
            if rule.family not in self.families:
                self.families[rule.family] = _family(rule, config, overflow)
        classes = config.schema.classes  # a declared type is an event type like the built-ins
        by_type: dict[str, list[_Plan]] = defaultdict(list)
        self._by_event_name: dict[str, list[_Plan]] = defaultdict(list)
        for rule in config.rules:
            if rule.on in classes:
                by_type[rule.on].append(_plan(rule))
            else:
                self._by_event_name[rule.on].append(_plan(rule))
        self.handlers: dict[type[EventBase], Handler] = {
            classes[tag]: self._typed(rules) for tag, rules in by_type.items()
        }
        if self._by_event_name:
            typed = self.handlers.get(OtelLog)
            logs = self._logs()
            self.handlers[OtelLog] = logs if typed is None else _both(typed, logs)

    def _typed(self, plans: Sequence[_Plan]) -> Handler:
        sinks = (self.families, self.errors)  # updated in place, never replaced

        def apply(ev: Any, now: float) -> None:
            _apply(plans, ev, _NOTHING, _NOTHING, sinks, now=now)

        return apply

    def _logs(self) -> Handler:
        """The handler of ``otel_log``: its event name's plans (a closure: no attribute
        lookups on ``self`` per event)."""
        plans_of = self._by_event_name.get
        sinks = (self.families, self.errors)

        def apply(ev: OtelLog, now: float) -> None:
            plans = plans_of(ev.event_name)
            if plans:
                _apply(plans, ev, ev.attributes, ev.resource, sinks, now=now)

        return apply

    def reset(self, prefix: str) -> None:
        for name, family in self.families.items():
            if name.startswith(prefix):
                family.clear()

    def export_state(self) -> RulesState:
        return RulesState(
            families=[family_to_state(f) for f in self.families.values()],
            errors=dict(self.errors),
        )

    def restore(self, state: RulesState, clock: EventClock, overflow: OverflowCounts) -> None:
        for fstate in state.families:
            if fstate.name not in self.families:
                raise ValueError(f"state: {fstate.name!r} is no rule's family")
            family = family_from_state(fstate, clock=clock, overflow=overflow)
            assert isinstance(family, CounterFamily | GaugeFamily | HistogramFamily)
            self.families[family.name] = family
        self.errors.update(state.errors)


def _apply(
    plans: Sequence[_Plan],
    ev: Any,
    attributes: Attributes,
    resource: Attributes,
    sinks: tuple[dict[str, Family], dict[str, int]],
    *,
    now: float,
) -> None:
    """Each rule of ``plans`` on one event. A field is read from ``attributes``, then
    ``resource`` (an ``otel_log``'s; empty for other events), then the event's own
    fields. The reads are inlined: this loop is the fold's cost per rule. ``sinks``: the
    fold's families and error counts; ``now``: the event clock, stamped on the series."""
    families, errors = sinks
    for name, source, scale, labels, family_name, kind in plans:
        value = 1.0
        if source:  # attribute values are never None: None is "not there"
            raw = attributes.get(source)
            if raw is None:
                raw = resource.get(source)
                if raw is None:
                    raw = getattr(ev, source, None)
            number = _number(raw)
            if number is None:  # missing, or not a number
                errors[name] += 1
                continue
            value = number * scale
        # the label values in the family's order: fixed ones as they are, read ones as text
        values = []
        for read, fixed in labels:
            if read:
                raw = attributes.get(read)
                if raw is None:
                    raw = resource.get(read)
                    if raw is None:
                        raw = getattr(ev, read, None)
                values.append(raw if type(raw) is str else _label(raw))
            else:
                values.append(fixed)
        key = tuple(values)
        family: Any = families[family_name]
        if kind == "counter":
            if value < 0:  # a counter never falls
                errors[name] += 1
            else:  # ``family.inc`` inlined for a series already there
                series = family.values
                current = series.get(key)
                if current is None:
                    family.inc(key, value, now=now)
                else:
                    series[key] = current + value
                    family.touched[key] = now
        elif kind == "histogram":
            family.observe(key, value, now=now)
        else:
            family.set(key, value, now=now)


def _family(rule: Rule, config: ProjectionConfig, overflow: OverflowCounts) -> Family:
    help = rule.help or f"From events by the rule {rule.name}."
    kwargs: dict[str, Any] = {"max_series": config.max_series_per_family, "overflow": overflow}
    match rule.kind:
        case "counter":
            return CounterFamily(rule.family, help, rule.label_names, **kwargs)
        case "gauge":
            return GaugeFamily(rule.family, help, rule.label_names, **kwargs)
        case "histogram":
            bounds = rule.buckets or config.default_buckets
            return HistogramFamily(rule.family, help, rule.label_names, bounds=bounds, **kwargs)


def _both(first: Handler, second: Handler) -> Handler:
    def apply(ev: Any, now: float) -> None:
        first(ev, now)
        second(ev, now)

    return apply


#: A rule ready to apply: (name, value field, scale, labels, family, kind); ``labels``
#: holds, in the family's label order, (field to read, "") or ("", fixed value).
_Plan = tuple[str, str, float, tuple[tuple[str, str], ...], str, str]
#: The attributes of an event that has none (every event but ``otel_log``).
_NOTHING: Final[Attributes] = {}


def _plan(rule: Rule) -> _Plan:
    labels = tuple(
        (rule.labels[n], "") if n in rule.labels else ("", rule.const_labels[n])
        for n in rule.label_names
    )
    return (rule.name, rule.value, rule.scale, labels, rule.family, rule.kind)


def _number(raw: Any) -> float | None:
    """A field's value as a finite number (``true`` is 1, a numeric string its number), or None."""
    kind = type(raw)  # exact types first: the attributes' own (str, int, float, bool)
    if kind is str:
        try:
            value = float(raw)
        except ValueError:
            return None
    elif kind is float or kind is int:
        value = float(raw)
    elif isinstance(raw, bool):
        return 1.0 if raw else 0.0
    elif isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _label(raw: Any) -> str:
    """A field's value as a label value (absent: ``""``)."""
    if type(raw) is str:
        return raw
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return raw if isinstance(raw, str) else str(raw)
