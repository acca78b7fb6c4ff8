"""Appending to the log: one ``os.write`` per batch under ``flock(bus/LOCK)``.

Rule: a batch lands whole, in one segment, after a complete line; only the
holder of the lock writes or rotates. A segment is closed once it has reached
``segment_bytes``, so it may exceed that by one batch.

What an acknowledged append (``append`` returned) survives, by ``durability``:

==========  ===================================  ===========================================
durability  process crash (SIGKILL, OOM, panic)  power loss or kernel crash
==========  ===================================  ===========================================
never       nothing lost: the kernel has it      what the kernel happened to flush
interval    nothing lost                         up to about ``fsync_interval_s`` of events
always      nothing lost                         nothing (``fdatasync`` before returning)
==========  ===================================  ===========================================

``interval`` syncs after an append once ``fsync_interval_s`` has passed since the
previous sync, and on ``sync()`` and ``close()``; a long-lived process with idle
periods (the server) should also call ``sync()`` on a timer so the last events
of a burst do not wait for the next append.

An append with a ``msg_id`` is de-duplicated through ``bus/MSGIDS``
(``bus.dedup``): under the flock, an id seen within ``dedup_window_s`` whose
bytes are still in the log appends nothing and answers the first append's
offsets (read back from the log). The id's record is written before the batch,
with a CRC-32 of the batch, so a crash between the two leaves a record that
matches nothing, never a batch without its record. Under ``always`` the record
is ``fdatasync``ed before the batch is written; under ``interval`` and
``never`` a power loss may keep a batch and lose its record, and a retry after
it appends the batch again.

A failed append (``ENOSPC``, ``EDQUOT``, ``EIO``, a short write) leaves no byte
of its batch in the log: still under the flock, the segment is truncated back
to its size before the write, then ``BusFull`` (device or quota full) or
``BusError`` is raised. Its de-dup record, already written, names bytes that
are not there and so matches nothing: a retry with the same ``msg_id`` appends.
Nothing acknowledged is touched, and the next append after space returns works.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from bus.config import DEFAULT_CONFIG, BusConfig, Durability
from bus.dedup import IdRecord, RecentIds
from bus.errors import BusError, BusFull
from bus.events import Event, encode_events, stamp
from bus.segments import bus_dir, list_segments, lock_path, segment_name

__all__ = ["DEFAULT_CONFIG", "BusConfig", "BusWriter", "Durability", "line_offsets"]

_SEGMENT_FLAGS: Final = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _line_lengths(data: bytes) -> list[int]:
    """Length of each ``\\n``-terminated line of ``data``, without its ``\\n``."""
    lengths = list(map(len, data.split(b"\n")))
    lengths.pop()  # the empty piece after the last "\n" (or an unterminated tail)
    return lengths


def _offsets(lengths: list[int], start: int) -> list[int]:
    offsets = list(accumulate(map(add, lengths, repeat(1)), initial=start))
    offsets.pop()  # the end of the last line
    return offsets


def line_offsets(data: bytes, start: int) -> list[int]:
    """Global offset of each ``\\n``-terminated line of ``data`` written at ``start``."""
    return _offsets(_line_lengths(data), start)


def _bus_error(message: str, exc: OSError, after: str = "") -> BusError:
    """``BusFull`` when the device or quota is full, else ``BusError``: ``message: exc after``."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return (BusFull if full else BusError)(f"{message}: {exc}{after}")


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare for regular files; loop on what is left
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


class BusWriter:
    """Appends batches of events to the log in ``data_dir``; safe across threads and processes.

    Each process (or component) opens its own writer; all of them serialise on
    ``flock(bus/LOCK)``, so concurrent batches never interleave. ``bus`` is the
    segments' directory when it is not ``<data_dir>/bus``.
    """

    def __init__(
        self, data_dir: Path, config: BusConfig = DEFAULT_CONFIG, *, bus: Path | None = None
    ) -> None:
        self.config = config
        self._bus = bus if bus is not None else bus_dir(data_dir)
        try:
            self._bus.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self._bus, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _bus_error(f"cannot open the log in {self._bus}", exc) from exc
        try:
            self._lock_fd: int | None = os.open(
                lock_path(self._bus), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            os.close(self._dir_fd)
            raise _bus_error(f"cannot open the append lock in {self._bus}", exc) from exc
        self._thread_lock = threading.Lock()
        self._fd: int | None = None  # the active segment, as last seen
        self._base = 0
        self._ours = -1  # segment size right after our last write (-1: unknown)
        self._dirty = False  # written since the last fdatasync
        self._last_sync = time.monotonic()
        self._ids = RecentIds(self._bus, config.dedup_window_s)

    # -- appending -----------------------------------------------------------

    def append(self, events: Sequence[Event], *, msg_id: str | None = None) -> list[int]:
        """Stamp missing ``ts``, encode and append ``events``; return each one's global offset.

        With ``msg_id``, a batch appended under the same id within the window is
        not appended again: its offsets are returned.
        """
        if not events:
            return []
        data = encode_events(stamp(list(events)))
        return self._append(data, _line_lengths(data), msg_id)

    def append_encoded(self, data: bytes, count: int, *, msg_id: str | None = None) -> list[int]:
        """Append ``count`` already-encoded JSONL lines (each ``\\n``-terminated) as one batch.

        Returns each line's global offset. Raises ``ValueError`` (nothing
        written) if ``data`` does not hold exactly ``count`` terminated lines.
        ``msg_id`` de-duplicates as in ``append``.
        """
        if not data:
            if count:
                raise ValueError(f"expected {count} lines, got no data")
            return []
        if data[-1:] != b"\n":
            raise ValueError("encoded batch must end with b'\\n'")
        lengths = _line_lengths(data)
        if len(lengths) != count:
            raise ValueError(f"expected {count} lines, got {len(lengths)}")
        return self._append(data, lengths, msg_id)

    def _append(self, data: bytes, lengths: list[int], msg_id: str | None) -> list[int]:
        with self._thread_lock:
            start, earlier = self._locked_write(data, msg_id)
            if earlier is not None:
                return line_offsets(earlier, start)
            self._after_write()
        return _offsets(lengths, start)

    def _locked_write(self, data: bytes, msg_id: str | None) -> tuple[int, bytes | None]:
        """Write ``data`` under the flock: its start, and ``None``; or, for a duplicate
        ``msg_id``, the first batch's start and bytes."""
        lock_fd = self._require_open()
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        before: tuple[int, int] | None = None  # the active segment and its size, once known
        try:
            now = time.time()
            if msg_id is not None and (record := self._ids.lookup(msg_id, now)) is not None:
                earlier = self._read_back(record)
                if earlier is not None:
                    return record.start, earlier
            fd, size = self._active_segment()
            before = (fd, size)
            if size and (size != self._ours and os.pread(fd, 1, size - 1) != b"\n"):
                _write_all(fd, b"\n")  # a writer died mid-line: end its fragment here
                size += 1
            if size >= self.config.segment_bytes:
                before = None  # the old segment's fd is closed by the rotation
                fd, size = self._rotate(self._base + size)
                before = (fd, size)
            start = self._base + size
            if msg_id is not None:
                record = IdRecord(msg_id, start, start + len(data), zlib.crc32(data), now)
                self._ids.add(record, sync=self.config.durability == "always")
            _write_all(fd, data)
            self._ours = size + len(data)
            self._dirty = True
            return start, None
        except OSError as exc:
            if before is not None:
                self._undo(*before)
            message = f"cannot append to the log in {self._bus}"
            raise _bus_error(message, exc, "; nothing was appended") from exc
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _undo(self, fd: int, size: int) -> None:
        """Cut a failed write off: the segment ``fd`` back to ``size`` (flock held).

        Drops any part of the batch that did land (a short write on a full disk), so
        no byte of an unacknowledged batch stays in the log; the de-dup record
        written before it then names bytes that are not there, and matches nothing.
        A segment opened by a rotation for this batch stays, empty.
        """
        self._ours = -1  # the next append checks the tail again
        with contextlib.suppress(OSError):  # not expected when shrinking; if it happens,
            os.ftruncate(fd, size)  # the next append ends the fragment

    def _after_write(self) -> None:
        match self.config.durability:
            case "always":
                self._sync_locked()
            case "interval":
                if time.monotonic() - self._last_sync >= self.config.fsync_interval_s:
                    self._sync_locked()
            case "never":
                pass

    # -- segments (called with the flock held) ---------------------------------

    def _read_back(self, record: IdRecord) -> bytes | None:
        """The bytes of an earlier batch, if they are still in the log as they were written."""
        for seg in reversed(list_segments(self._bus)):
            if seg.base <= record.start:
                length = record.end - record.start
                try:
                    fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return None
                try:
                    data = os.pread(fd, length, record.start - seg.base)
                finally:
                    os.close(fd)
                ok = len(data) == length and zlib.crc32(data) == record.crc
                return data if ok else None
        return None

    def _active_segment(self) -> tuple[int, int]:
        """The active segment's fd and size; rescans if another process rotated."""
        if self._fd is not None:
            size = os.fstat(self._fd).st_size
            if not os.access(segment_name(self._base + size), os.F_OK, dir_fd=self._dir_fd):
                return self._fd, size
            self._retire()
        segments = list_segments(self._bus)
        base = segments[-1].base if segments else 0
        self._open(base)
        assert self._fd is not None
        return self._fd, os.fstat(self._fd).st_size

    def _rotate(self, base: int) -> tuple[int, int]:
        self._retire()
        self._open(base)
        if self.config.durability != "never":
            os.fsync(self._dir_fd)  # make the new segment's name durable
        assert self._fd is not None
        return self._fd, os.fstat(self._fd).st_size  # 0, unless someone broke the protocol

    def _open(self, base: int) -> None:
        self._fd = os.open(segment_name(base), _SEGMENT_FLAGS, 0o644, dir_fd=self._dir_fd)
        self._base = base
        self._ours = -1

    def _retire(self) -> None:
        """Close the active segment's fd, first syncing what we wrote to it."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._dirty and self.config.durability != "never":
                os.fdatasync(fd)
                self._dirty = False
                self._last_sync = time.monotonic()
        finally:
            os.close(fd)

    # -- durability and lifetime -----------------------------------------------

    def sync(self) -> None:
        """``fdatasync`` what this writer appended to the active segment, whatever the policy."""
        with self._thread_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._fd is not None and self._dirty:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise _bus_error(f"cannot sync the log in {self._bus}", exc) from exc
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync (unless ``durability`` is ``never``) and release the files; idempotent."""
        with self._thread_lock:
            if self._lock_fd is None:
                return
            try:
                self._retire()
            finally:
                self._ids.close()
                os.close(self._lock_fd)
                os.close(self._dir_fd)
                self._lock_fd = None

    def _require_open(self) -> int:
        if self._lock_fd is None:
            raise BusError("the bus writer is closed")
        return self._lock_fd

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
