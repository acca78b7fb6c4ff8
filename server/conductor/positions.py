"""Where the conductor bridge is in each message-bus file: ``<data-dir>/conductor/positions.json``.

Rule: the file is replaced whole (temp, fsync, rename, fsync the directory), so
it is the old or the new, never torn; the ids appended past its saved bus offset
are found on the bus again at load, since a crash may fall between append and save.
One process at a time holds ``LOCK`` beside it (``lock_positions``).

Files are known by device, inode and a fingerprint of their first bytes, not by
path, so a rotation (rename to ``NAME.YYYYMMDD-HHMMSS.archived``) keeps its
position. A file that shrank, or whose first bytes or the bytes just before the
position changed, was truncated or rewritten: ``still_valid`` says no, and the
bridge reads it again from the start, less the message ids last seen in it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Final

import msgspec

from bus.contract import Bus
from bus.errors import BusError, TallyError
from bus.events import BusMessage
from server.atomic import write_atomically

__all__ = [
    "BridgeBusy",
    "FileState",
    "Positions",
    "PositionsError",
    "advanced",
    "appended_ids",
    "copy_of",
    "load_positions",
    "lock_positions",
    "positions_path",
    "save_positions",
    "still_valid",
]

log = logging.getLogger("tally.conductor")

HEAD_BYTES: Final = 256  # the fingerprint covers this much of a file's start
ANCHOR_BYTES: Final = 64  # ... and this much just before the position
RECENT_IDS: Final = 16  # message ids remembered per file, skipped after a rewrite


class PositionsError(TallyError):
    """Raised when the positions file exists but cannot be read."""


class BridgeBusy(TallyError):
    """Raised when another process already imports conductor-loop files into this data dir."""

    http_status = 409


class FileState(msgspec.Struct, kw_only=True):
    """Where the bridge is in one file, and how it knows the file again."""

    dev: int
    ino: int
    path: str  # relative to the root, as last seen
    logical: str
    head: str = ""  # digest of the first head_len bytes
    head_len: int = 0
    anchor: str = ""  # digest of the (up to ANCHOR_BYTES) bytes just before offset
    offset: int = 0
    line: int = 1
    recent: list[str] = []
    missing_since: float | None = None


class Positions(msgspec.Struct, kw_only=True):
    """``<data-dir>/conductor/positions.json``."""

    version: int = 1
    bus_offset: int = 0  # tally's bus end (a position) when saved; ids past it are re-checked
    roots: dict[str, list[FileState]] = {}


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Positions)


def positions_path(data_dir: Path) -> Path:
    return data_dir / "conductor" / "positions.json"


def lock_positions(data_dir: Path) -> int:
    """Take ``<data-dir>/conductor/LOCK`` for this process; its fd, to close when done."""
    path = positions_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name("LOCK")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BridgeBusy(
            f"another tally process is importing conductor-loop files into {data_dir} "
            f"(it holds {lock})"
        ) from None
    return fd


def load_positions(data_dir: Path, bus_end: int) -> Positions:
    """The saved positions; on first start, new ones at ``bus_end``, saved before any append."""
    path = positions_path(data_dir)
    try:
        return _decoder.decode(path.read_bytes())
    except FileNotFoundError:
        positions = Positions(bus_offset=bus_end)
        save_positions(data_dir, positions)
        return positions
    except (msgspec.MsgspecError, OSError) as exc:
        raise PositionsError(
            f"cannot read {path} ({exc}); move it away to import everything again"
        ) from None


def save_positions(data_dir: Path, positions: Positions) -> None:
    write_atomically(positions_path(data_dir), _encoder.encode(positions))


async def appended_ids(bus: Bus, offset: int) -> tuple[Counter[str], int]:
    """``bus_message`` ids on ``bus`` from position ``offset`` on, and where the scan started."""
    first, end = await bus.first(), await bus.end()
    if not first <= offset <= end:
        log.warning(
            "saved bus offset %d is outside %s (%d to %d); checking all of it",
            offset,
            bus.url,
            first,
            end,
        )
        offset = first
    ids: Counter[str] = Counter()
    try:
        await _collect_ids(bus, offset, ids)
    except BusError as exc:
        log.warning("saved bus offset %d unusable (%s); checking all of the bus", offset, exc)
        offset = first
        ids.clear()
        await _collect_ids(bus, offset, ids)
    return ids, offset


async def _collect_ids(bus: Bus, offset: int, ids: Counter[str]) -> None:
    async for batch in bus.read(offset):
        ids.update(ev.msg_id for ev in batch.events if type(ev) is BusMessage and ev.msg_id)


# -- file identity ------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def still_valid(fd: int, size: int, state: FileState) -> bool:
    """Whether the file still holds what the state saw: same first bytes, same bytes before it."""
    if size < state.offset:
        return False
    if state.head_len and _digest(os.pread(fd, state.head_len, 0)) != state.head:
        return False
    start = max(0, state.offset - ANCHOR_BYTES)
    return not state.anchor or _digest(os.pread(fd, state.offset - start, start)) == state.anchor


def advanced(
    state: FileState, fd: int, size: int, *, offset: int, line: int, recent: list[str]
) -> FileState:
    """``state`` moved to ``offset``, with the fingerprint of the file (``fd``, ``size``) now."""
    head_len = min(size, HEAD_BYTES)
    head = state.head if head_len == state.head_len else _digest(os.pread(fd, head_len, 0))
    start = max(0, offset - ANCHOR_BYTES)
    anchor = _digest(os.pread(fd, offset - start, start)) if offset else ""
    return msgspec.structs.replace(
        state,
        head=head,
        head_len=head_len,
        anchor=anchor,
        offset=offset,
        line=line,
        recent=recent[-RECENT_IDS:],
    )


def copy_of(
    orphans: dict[tuple[int, int], FileState], path: Path, logical: str, size: int
) -> FileState | None:
    """The position of a vanished file that this new inode is a copy of, taken from ``orphans``."""
    for ident, state in orphans.items():
        if state.logical != logical or size < state.offset:
            continue
        try:
            with open(path, "rb", buffering=0) as f:
                same = still_valid(f.fileno(), size, state)
        except OSError:
            return None
        if same:
            del orphans[ident]
            return state
    return None
