"""Reading the log files in chunks; decoding (and its fast path) is ``bus.lines.LineDecoder``'s.

Rule: nothing in the log stops a reader. A line that is not a valid event is
quarantined once and counted; an unknown ``type`` is counted and skipped; a
line is consumed only once its ``\\n`` is on disk. Retention may remove
segments: one the reader has open it reads to its end; one removed before the
reader reached it raises ``NotRetained`` (events are never skipped silently).

A line longer than ``max_line_bytes`` is corrupt (it is skipped without being
held in memory; its first 64 KiB are quarantined).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Container, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from bus.errors import NotRetained, OffsetError
from bus.events import EVENT_TYPES
from bus.lines import Batch, LineDecoder, ReadStats
from bus.quarantine import MAX_RAW_BYTES, Quarantine
from bus.segments import Segment, bus_dir, list_segments

__all__ = ["Batch", "BusReader", "ReadStats"]


class BusReader:
    """Reads the log in ``data_dir`` from any line start; safe while writers append.

    ``chunk_bytes`` is the read size and so the usual batch size: 64 KiB measured
    faster than 1 MiB here (the decoded batch stays in the CPU cache). ``decoder``
    replaces the ``Event`` decoder, for a reader that wants other types for some
    tags (a partitioned replay decodes the tags it does not fold to ``ts`` only).
    ``bus`` is the segments' directory when it is not ``<data_dir>/bus`` (the
    quarantine stays in ``data_dir``); ``stats`` shares running totals with
    other readers of the same bus; ``known`` holds the tags ``decoder`` decodes.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        quarantine: bool = True,
        chunk_bytes: int = 64 << 10,
        max_line_bytes: int = 64 << 20,
        decoder: msgspec.json.Decoder[Any] | None = None,
        bus: Path | None = None,
        stats: ReadStats | None = None,
        known: Container[str] = EVENT_TYPES,
    ) -> None:
        if chunk_bytes <= 0 or max_line_bytes <= 0:
            raise ValueError("chunk_bytes and max_line_bytes must be positive")
        self.data_dir = data_dir
        self.bus = bus if bus is not None else bus_dir(data_dir)
        self._lines = LineDecoder(
            quarantine=Quarantine(data_dir) if quarantine else None,
            decoder=decoder,
            stats=stats,
            known=known,
        )
        self.chunk_bytes = chunk_bytes
        self._max_line = max(max_line_bytes, chunk_bytes)

    @property
    def stats(self) -> ReadStats:
        """Running totals over everything this reader has consumed."""
        return self._lines.stats

    # -- the log's shape -------------------------------------------------------

    def end_offset(self) -> int:
        """Offset just past the last complete line of the log (0 for an empty log)."""
        segments = list_segments(self.bus)
        if not segments:
            return 0
        last = segments[-1]
        try:
            with open(last.path, "rb", buffering=0) as f:
                return last.base + _last_line_end(f, os.fstat(f.fileno()).st_size)
        except FileNotFoundError:
            return last.base

    def torn_tail(self) -> bool:
        """Whether the last segment ends inside a line (a write in progress, or a dead writer)."""
        segments = list_segments(self.bus)
        if not segments:
            return False
        try:
            with open(segments[-1].path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                return size > 0 and os.pread(f.fileno(), 1, size - 1) != b"\n"
        except FileNotFoundError:
            return False

    # -- reading ---------------------------------------------------------------

    def read_from(self, offset: int = 0, until: int | None = None) -> Iterator[Batch]:
        """Batches from ``offset`` to the end of the log, or of the lines starting before ``until``.

        ``offset`` must be a line start (0, a batch's ``end``, an event's
        offset); anything else raises ``OffsetError`` here, before any batch.
        Segments rotated in while reading are followed; a partial line at the
        very end is left for later.
        """
        segments = list_segments(self.bus)
        index = _locate(segments, offset)
        if index is None or (until is not None and until <= offset):
            return iter(())
        return self._read(segments, index, offset, until)

    def _read(
        self, segments: list[Segment], index: int, offset: int, until: int | None
    ) -> Iterator[Batch]:
        pos = offset
        while True:
            final = index + 1 < len(segments)
            pos = yield from self._read_segment(segments[index], pos, until, final=final)
            if until is not None and pos >= until:
                return
            if not final:  # was it rotated while we read? then read its rest as final
                segments = list_segments(self.bus)
                index = bisect.bisect_right([seg.base for seg in segments], pos) - 1
                if index + 1 >= len(segments):
                    return
                continue
            index += 1
            pos = segments[index].base

    def _read_segment(
        self, seg: Segment, pos: int, until: int | None, *, final: bool
    ) -> Generator[Batch, None, int]:
        """Read ``seg`` from ``pos`` to its end; return the position after the last consumed line.

        In a ``final`` segment (one with a successor) a tail without ``\\n`` is a
        corrupt line; in the last segment it is a line still being written.
        """
        try:
            f = open(seg.path, "rb", buffering=0)  # noqa: SIM115 - held across yields
        except FileNotFoundError:
            if not final:
                return pos
            # retention removed it before this reader got to it: never skip events silently
            segments = list_segments(self.bus)
            first = segments[0].base if segments else pos
            raise NotRetained(f"offset {pos}", first, None) from None
        with f:
            f.seek(pos - seg.base)
            pending: list[bytes] = []  # the start of a line whose "\n" is not read yet
            pending_bytes = 0
            leftover = b""  # read past an over-long line, not yet looked at
            while until is None or pos < until:
                data, leftover = leftover or f.read(self.chunk_bytes), b""
                if not data:
                    break
                last_newline = data.rfind(b"\n")
                if last_newline < 0:
                    pending.append(data)
                    pending_bytes += len(data)
                    if pending_bytes > self._max_line:
                        batch, leftover = self._skip_long_line(f, pos, pending, final=final)
                        if batch is None:
                            return pos
                        pos = batch.end
                        yield batch
                        pending, pending_bytes = [], 0
                    continue
                buf = b"".join((*pending, data)) if pending else data
                cut = pending_bytes + last_newline + 1
                if until is not None and pos + cut > until:
                    cut = buf.find(b"\n", until - 1 - pos) + 1
                rest = buf[cut:]
                pending, pending_bytes = ([rest], len(rest)) if rest else ([], 0)
                batch = self._lines.decode(buf[:cut] if cut < len(buf) else buf, pos, pos + cut)
                pos = batch.end
                yield batch
            if pending and final and (until is None or pos < until):
                tail = b"".join(pending)
                batch = self._lines.decode_slow([tail], pos, pos + len(tail))
                pos = batch.end
                yield batch
        return pos

    def _skip_long_line(
        self, f: BinaryIO, pos: int, head: list[bytes], *, final: bool
    ) -> tuple[Batch | None, bytes]:
        """Skip the over-long line starting at ``pos``; return it as a corrupt batch, and the rest.

        ``head`` is what was read of it so far. Returns ``(None, b"")`` if the
        segment ends first and is not ``final``.
        """
        length = sum(map(len, head))
        raw = b"".join(head)[:MAX_RAW_BYTES]
        rest = b""
        while True:
            data = f.read(self.chunk_bytes)
            if not data:
                if not final:
                    return None, b""
                break
            newline = data.find(b"\n")
            if newline >= 0:
                length += newline + 1
                rest = data[newline + 1 :]
                break
            length += len(data)
        reason = f"line longer than {self._max_line} bytes ({length} bytes)"
        self._lines.reject([(pos, reason, raw)])
        batch = Batch(pos, pos + length, [], offsets=[], corrupt=1)
        self.stats.add(batch)
        return batch, rest


def _locate(segments: list[Segment], offset: int) -> int | None:
    """Index of the segment holding ``offset``; ``None`` for an empty log at 0."""
    if offset < 0:
        raise OffsetError(f"offset {offset} is negative")
    if not segments:
        if offset == 0:
            return None
        raise OffsetError(f"offset {offset} is beyond the end of the log (0)")
    index = bisect.bisect_right([seg.base for seg in segments], offset) - 1
    if index < 0:
        raise NotRetained(f"offset {offset}", segments[0].base, None)
    seg = segments[index]
    local = offset - seg.base
    if local == 0:
        return index
    try:
        with open(seg.path, "rb", buffering=0) as f:
            before = os.pread(f.fileno(), 1, local - 1)
    except FileNotFoundError:
        before = b""
    if not before:
        raise OffsetError(f"offset {offset} is beyond the end of the log ({seg.end})")
    if before != b"\n":
        raise OffsetError(f"offset {offset} is not the start of a line")
    return index


def _last_line_end(f: BinaryIO, size: int, step: int = 1 << 16) -> int:
    """Position just past the last ``\\n`` of the open file (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - step)
        chunk = os.pread(f.fileno(), end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
