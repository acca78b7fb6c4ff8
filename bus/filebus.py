"""The bus contract on the segmented JSONL files: ``BusWriter``, ``BusReader`` and ``follow``.

Rule: a position is a global byte offset; the writer (and so ``bus/LOCK`` and the
directories) comes into being on the first append only, so read-only commands
leave the data directory as they found it. An append's blocking I/O runs in a
worker thread; reads run on the event loop and yield to it between batches once
``YIELD_EVERY_S`` of work went by since the last time (a replay, which has nothing
else to run, pays for a loop iteration every few milliseconds, not every 64 KiB).

De-duplication (``msg_id``) is ``BusWriter``'s, under its flock: see
``bus.writer`` for what a crash or a power loss between a batch and its id
record can do (at worst, a retry after a power loss appends the batch twice).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final, Self

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from bus.config import DEFAULT_CONFIG, BusConfig
from bus.errors import BusError
from bus.events import Event
from bus.follower import follow
from bus.lines import Batch, ReadStats
from bus.reader import BusReader
from bus.retention import HEAD_BYTES, TAIL_BYTES, cut_point, drop_before, held_bytes
from bus.segments import list_segments
from bus.writer import BusWriter

__all__ = ["FileBus", "file_identity"]

#: A read yields to the event loop between batches once this much time went by.
YIELD_EVERY_S: Final = 0.005


def file_identity(bus: Path, offset: int) -> str:
    """A digest of the log's first bytes and of the bytes just before ``offset``.

    Two logs agree on it when one is the other grown by appends, or cut by
    retention (``bus.retention`` keeps the bytes it reads in ``bus/CUT``); a
    replaced, rewritten or truncated log (or one shorter than ``offset``) does not.
    """
    digest = hashlib.sha256()
    digest.update(held_bytes(bus, 0, min(offset, HEAD_BYTES)))
    tail = held_bytes(bus, max(0, offset - TAIL_BYTES), offset)
    digest.update(len(tail).to_bytes(8, "big"))
    digest.update(tail)
    return f"{offset}:{digest.hexdigest()[:32]}"


class FileBus:
    """The log in the directory ``bus``; corrupt lines go to ``<data_dir>/quarantine.jsonl``."""

    def __init__(
        self,
        bus: Path,
        data_dir: Path,
        config: BusConfig = DEFAULT_CONFIG,
        *,
        poll_interval: float = 0.01,
    ) -> None:
        self.bus = bus
        self.data_dir = data_dir
        self.config = config
        self.poll_interval = poll_interval
        self.url = f"file:{bus}"
        self.stats = ReadStats()
        self._writer: BusWriter | None = None
        self._writer_lock = threading.Lock()
        self._closed = False

    # -- appending -------------------------------------------------------------

    async def append(self, events: Sequence[Event], *, msg_id: str | None = None) -> list[int]:
        """Append ``events`` as one batch, all or nothing; the positions of the events."""
        self._check_open()
        if not events:
            return []
        return await anyio.to_thread.run_sync(self._append, list(events), msg_id)

    async def append_encoded(
        self, data: bytes, count: int, *, msg_id: str | None = None
    ) -> list[int]:
        """Append ``count`` events already encoded as JSONL; their positions."""
        self._check_open()
        if not data and not count:
            return []
        return await anyio.to_thread.run_sync(self._append_encoded, data, count, msg_id)

    def _append(self, events: list[Event], msg_id: str | None) -> list[int]:
        return self._open_writer().append(events, msg_id=msg_id)

    def _append_encoded(self, data: bytes, count: int, msg_id: str | None) -> list[int]:
        return self._open_writer().append_encoded(data, count, msg_id=msg_id)

    def _open_writer(self) -> BusWriter:
        with self._writer_lock:
            self._check_open()
            if self._writer is None:
                self._writer = BusWriter(self.data_dir, self.config, bus=self.bus)
            return self._writer

    # -- reading ---------------------------------------------------------------

    def _reader(self, decoder: msgspec.json.Decoder[Any] | None = None) -> BusReader:
        schema = self.config.schema
        if decoder is None and schema.decls:  # declared types: their union (else the built-in)
            decoder = schema.decoder
        return BusReader(
            self.data_dir, bus=self.bus, decoder=decoder, stats=self.stats, known=schema.classes
        )

    async def read(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        decoder: msgspec.json.Decoder[Any] | None = None,
    ) -> AsyncIterator[Batch]:
        """Batches from ``start`` to the end of the log as it is now (or before ``end``)."""
        self._check_open()
        await anyio.lowlevel.checkpoint()
        last = time.monotonic()
        for batch in self._reader(decoder).read_from(start, end):
            yield batch
            if time.monotonic() - last >= YIELD_EVERY_S:
                await anyio.lowlevel.checkpoint()
                last = time.monotonic()

    async def follow(self, start: int = 0) -> AsyncIterator[Batch]:
        """Batches from ``start`` on, forever: the backlog, then each append as it lands."""
        self._check_open()
        reader = self._reader()
        async for batch in follow(
            self.data_dir, start, poll_interval=self.poll_interval, reader=reader
        ):
            yield batch

    async def end(self) -> int:
        """The offset after the last complete line."""
        return self._reader().end_offset()

    async def first(self) -> int:
        """The base of the first segment (0 for an empty log)."""
        segments = list_segments(self.bus)
        return segments[0].base if segments else 0

    async def size(self) -> int:
        """The segments' total size."""
        return sum(seg.size for seg in list_segments(self.bus))

    async def identity(self, position: int) -> str:
        """``file_identity`` of the log at ``position``."""
        return file_identity(self.bus, position)

    # -- retention -------------------------------------------------------------

    async def cut_point(self, position: int) -> int:
        """The highest segment base at or before ``position``: where ``drop_before`` can cut."""
        return cut_point([seg.base for seg in list_segments(self.bus)], position)

    async def drop_before(self, position: int) -> list[str]:
        """Remove the segments wholly before ``position`` (never the last); their names.

        With ``[bus] archive_dir`` they are moved there instead.
        """
        self._check_open()
        archive = Path(self.config.archive_dir) if self.config.archive_dir else None
        removed = await anyio.to_thread.run_sync(
            lambda: drop_before(self.bus, position, archive=archive)
        )
        return [seg.path.name for seg in removed]

    # -- lifetime --------------------------------------------------------------

    async def sync(self) -> None:
        """``fdatasync`` what this bus appended (nothing to do if it never appended)."""
        writer = self._writer
        if writer is not None:
            await anyio.to_thread.run_sync(writer.sync)

    async def aclose(self) -> None:
        """Close the writer (syncing it, unless durability is ``never``); idempotent."""
        with self._writer_lock:
            self._closed = True
            writer, self._writer = self._writer, None
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(writer.close)

    def _check_open(self) -> None:
        if self._closed:
            raise BusError(f"the bus {self.url} is closed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"FileBus({self.url!r})"
