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
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from pathlib import Path
from types import TracebackType
from typing import Annotated, Final, Literal, Self

import msgspec

from bus.errors import BusError, BusFull
from bus.events import Event, encode_events, stamp
from bus.segments import bus_dir, list_segments, lock_path, segment_name

__all__ = ["DEFAULT_CONFIG", "BusConfig", "BusWriter", "Durability", "line_offsets"]

Durability = Literal["never", "interval", "always"]

_MIB: Final = 1 << 20
_SEGMENT_FLAGS: Final = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class BusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[bus]`` table of ``tally.toml``."""

    segment_bytes: Annotated[int, msgspec.Meta(gt=0)] = 256 * _MIB
    durability: Durability = "interval"
    fsync_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0


#: The default configuration (a module-level value, so it is built once).
DEFAULT_CONFIG: Final = BusConfig()


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


def _bus_error(message: str, exc: OSError) -> BusError:
    """``BusFull`` when the device or quota is full, else ``BusError``: ``message: exc``."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return (BusFull if full else BusError)(f"{message}: {exc}")


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare for regular files; loop on what is left
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


class BusWriter:
    """Appends batches of events to the log in ``data_dir``; safe across threads and processes.

    Each process (or component) opens its own writer; all of them serialise on
    ``flock(bus/LOCK)``, so concurrent batches never interleave.
    """

    def __init__(self, data_dir: Path, config: BusConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self._bus = bus_dir(data_dir)
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

    # -- appending -----------------------------------------------------------

    def append(self, events: Sequence[Event]) -> list[int]:
        """Stamp missing ``ts``, encode and append ``events``; return each one's global offset."""
        if not events:
            return []
        data = encode_events(stamp(list(events)))
        return self._append(data, _line_lengths(data))

    def append_encoded(self, data: bytes, count: int) -> list[int]:
        """Append ``count`` already-encoded JSONL lines (each ``\\n``-terminated) as one batch.

        Returns each line's global offset. Raises ``ValueError`` (nothing
        written) if ``data`` does not hold exactly ``count`` terminated lines.
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
        return self._append(data, lengths)

    def _append(self, data: bytes, lengths: list[int]) -> list[int]:
        with self._thread_lock:
            start = self._locked_write(data)
            self._after_write()
        return _offsets(lengths, start)

    def _locked_write(self, data: bytes) -> int:
        lock_fd = self._require_open()
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            fd, size = self._active_segment()
            if size and (size != self._ours and os.pread(fd, 1, size - 1) != b"\n"):
                _write_all(fd, b"\n")  # a writer died mid-line: end its fragment here
                size += 1
            if size >= self.config.segment_bytes:
                fd, size = self._rotate(self._base + size)
            start = self._base + size
            _write_all(fd, data)
            self._ours = size + len(data)
            self._dirty = True
            return start
        except OSError as exc:
            raise _bus_error(f"cannot append to the log in {self._bus}", exc) from exc
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

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
