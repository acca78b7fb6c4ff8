"""``bus/MSGIDS``: the message ids of recent appends, for de-duplication on the file bus.

Rule: read and written only by the holder of the append flock, so a lookup and
the write it guards are one step for every writer process. A record names the
batch's byte range and a CRC-32 of its bytes; a record whose bytes are not (or
no longer) in the log is not a hit.

Records older than the window are dropped when the file is rewritten, which
happens once it holds more than twice as many records as are still live.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import msgspec

from bus.records import decode_records

__all__ = ["MSGIDS_NAME", "IdRecord", "RecentIds"]

MSGIDS_NAME: Final = "MSGIDS"
_MIN_COMPACT: Final = 1024
_FLAGS: Final = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class IdRecord(msgspec.Struct, array_like=True, frozen=True):
    """One appended batch: its id, byte range ``[start, end)``, CRC-32 and wall time."""

    id: str
    start: int
    end: int
    crc: int
    t: float


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(IdRecord)


class RecentIds:
    """The ``MSGIDS`` file of one bus directory, cached; every method needs the flock held."""

    def __init__(self, bus: Path, window_s: float) -> None:
        self.path = bus / MSGIDS_NAME
        self.window_s = window_s
        self._fd: int | None = None
        self._ino = -1
        self._consumed = 0
        self._ids: dict[str, IdRecord] = {}
        self._lines = 0  # records in the file, live or not
        self._next_compact = _MIN_COMPACT

    def lookup(self, msg_id: str, now: float) -> IdRecord | None:
        """The record of ``msg_id`` if it was appended within the window."""
        self._refresh()
        record = self._ids.get(msg_id)
        if record is None or record.t < now - self.window_s:
            return None
        return record

    def add(self, record: IdRecord, *, sync: bool) -> None:
        """Append ``record`` (``fdatasync`` it when ``sync``); compact the file when due."""
        fd = self._refresh()
        line = _encoder.encode(record) + b"\n"
        os.write(fd, line)
        if sync:
            os.fdatasync(fd)
        self._consumed += len(line)
        self._ids[record.id] = record
        self._lines += 1
        if self._lines >= self._next_compact:
            self._compact(record.t, sync=sync)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _refresh(self) -> int:
        """Open (or reopen, if another writer replaced it) the file and fold in new records."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            ino = -1
        if self._fd is None or ino != self._ino:
            self.close()
            self._fd = os.open(
                self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            self._ino = os.fstat(self._fd).st_ino
            self._consumed, self._lines = 0, 0
            self._ids.clear()
        size = os.fstat(self._fd).st_size
        if size > self._consumed:
            data = os.pread(self._fd, size - self._consumed, self._consumed)
            complete = data
            if not data.endswith(b"\n"):  # a writer died mid-record: end its fragment here
                os.write(self._fd, b"\n")
                complete = data + b"\n"
            for record in decode_records(_decoder, complete):
                self._ids[record.id] = record
                self._lines += 1
            self._consumed += len(complete)
        return self._fd

    def _compact(self, now: float, *, sync: bool) -> None:
        horizon = now - self.window_s
        live = [record for record in self._ids.values() if record.t >= horizon]
        self._next_compact = max(_MIN_COMPACT, 2 * len(live))
        if len(live) * 2 > self._lines:
            return
        tmp = self.path.with_name(f".{MSGIDS_NAME}.{os.getpid()}.tmp")
        data = b"".join(_encoder.encode(record) + b"\n" for record in live)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._refresh()
