"""The spool: events bound for a remote tally, kept on disk until it acknowledged them.

Rule: one JSONL file of batches, each ``{"id": ..., "events": [...]}``, appended in
order; a batch's id is fixed when it is spooled and is its ``Idempotency-Key`` on
every attempt, in this process or the next one. ``<spool>.offset`` holds the byte
offset up to which batches were acknowledged (replaced atomically after each one);
when every batch is acknowledged the file is emptied. A torn last line (a crash
mid-append) is cut off when the spool is opened. One process holds a spool at a
time (``flock``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from bus.errors import TallyError
from bus.events import Event
from server.atomic import write_atomically

__all__ = ["Spool", "SpoolBatch", "SpoolBusy", "SpoolStats", "new_batch"]

_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


class SpoolBusy(TallyError):
    """Raised when another process holds the spool file this loop would write to."""


class SpoolBatch(msgspec.Struct, frozen=True):
    """One batch as spooled: its idempotency key and its events, ``ts`` stamped."""

    id: str
    events: list[Event]


def new_batch(events: list[Event]) -> SpoolBatch:
    return SpoolBatch(id=uuid.uuid4().hex, events=events)


@dataclass(frozen=True)
class SpoolStats:
    """What is waiting in the spool."""

    batches: int
    events: int


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(SpoolBatch)


class Spool:
    """The spool file at ``path``: ``append`` at the end, ``peek`` and ``ack`` at the head."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cursor_path = path.with_name(path.name + ".offset")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, _FLAGS, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SpoolBusy(f"another process is using the spool {path}") from None
            raise
        self._lock = threading.Lock()
        self._cut_torn_tail()
        self._head = self._read_cursor()
        # (end offset, batch) of every batch not yet acknowledged, in order
        self._pending: deque[tuple[int, SpoolBatch]] = deque(self._scan(self._head))

    # -- opening -------------------------------------------------------------------

    def _size(self) -> int:
        return os.fstat(self._fd).st_size

    def _cut_torn_tail(self) -> None:
        size = self._size()
        if size == 0:
            return
        tail = os.pread(self._fd, min(size, 1 << 20), max(size - (1 << 20), 0))
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = max(size - (1 << 20), 0) + cut + 1 if cut >= 0 else 0
        os.ftruncate(self._fd, keep)

    def _read_cursor(self) -> int:
        try:
            head = int(self._cursor_path.read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            return 0
        return head if 0 <= head <= self._size() else 0  # beyond the end: emptied since

    def _scan(self, start: int) -> list[tuple[int, SpoolBatch]]:
        data = os.pread(self._fd, self._size() - start, start)
        out = []
        offset = start
        for line in data.splitlines(keepends=True):
            offset += len(line)
            try:
                out.append((offset, _decoder.decode(line)))
            except msgspec.MsgspecError as exc:
                sys.stderr.write(f"tally loop: {self.path}: skipping a bad spooled batch: {exc}\n")
        return out

    # -- the tail: spooling ---------------------------------------------------------

    def append(self, batch: SpoolBatch) -> None:
        line = _encoder.encode(batch) + b"\n"
        with self._lock:
            start = self._size()
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            self._pending.append((start + len(line), batch))

    # -- the head: delivery ----------------------------------------------------------

    def peek(self) -> SpoolBatch | None:
        """The oldest batch not yet acknowledged."""
        with self._lock:
            return self._pending[0][1] if self._pending else None

    def ack(self, batch: SpoolBatch) -> None:
        """The remote end took ``batch`` (the one ``peek`` gave): drop it from the spool."""
        with self._lock:
            if self._fd < 0:  # closed while this batch was on its way: it is sent again
                return
            if not self._pending or self._pending[0][1].id != batch.id:
                raise ValueError(f"batch {batch.id} is not at the head of the spool")
            end, _ = self._pending.popleft()
            if not self._pending:  # all delivered: start over with an empty file
                os.ftruncate(self._fd, 0)
                end = 0
            write_atomically(self._cursor_path, f"{end}\n".encode())
            self._head = end

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(
                batches=len(self._pending), events=sum(len(b.events) for _, b in self._pending)
            )

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
