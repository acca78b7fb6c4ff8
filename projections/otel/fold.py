"""The OTLP fold: ``otel_metric`` events -> counter, gauge and histogram families.

Rule: no I/O, no wall clock. How a point folds is one table (``_RULES``), keyed by
its kind, monotonicity and temporality; families are named by ``names.metric_name``,
labelled through the ``[otlp]`` allow-list, and refused (counted in
``rejected[reason]``) when their name belongs to the catalogue or to a family of
another source, or a point disagrees with its family (another kind, other bounds).
A family's label names are the union of those its points brought: a new one widens
the family, and series without it hold ``""`` (absent, to Prometheus).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Final, Literal

import msgspec

from bus.events import OtelMetric
from projections.catalogue import EXPONENTIAL_BUCKETS, Catalogue
from projections.clock import EventClock
from projections.config import ProjectionConfig
from projections.metrics.families import (
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    MetricNameError,
    OverflowCounts,
)
from projections.metrics.state import FamilyState, family_from_state, family_to_state
from projections.otel.exponential import explicit_counts
from projections.otel.names import label_name, label_value, metric_name
from projections.otel.streams import Stream, Streams, stream_key

__all__ = ["MAX_LABELS", "OtelFold", "OtelState"]

#: Label names per OTLP family; attributes past them are not labels.
MAX_LABELS: Final = 32

#: What a point does to its family: a counter's increase, a gauge's new value or
#: change, histogram counts; ``delta`` points add as they are, ``cumulative`` ones
#: through their stream (``streams``).
Action = Literal["count", "set", "add", "observe"]
Mode = Literal["delta", "cumulative", "none"]


class _Rule(msgspec.Struct, frozen=True):
    family: Literal["counter", "gauge", "histogram"]
    action: Action
    mode: Mode


_RULES: Final[dict[tuple[str, bool, str], _Rule]] = {
    # (kind, monotonic, temporality): unspecified temporality folds as cumulative,
    # which also counts a delta stream right (each delta point starts anew).
    **{
        ("sum", True, t): _Rule("counter", "count", "cumulative")
        for t in ("cumulative", "unspecified")
    },
    ("sum", True, "delta"): _Rule("counter", "count", "delta"),
    **{
        ("sum", False, t): _Rule("gauge", "add", "cumulative")
        for t in ("cumulative", "unspecified")
    },
    ("sum", False, "delta"): _Rule("gauge", "add", "delta"),
    **{
        ("gauge", m, t): _Rule("gauge", "set", "none")
        for m in (True, False)
        for t in ("delta", "cumulative", "unspecified")
    },
    **{
        (k, m, t): _Rule("histogram", "observe", "delta" if t == "delta" else "cumulative")
        for k in ("histogram", "exponential_histogram")
        for m in (True, False)
        for t in ("delta", "cumulative", "unspecified")
    },
}


class OtelState(msgspec.Struct, kw_only=True):
    """The fold's state in a snapshot: its families, and its cumulative streams in order."""

    families: list[FamilyState] = []
    streams: dict[str, Stream] = {}


class OtelFold:
    """The families OTLP data points feed, by Prometheus name.

    ``taken`` holds the names of another source's families (``metric`` events): an
    OTLP family may not use them (``rejected["name_conflict"]``), nor the reverse.
    """

    def __init__(
        self,
        config: ProjectionConfig,
        catalogue: Catalogue,
        overflow: OverflowCounts,
        rejected: dict[str, int],
        *,
        taken: Container[str],
        clock: EventClock,
    ) -> None:
        self.clock = clock
        self.settings = config.otlp
        self.catalogue = catalogue
        self.overflow = overflow
        self.rejected = rejected
        self.taken = taken
        self._max = config.max_series_per_family
        self.families: dict[str, Family] = {}
        self.streams = Streams(config.otlp.max_streams)
        self._drop = frozenset(config.otlp.drop_attributes)
        #: (OTel name, unit, kind, monotonic) -> Prometheus name.
        self._names: dict[tuple[str, str, str, bool], str] = {}

    def apply(self, ev: OtelMetric, now: float) -> None:
        rule = _RULES[(ev.kind, ev.monotonic, ev.temporality)]
        family = self._family(ev, rule)
        if family is None:
            return
        labels = self._labels(ev, family)
        if labels is None:
            return
        key = tuple(labels.get(n, "") for n in family.label_names)
        if isinstance(family, HistogramFamily):
            self._observe(ev, rule, family, key, now)
            return
        value = ev.value if ev.value is not None else 0.0
        if rule.action == "set":
            assert isinstance(family, GaugeFamily)
            family.set(key, value, now=now)
            return
        if rule.mode == "cumulative":
            value = self.streams.sum_increase(
                self._stream(ev),
                ev.start_time_unix_nano,
                ev.time_unix_nano,
                value,
                monotonic=rule.action == "count",
            )
        elif rule.action == "count" and value < 0:
            self.rejected["invalid_point"] += 1
            return
        family.inc(key, value, now=now)

    def _observe(
        self,
        ev: OtelMetric,
        rule: _Rule,
        family: HistogramFamily,
        key: tuple[str, ...],
        now: float,
    ) -> None:
        if ev.kind == "exponential_histogram":
            counts = explicit_counts(
                ev.scale,
                ev.zero_count,
                ev.positive_offset,
                ev.positive_counts,
                sum(ev.negative_counts),
            )
        else:
            counts = ev.counts or [0] * (len(family.bounds) + 1)
        total = ev.sum if ev.sum is not None else 0.0
        if rule.mode == "cumulative":
            added = self.streams.histogram_increase(
                self._stream(ev),
                ev.start_time_unix_nano,
                ev.time_unix_nano,
                (counts, total, ev.count),
            )
            if added is None:
                return
            counts, total, count = added
        else:
            count = ev.count
        family.add(key, counts, total, count, now=now)

    @staticmethod
    def _stream(ev: OtelMetric) -> str:
        return stream_key(ev.name, ev.scope, ev.resource, ev.attributes)

    # -- families and labels ---------------------------------------------------------

    def _family(self, ev: OtelMetric, rule: _Rule) -> Family | None:
        ident = (ev.name, ev.unit, rule.family, ev.monotonic)
        name = self._names.get(ident)
        if name is None:
            name = metric_name(
                ev.name, ev.unit, counter=rule.family == "counter", gauge=rule.family == "gauge"
            )
            self._names[ident] = name
        family = self.families.get(name)
        if family is None:
            return self._create(name, ev, rule)
        if family.kind != rule.family:
            self.rejected["kind_conflict"] += 1
            return None
        if (
            isinstance(family, HistogramFamily)
            and ev.kind == "histogram"
            and tuple(ev.bounds) != family.bounds
        ):
            self.rejected["bounds_conflict"] += 1
            return None
        return family

    def _create(self, name: str, ev: OtelMetric, rule: _Rule) -> Family | None:
        if self.catalogue.is_reserved(name):
            self.rejected["reserved_name"] += 1
            return None
        if name in self.taken:
            self.rejected["name_conflict"] += 1
            return None
        help = ev.description or f"OpenTelemetry metric {ev.name}."
        family: Family
        try:
            match rule.family:
                case "counter":
                    family = CounterFamily(name, help, max_series=self._max, overflow=self.overflow)
                case "gauge":
                    family = GaugeFamily(name, help, max_series=self._max, overflow=self.overflow)
                case "histogram":
                    bounds = ev.bounds if ev.kind == "histogram" else EXPONENTIAL_BUCKETS
                    family = HistogramFamily(
                        name, help, bounds=bounds, max_series=self._max, overflow=self.overflow
                    )
        except (MetricNameError, ValueError):
            self.rejected["invalid_family"] += 1
            return None
        self.families[name] = family
        return family

    def _labels(self, ev: OtelMetric, family: Family) -> dict[str, str] | None:
        """The point's labels (allow-listed attributes); the family is widened to hold them."""
        allow = self.settings.labels.get(ev.name)
        labels: dict[str, str] = {}
        if allow is not None:
            for attr in allow:
                value = ev.attributes.get(attr, ev.resource.get(attr))
                if value is not None:
                    labels[label_name(attr)] = label_value(value)
        else:
            drop = self._drop
            for attr, value in ev.attributes.items():
                if attr not in drop:
                    labels[label_name(attr)] = label_value(value)
            for attr in self.settings.resource_attributes:
                value = ev.resource.get(attr)
                if value is not None:
                    labels.setdefault(label_name(attr), label_value(value))
        if isinstance(family, HistogramFamily):
            labels.pop("le", None)
        known = family.label_names
        extra = [n for n in labels if n not in known]
        if extra:
            room = MAX_LABELS - len(known)
            for n in extra[max(room, 0) :]:
                del labels[n]  # past the label limit: dropped
            if room > 0:
                _widen(family, tuple(sorted((*known, *extra[:room]))))
        return labels

    # -- resets and snapshots ----------------------------------------------------------

    def reset(self, prefix: str) -> None:
        """Empty the families named ``prefix...``; cumulative streams are kept, so a resend
        after a reset adds only what is new."""
        for name, family in self.families.items():
            if name.startswith(prefix):
                family.clear()

    def export_state(self) -> OtelState:
        return OtelState(
            families=[family_to_state(f) for f in self.families.values()],
            streams=self.streams.export_state(),
        )

    def restore(self, state: OtelState) -> None:
        for fstate in state.families:
            family = family_from_state(fstate, clock=self.clock, overflow=self.overflow)
            if not isinstance(family, CounterFamily | GaugeFamily | HistogramFamily):
                raise ValueError(f"state: OTLP family {family.name!r} is a {family.kind}")
            if self.catalogue.is_reserved(family.name):
                raise ValueError(f"state: {family.name!r} is a catalogue name")
            self.families[family.name] = family
        self.streams.restore(state.streams)


def _widen(family: Family, names: tuple[str, ...]) -> None:
    """Give ``family`` the label names ``names`` (a superset); existing series get ``""``."""
    where = [names.index(n) for n in family.label_names]

    def rekey(old: tuple[str, ...]) -> tuple[str, ...]:
        new = [""] * len(names)
        for i, value in zip(where, old, strict=True):
            new[i] = value
        return tuple(new)

    if isinstance(family, HistogramFamily):
        family.series = {rekey(k): v for k, v in family.series.items()}
    else:
        family.values = {rekey(k): v for k, v in family.values.items()}
    family.touched = {rekey(k): t for k, t in family.touched.items()}
    family.label_names = names
