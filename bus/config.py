"""The ``[bus]`` table of ``tally.toml``: which log, and how each backend keeps it.

Rule: plain frozen values, validated on decode; nothing here opens anything.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

import msgspec

from bus.user_types import EventSchema, EventTypeDecl, event_schema

__all__ = [
    "DEFAULT_CONFIG",
    "BusConfig",
    "Discard",
    "Durability",
    "JetStreamConfig",
    "duration_seconds",
]

Durability = Literal["never", "interval", "always"]
#: What a JetStream stream at its limits does: drop its oldest messages, or refuse new ones.
Discard = Literal["old", "new"]

_MIB: Final = 1 << 20
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)?")


def duration_seconds(text: str) -> float | None:
    """Seconds in ``"250ms"``, ``"30s"``, ``"1m"``, ``"1.5h"``, ``"2d"``, ``"1w"`` or ``"30"``;
    ``None`` if ``text`` is not a duration."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


class JetStreamConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[bus.nats]`` table: the stream tally creates when it is missing, and timeouts.

    ``max_bytes`` and ``max_age_s`` are the stream's retention limits (``-1`` and
    ``0``: none); ``discard`` is what the stream does at ``max_bytes``: ``old`` drops
    its oldest messages (retention), ``new`` refuses the append (a full bus, ``BusFull``).
    An existing stream keeps its own configuration.
    """

    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    max_bytes: Annotated[int, msgspec.Meta(ge=-1)] = -1
    max_age_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    discard: Discard = "old"
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0


class BusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[bus]`` table of ``tally.toml``.

    ``url`` picks the backend (``file:PATH`` or ``nats://HOST:PORT[,HOST:PORT…]/STREAM``; unset:
    the files in ``<data-dir>/bus``). ``dedup_window_s`` is how long an append's
    ``msg_id`` is remembered on the file bus (JetStream's own default is also 120 s;
    a stream tally creates gets this window too). ``event_types`` are the declared
    types its readers decode (set from ``[[event_types]]`` in tally.toml).

    Retention of the file bus (``bus.retention``; JetStream keeps its stream's own
    limits, ``[bus.nats]``): ``retain_bytes`` keeps at least that many bytes of the
    log, ``retain_age`` (a duration, ``"7d"``, or seconds) the events younger than
    that in event time, behind the newest event's ``ts``; a running server cuts
    after each checkpoint. ``archive_dir`` receives the removed segments instead of
    deleting them.
    """

    url: str | None = None
    segment_bytes: Annotated[int, msgspec.Meta(gt=0)] = 256 * _MIB
    durability: Durability = "interval"
    fsync_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    dedup_window_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    nats: JetStreamConfig = msgspec.field(default_factory=JetStreamConfig)
    event_types: tuple[EventTypeDecl, ...] = ()
    retain_bytes: Annotated[int, msgspec.Meta(gt=0)] | None = None
    retain_age: str | Annotated[float, msgspec.Meta(gt=0)] | None = None
    archive_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.retain_age, str) and not self.retain_age_s:
            raise ValueError(
                f"retain_age: {self.retain_age!r} is not a positive duration "
                "(a number and a unit: ms, s, m, h, d, w; like 7d)"
            )
        if self.archive_dir == "":
            raise ValueError("archive_dir: must not be empty")

    @property
    def retain_age_s(self) -> float | None:
        """``retain_age`` in seconds (``None``: no age limit)."""
        if isinstance(self.retain_age, str):
            return duration_seconds(self.retain_age)
        return self.retain_age

    @property
    def schema(self) -> EventSchema:
        """The event classes of this log: the built-ins and ``event_types``."""
        return event_schema(self.event_types)


#: The default configuration (a module-level value, so it is built once).
DEFAULT_CONFIG: Final = BusConfig()
