"""Partitioned folds: the log folded twice over, each time for half the event types, merged.

Rule: no I/O. The traffic part (bus messages, API requests, fallbacks, ``metric``
events) and the lifecycle part (runs and Ralph-loop events) share no state but
the clock; the split balances the two folds' cost on the mixed workload. Each
side decodes the other side's lines as *ticks*: structs with the same tag and
only ``ts``, which advance the clock and fold nothing. Both sides fold
``metrics_reset`` (each clears what it holds). So each side's state is exactly
its part of the one-pass fold, and ``merge`` puts the parts together.

Exact only when neither side met a corrupt line: a tick does not check the
fields it skips, so a line the owner rejects may still tick the other clock.
The caller falls back to one pass then (``corrupt_lines`` of either state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from bus.events import EVENT_TYPES, EventBase
from projections.config import ProjectionConfig
from projections.fold import Projection, ProjectionState

__all__ = [
    "LIFECYCLE",
    "PARTS",
    "TRAFFIC",
    "Part",
    "PartFold",
    "merge",
]

_RESET: Final = "metrics_reset"


def _tick(tag: str) -> type[EventBase]:
    """A struct for ``tag`` lines that decodes ``ts`` and skips every other field."""
    cls = msgspec.defstruct(f"Tick_{tag}", [], bases=(EventBase,), tag=tag, frozen=True, gc=False)
    assert issubclass(cls, EventBase)
    return cls


@dataclass(frozen=True, slots=True)
class Part:
    """One side of the partition: the tags it folds, and ticks for the rest."""

    name: str
    owned: frozenset[str]
    ticks: tuple[type[EventBase], ...]
    decoder: msgspec.json.Decoder[Any]

    @classmethod
    def of(cls, name: str, owned: frozenset[str]) -> Part:
        ticks = tuple(_tick(tag) for tag in EVENT_TYPES if tag not in owned)
        classes = [EVENT_TYPES[tag] for tag in EVENT_TYPES if tag in owned]
        union: Any = None
        for member in (*classes, *ticks):
            union = member if union is None else union | member
        return cls(name, owned, ticks, msgspec.json.Decoder(union))


_TRAFFIC_TAGS: Final = frozenset(
    {"bus_message", "api_request", "agent_fallback", "metric", "otel_metric", "otel_log"}
)
TRAFFIC: Final = Part.of("traffic", _TRAFFIC_TAGS | {_RESET})
LIFECYCLE: Final = Part.of("lifecycle", frozenset(EVENT_TYPES) - _TRAFFIC_TAGS)
PARTS: Final = (TRAFFIC, LIFECYCLE)


class PartFold(msgspec.Struct, kw_only=True):
    """One side's fold, as it crosses a process boundary."""

    part: str
    state: ProjectionState


#: The parts of ``ProjectionState`` each event type feeds (the rest is shared).
_FIELDS_OF: Final[dict[str, tuple[str, ...]]] = {
    "run_started": (
        "queued",
        "active",
        "completed",
        "failed",
        "agent_runs",
        "agent_runs_touched",
        "run_durations",
    ),
    "bus_message": ("bus_messages",),
    "api_request": ("api_requests", "api_requests_touched"),
    "agent_fallback": ("fallbacks", "fallbacks_touched"),
    "iteration_completed": ("loops",),
    "metric": ("custom", "rejected"),
    "otel_metric": ("otel",),
}


def merge(
    traffic: ProjectionState, lifecycle: ProjectionState, config: ProjectionConfig
) -> Projection:
    """The one-pass projection of the log both parts were folded from (``ValueError`` if
    they were not folded over the same stretch of it)."""
    if (traffic.offset, traffic.clock) != (lifecycle.offset, lifecycle.clock):
        raise ValueError(
            f"partitions disagree: offset {traffic.offset} / {lifecycle.offset}, "
            f"clock {traffic.clock} / {lifecycle.clock}"
        )
    by_type = {
        tag: n + (0 if tag == _RESET else lifecycle.events_by_type.get(tag, 0))
        for tag, n in traffic.events_by_type.items()
    }
    overflow = dict(traffic.overflow)
    for name, n in lifecycle.overflow.items():
        overflow[name] = overflow.get(name, 0.0) + n
    owned = {
        field: getattr(lifecycle if tag in LIFECYCLE.owned else traffic, field)
        for tag, fields in _FIELDS_OF.items()
        for field in fields
    }
    state = msgspec.structs.replace(traffic, events_by_type=by_type, overflow=overflow, **owned)
    return Projection.from_state(state, config)
