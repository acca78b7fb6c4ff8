"""The ``[bus]`` table of ``tally.toml``: which log, and how each backend keeps it.

Rule: plain frozen values, validated on decode; nothing here opens anything.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from bus.user_types import EventSchema, EventTypeDecl, event_schema

__all__ = ["DEFAULT_CONFIG", "BusConfig", "Discard", "Durability", "JetStreamConfig"]

Durability = Literal["never", "interval", "always"]
#: What a JetStream stream at its limits does: drop its oldest messages, or refuse new ones.
Discard = Literal["old", "new"]

_MIB: Final = 1 << 20


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
    """

    url: str | None = None
    segment_bytes: Annotated[int, msgspec.Meta(gt=0)] = 256 * _MIB
    durability: Durability = "interval"
    fsync_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    dedup_window_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    nats: JetStreamConfig = msgspec.field(default_factory=JetStreamConfig)
    event_types: tuple[EventTypeDecl, ...] = ()

    @property
    def schema(self) -> EventSchema:
        """The event classes of this log: the built-ins and ``event_types``."""
        return event_schema(self.event_types)


#: The default configuration (a module-level value, so it is built once).
DEFAULT_CONFIG: Final = BusConfig()
