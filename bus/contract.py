"""The bus contract: what every backend of the log does, and nothing above ``bus/`` knows more.

Rule: positions are opaque, strictly increasing integers, one per event; a batch's
``end`` is where a reader resumes (a checkpoint stores it). An append lands whole
or not at all and answers with the positions of its events; the same ``msg_id``
appended twice within the backend's de-duplication window lands once, and the
second answer gives the first one's positions.

Two backends implement it: the segmented JSONL files (``bus.filebus``, the
embedded default) and NATS JetStream (``bus.jetstream``). ``open_bus`` picks one
by URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from bus.config import BusConfig
from bus.errors import BusError
from bus.events import Event
from bus.filebus import FileBus
from bus.lines import Batch, ReadStats
from bus.segments import bus_dir

__all__ = ["Bus", "open_bus"]


class Bus(Protocol):
    """One log, appended to and read by position; an async context manager that closes it."""

    #: Where the log is, as a URL (``file:/path/to/bus``, ``nats://host:port/STREAM``).
    url: str
    #: Running totals over everything this bus object has read (corrupt lines, unknown types).
    stats: ReadStats

    async def append(self, events: Sequence[Event], *, msg_id: str | None = None) -> list[int]:
        """Append ``events`` as one batch, all or nothing; the positions of the events."""
        ...

    async def append_encoded(
        self, data: bytes, count: int, *, msg_id: str | None = None
    ) -> list[int]:
        """Append ``count`` events already encoded as JSONL (``encode_events``); their positions."""
        ...

    def read(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        decoder: msgspec.json.Decoder[Any] | None = None,
    ) -> AsyncIterator[Batch]:
        """Batches of the events from ``start`` (a batch's ``end`` or an event's position) on.

        Stops at the end of the log as it is now, or before the first event at or
        past ``end``. ``decoder`` replaces the ``Event`` decoder (a partitioned
        replay decodes some types to their ``ts`` only).
        """
        ...

    def follow(self, start: int = 0) -> AsyncIterator[Batch]:
        """Batches from ``start`` on, forever: the backlog, then each append as it lands."""
        ...

    async def end(self) -> int:
        """The position after the last event (where a reader that read everything resumes)."""
        ...

    async def first(self) -> int:
        """The position of the oldest event still held (retention may have removed older ones)."""
        ...

    async def size(self) -> int:
        """Bytes the log holds now (what a full read costs, roughly; message overhead included)."""
        ...

    async def identity(self, position: int) -> str:
        """A digest that stays the same while the log only grows past ``position`` (or is cut
        before it by ``drop_before``).

        A checkpoint taken at ``position`` is trusted only while its identity
        still matches: a replaced, rewritten or re-created log gives another one.
        """
        ...

    async def cut_point(self, position: int) -> int:
        """The highest position at or before ``position`` where ``drop_before`` can cut the log
        (a segment's or a message's start; the first position held if none is)."""
        ...

    async def drop_before(self, position: int) -> list[str]:
        """Remove what the log holds wholly before ``position`` (never its newest segment or
        message) and name what went: retention's cut, taken after a base snapshot is written."""
        ...

    async def sync(self) -> None:
        """Make every acknowledged append durable (as far as the backend can)."""
        ...

    async def aclose(self) -> None:
        """Release the bus: locks, files, connections. Appends after this fail."""
        ...

    async def __aenter__(self) -> Bus: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


def open_bus(url: str | None, data_dir: Path, config: BusConfig) -> Bus:
    """The bus at ``url``: ``None`` or ``file:PATH`` (files; default ``<data_dir>/bus``) or
    ``nats://HOST:PORT[,HOST:PORT…]/STREAM`` (JetStream). Corrupt lines are quarantined
    in ``data_dir``.

    Nothing is opened yet: the file bus creates its files on the first append, the
    JetStream bus connects on ``__aenter__`` (or its first use).
    """
    if url is None or url in ("file:", "file://"):
        return FileBus(bus_dir(data_dir), data_dir, config)
    if url.startswith("file:"):
        path = url.removeprefix("file://") if url.startswith("file://") else url[5:]
        return FileBus(Path(path), data_dir, config)
    if url.startswith("nats://"):
        try:
            import nats  # noqa: F401, PLC0415 - the extra is optional
        except ImportError:
            raise BusError(
                f"the bus {url} needs the NATS client: pip install 'tally[nats]'"
            ) from None
        from bus.jetstream import JetStreamBus  # noqa: PLC0415 - imports nats

        return JetStreamBus(url, data_dir, config)
    raise BusError(f"unknown bus URL {url!r}: expected file:PATH or nats://HOST:PORT/STREAM")
