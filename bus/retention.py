"""Retention on the file bus: where the log can be cut, and removing the segments before a cut.

Rule: only whole segments wholly before the cut go, oldest first, and never the
last (active) one; with ``archive`` they are moved there instead of deleted.
Before the first one goes, ``bus/CUT`` keeps the few bytes before the new first
segment that ``file_identity`` reads (the log's first 4096 bytes and the 256
before the cut), so a checkpoint's identity survives the cut while a replaced
log still shows as another one. A crash at any step leaves a log that opens:
segments are removed one at a time, and ``CUT`` is written atomically first.

The decisions (``cut_point``, ``bytes_cut``) are pure; ``drop_before`` does the I/O.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from bus.segments import Segment, list_segments

__all__ = [
    "CUT_NAME",
    "HEAD_BYTES",
    "TAIL_BYTES",
    "bytes_cut",
    "cut_point",
    "drop_before",
    "held_bytes",
]

CUT_NAME: Final = "CUT"
#: How much of the log's start, and of the bytes before a position, an identity digests.
HEAD_BYTES: Final = 4096
TAIL_BYTES: Final = 256


class _Cut(msgspec.Struct, frozen=True):
    """``bus/CUT``: byte ranges of the log from before its first segment, ``[offset, base64]``."""

    ranges: list[tuple[int, str]]


_cut_decoder: Final = msgspec.json.Decoder(_Cut)


def cut_point(bases: Sequence[int], position: int) -> int:
    """The highest segment base at or before ``position`` (the first base if none; 0 if empty).

    Removing the segments before it removes nothing at or after ``position``.
    """
    if not bases:
        return 0
    index = bisect.bisect_right(list(bases), position) - 1
    return bases[max(index, 0)]


def bytes_cut(bases: Sequence[int], end: int, retain_bytes: int) -> int:
    """The highest segment base that leaves at least ``retain_bytes`` of the log after it.

    Like Kafka's ``retention.bytes``: the log keeps at least that much (and at
    most one segment more). The first base if no cut keeps enough.
    """
    if not bases:
        return 0
    keep = [base for base in bases if end - base >= retain_bytes]
    return keep[-1] if keep else bases[0]


def _read_cut(bus: Path) -> list[tuple[int, bytes]]:
    try:
        cut = _cut_decoder.decode((bus / CUT_NAME).read_bytes())
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return []
    try:
        return [(offset, base64.b64decode(data, validate=True)) for offset, data in cut.ranges]
    except ValueError:
        return []


def held_bytes(bus: Path, start: int, end: int) -> bytes:
    """The log's bytes in ``[start, end)`` as far as they are held.

    Bytes before the first segment come from ``bus/CUT`` (what a cut kept of
    them); the result is shorter when some are in neither.
    """
    segments = list_segments(bus)
    first = segments[0].base if segments else 0
    out = bytearray()
    pos = start  # each byte once: the ranges kept in CUT may overlap
    if start < first:
        for offset, data in sorted(_read_cut(bus)):
            lo, hi = max(pos, offset), min(end, first, offset + len(data))
            if lo < hi:
                out += data[lo - offset : hi - offset]
                pos = hi
    for seg in segments:
        lo, hi = max(pos, seg.base), min(end, seg.base + seg.size)
        if lo >= hi:
            continue
        try:
            with seg.path.open("rb") as fh:
                fh.seek(lo - seg.base)
                chunk = fh.read(hi - lo)
        except FileNotFoundError:
            continue
        out += chunk
        pos = lo + len(chunk)
    return bytes(out)


def _write_cut(bus: Path, first: int) -> None:
    """Keep the bytes an identity reads before ``first``, atomically (temporary file, rename)."""
    head_end = min(HEAD_BYTES, first)
    tail_start = max(0, first - TAIL_BYTES)
    ranges = [(0, held_bytes(bus, 0, head_end)), (tail_start, held_bytes(bus, tail_start, first))]
    body = msgspec.json.encode(
        _Cut(ranges=[(offset, base64.b64encode(data).decode()) for offset, data in ranges])
    )
    path = bus / CUT_NAME
    tmp = bus / f".{CUT_NAME}.{os.getpid()}.tmp"
    with tmp.open("wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _sync_dir(bus)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _removable(segments: list[Segment], position: int) -> list[Segment]:
    """The segments wholly before ``position``, never the last one."""
    return [seg for seg, after in itertools.pairwise(segments) if after.base <= position]


def drop_before(bus: Path, position: int, *, archive: Path | None = None) -> list[Segment]:
    """Remove (or move into ``archive``) the segments wholly before ``position``; those removed.

    A reader that has one of them open reads it to its end (an unlinked file
    stays readable through an open descriptor).
    """
    segments = list_segments(bus)
    doomed = _removable(segments, position)
    if not doomed:
        return []
    _write_cut(bus, segments[len(doomed)].base)
    if archive is not None:
        archive.mkdir(parents=True, exist_ok=True)
    for seg in doomed:  # oldest first: a crash leaves a log that starts at a segment
        if archive is not None:
            shutil.move(seg.path, archive / seg.path.name)
        else:
            seg.path.unlink(missing_ok=True)
    _sync_dir(bus)
    if archive is not None:
        _sync_dir(archive)
    return doomed
