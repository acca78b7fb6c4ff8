"""Families created by ``metric`` events: the first event fixes kind, label names and help.

Rule: no I/O, no wall clock; an event that disagrees with its family (another
kind, other label names) or names a catalogue family is counted and never applied.
"""

from __future__ import annotations

from collections.abc import Container

from bus.events import MetricUpdate
from projections.catalogue import Catalogue
from projections.clock import EventClock
from projections.config import ProjectionConfig
from projections.metrics.families import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    MetricNameError,
    OverflowCounts,
)
from projections.metrics.state import FamilyState, family_from_state, family_to_state
from projections.metrics.summary import AnyFamily, SummaryFamily

__all__ = ["MetricFamilies"]


class MetricFamilies:
    """The families ``metric`` events created, by name; refusals go to ``rejected[reason]``.

    Label names are the sorted keys of the first event's labels; ``op`` None is
    ``set`` for gauges (``inc`` for counters); histograms take the configured
    default buckets, summaries the configured window.
    """

    def __init__(
        self,
        config: ProjectionConfig,
        catalogue: Catalogue,
        clock: EventClock,
        overflow: OverflowCounts,
        rejected: dict[str, int],
        *,
        taken: Container[str] | None = None,
    ) -> None:
        self.config = config
        #: Names of another source's families (OTLP), which ``metric`` events may not use.
        self.taken: Container[str] = () if taken is None else taken
        self.catalogue = catalogue
        self.clock = clock
        self.overflow = overflow
        self.rejected = rejected
        self._max = config.max_series_per_family
        self.families: dict[str, AnyFamily] = {}

    def apply(self, ev: MetricUpdate, now: float) -> None:
        family = self.families.get(ev.name)
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
                    key = tuple(map(labels.__getitem__, names))  # no closure: a fast local
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
                family.inc(key, value, now=now)
            else:
                values[key] = current + value
                family.touched[key] = now
        elif type(family) is GaugeFamily:
            op = ev.op
            if op == "dec":
                value = -value
            values = family.values
            current = values.get(key)
            if current is None:
                if op is None or op == "set":
                    family.set(key, value, now=now)
                else:
                    family.inc(key, value, now=now)
            else:
                values[key] = value if op is None or op == "set" else current + value
                family.touched[key] = now
        elif type(family) is HistogramFamily:
            family.observe(key, value, now=now)
        elif type(family) is SummaryFamily:
            ts = ev.ts
            self.clock.now = now
            family.observe(key, value, now if ts is None else ts, now=now)

    def _create(self, ev: MetricUpdate) -> AnyFamily | None:
        name = ev.name
        if self.catalogue.is_reserved(name):
            self.rejected["reserved_name"] += 1
            return None
        if name in self.taken:
            self.rejected["name_conflict"] += 1
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
        self.families[name] = family
        return family

    def reset(self, prefix: str) -> None:
        """Empty the families named ``prefix...``; they keep their kind and label names."""
        for name, family in self.families.items():
            if name.startswith(prefix):
                family.clear()

    def export_state(self) -> list[FamilyState]:
        return [family_to_state(f) for f in self.families.values()]

    def restore(self, states: list[FamilyState]) -> None:
        for state in states:
            family = family_from_state(state, clock=self.clock, overflow=self.overflow)
            if self.catalogue.is_reserved(family.name):
                raise ValueError(f"state: {family.name!r} is a catalogue name")
            self.families[family.name] = family
