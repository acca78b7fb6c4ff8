"""``<data_dir>/quarantine.jsonl``: the lines of the log that could not be decoded.

Rule: one entry per offset, ever: re-reading the log, in any number of processes,
never adds a second entry for the same line (checked under ``flock``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

import msgspec

from bus.records import decode_records

__all__ = ["MAX_RAW_BYTES", "QUARANTINE_NAME", "Quarantine", "QuarantineEntry"]

QUARANTINE_NAME: Final = "quarantine.jsonl"
#: Longer lines are kept truncated to this many bytes.
MAX_RAW_BYTES: Final = 64 * 1024


class QuarantineEntry(msgspec.Struct, frozen=True):
    """One corrupt line: its global offset, why it was rejected, its text (UTF-8, replaced)."""

    offset: int
    reason: str
    raw: str


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(QuarantineEntry)


class Quarantine:
    """The quarantine file of one data directory; existing offsets are loaded lazily."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / QUARANTINE_NAME
        self._known: set[int] = set()
        self._consumed = 0  # bytes of the file already folded into _known

    def add(self, offset: int, reason: str, raw: bytes) -> None:
        """Record the line at ``offset`` unless it is already recorded (by anyone)."""
        self.add_many([(offset, reason, raw)])

    def add_many(self, lines: list[tuple[int, str, bytes]]) -> None:
        """``add`` for several ``(offset, reason, raw)`` lines, under one lock."""
        if all(offset in self._known for offset, _, _ in lines):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = self._refresh(fd)
            new: dict[int, bytes] = {}
            for offset, reason, raw in lines:
                if offset not in self._known and offset not in new:
                    text = raw[:MAX_RAW_BYTES].decode("utf-8", errors="replace")
                    new[offset] = _encoder.encode(QuarantineEntry(offset, reason, text)) + b"\n"
            if not new:
                return
            data = b"".join(new.values())
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a writer died mid-entry: end its fragment
            os.write(fd, data)
            self._known.update(new)
            self._consumed = size + len(data)
        finally:
            os.close(fd)  # also releases the flock

    def offsets(self) -> set[int]:
        """Offsets of every quarantined line."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return set(self._known)
        try:
            self._refresh(fd)
        finally:
            os.close(fd)
        return set(self._known)

    def entries(self) -> list[QuarantineEntry]:
        """Every entry, in file order."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return decode_records(_decoder, data[: data.rfind(b"\n") + 1])

    def _refresh(self, fd: int) -> int:
        """Fold entries appended since the last refresh into ``_known``; return the file size."""
        size = os.fstat(fd).st_size
        if size < self._consumed:  # the file was truncated or replaced: start over
            self._known.clear()
            self._consumed = 0
        if size > self._consumed:
            data = os.pread(fd, size - self._consumed, self._consumed)
            complete = data[: data.rfind(b"\n") + 1]
            self._known.update(entry.offset for entry in decode_records(_decoder, complete))
            self._consumed += len(complete)
        return size
