"""The rules fold: each ``[[rules]]`` entry turns matching events into one family's updates.

Rule: no I/O, no wall clock. The families are built when the fold is (they render,
empty, before any event); a value that cannot be read (missing, not a number) is not
applied and counts in ``errors[rule]`` (``tally_rule_errors_total{rule}``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from bus.events import EventBase, OtelLog
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
        by_type: dict[str, list[Rule]] = defaultdict(list)
        self._by_event_name: dict[str, list[Rule]] = defaultdict(list)
        for rule in config.rules:
            if rule.on in classes:
                by_type[rule.on].append(rule)
            else:
                self._by_event_name[rule.on].append(rule)
        self.handlers: dict[type[EventBase], Handler] = {
            classes[tag]: self._typed(rules) for tag, rules in by_type.items()
        }
        if self._by_event_name:
            typed = self.handlers.get(OtelLog)
            self.handlers[OtelLog] = self._logs if typed is None else _both(typed, self._logs)

    def _typed(self, rules: Sequence[Rule]) -> Handler:
        def apply(ev: Any, now: float) -> None:
            for rule in rules:
                self._apply(rule, ev, _field_of(ev))

        return apply

    def _logs(self, ev: OtelLog, now: float) -> None:
        rules = self._by_event_name.get(ev.event_name)
        if rules:
            for rule in rules:
                self._apply(rule, ev, _log_field_of(ev))

    def _apply(self, rule: Rule, ev: Any, field: Callable[[str], Any]) -> None:
        value = 1.0
        if rule.value:
            number = _number(field(rule.value))
            if number is None:  # missing, or not a number
                self.errors[rule.name] += 1
                return
            value = number * rule.scale
        labels = dict(rule.const_labels)
        for label, source in rule.labels.items():
            raw = field(source)
            labels[label] = "" if raw is None else _text(raw)
        family = self.families[rule.family]
        key = tuple(labels[n] for n in family.label_names)
        if isinstance(family, HistogramFamily):
            family.observe(key, value)
        elif isinstance(family, GaugeFamily):
            family.set(key, value)
        elif value < 0:  # a counter never falls
            self.errors[rule.name] += 1
        else:
            family.inc(key, value)

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


def _field_of(ev: Any) -> Callable[[str], Any]:
    return lambda name: getattr(ev, name, None)


def _log_field_of(ev: OtelLog) -> Callable[[str], Any]:
    def field(name: str) -> Any:
        if name in ev.attributes:
            return ev.attributes[name]
        if name in ev.resource:
            return ev.resource[name]
        return getattr(ev, name, None)

    return field


def _number(raw: Any) -> float | None:
    """A field's value as a finite number (``true`` is 1, a numeric string its number), or None."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return raw if isinstance(raw, str) else str(raw)
