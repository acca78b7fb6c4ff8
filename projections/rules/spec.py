"""A rule (``[[rules]]`` in tally.toml): events of one type, or OTLP log records of one
event name, mapped to a counter, gauge or histogram family.

Rule: declarations only, validated when built; nothing here folds. Each rule reads
fields of the event (for an ``otel_log``: its attributes, then its resource's, then
the record's own fields such as ``body``): ``value`` (absent: 1, counting the event),
times ``scale``, and a label from each field named in ``labels``; ``const_labels``
adds fixed ones. Rules that feed one family must agree on its kind, label names and
buckets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final, Literal

import msgspec

__all__ = ["UNRULED_TYPES", "Rule", "check_rules"]

#: Event types the fold counts on a fast path that rules cannot see.
UNRULED_TYPES: Final = frozenset({"api_request", "bus_message", "metrics_reset"})
_METRIC: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: The rule's name: the ``rule`` label of ``tally_rule_errors_total``.
    name: str
    #: An event type (``run_finished``, or one declared in ``[[event_types]]``), or else an
    #: OTLP log event name
    #: (``claude_code.api_request``: ``otel_log`` events with that ``event_name``).
    on: str
    family: str
    kind: Literal["counter", "gauge", "histogram"]
    #: The field holding the value; ``""``: 1 (a counter counts the events).
    value: str = ""
    scale: float = 1.0
    #: Label name -> the field it is read from (absent: ``""``).
    labels: dict[str, str] = {}
    #: Label name -> a fixed value.
    const_labels: dict[str, str] = {}
    help: str = ""
    #: Histograms: upper bounds (default: ``default_buckets``).
    buckets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not self.name:
            raise ValueError("a rule needs a name")
        if not self.on:
            raise ValueError(f"{where}: on: an event type or an OTLP log event name")
        if self.on in UNRULED_TYPES:
            raise ValueError(f"{where}: on: rules cannot match {self.on} events")
        if not _METRIC.fullmatch(self.family):
            raise ValueError(f"{where}: family: {self.family!r} is not a metric name")
        for label in (*self.labels, *self.const_labels):
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"{where}: {label!r} is not a label name")
        if set(self.labels) & set(self.const_labels):
            raise ValueError(f"{where}: a label is both read and fixed")
        if self.kind == "histogram" and {"le"} & {*self.labels, *self.const_labels}:
            raise ValueError(f"{where}: a histogram may not have the label le")
        if not math.isfinite(self.scale):
            raise ValueError(f"{where}: scale must be a finite number")

    def __hash__(self) -> int:  # dict fields: configurations are cache keys
        return hash((self.name, self.on, self.family, self.kind, self.value, self.scale,
                     tuple(sorted(self.labels.items())), tuple(sorted(self.const_labels.items())),
                     self.help, self.buckets))  # fmt: skip

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(sorted((*self.labels, *self.const_labels)))


def check_rules(rules: Sequence[Rule], reserved: tuple[str, ...]) -> None:
    """Rule names unique, no family a catalogue name, families agreeing; ``ValueError`` if not."""
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError("rules: two rules have the same name")
    shape: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {}
    for rule in rules:
        if rule.family.startswith(reserved):
            raise ValueError(f"rule {rule.name!r}: family {rule.family!r} is a catalogue name")
        mine = (rule.kind, rule.label_names, rule.buckets)
        if shape.setdefault(rule.family, mine) != mine:
            raise ValueError(
                f"rule {rule.name!r}: family {rule.family!r} has another kind, labels or "
                "buckets in an earlier rule"
            )
