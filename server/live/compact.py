"""Compaction: a base snapshot at a cut, then the log before it removed (any backend).

Rule: the base is written (atomically) before anything is removed, and the
segments go oldest first; a crash between any two steps leaves a log that opens
and replays to the same metrics, from the base or from the start. A base is a
checkpoint kept apart (``<data-dir>/snapshots/base/<20-digit position>.snap``),
never pruned by the checkpoints' keep-two rule; the newest valid one is the
base, and older ones are removed once a newer one is durable and the log is cut.

The cut is where the bus can cut (a segment's start on the file bus, a
message's on JetStream) at or before the point asked for: ``--before
POSITION``; ``--older-than DURATION`` (event time: behind the newest event's
``ts``, up to the first event younger than that); or ``[bus] retain_bytes`` /
``retain_age`` (the running server, after each checkpoint). The running server
holds the states its fold passed at cut points (``HeldState``) and cuts at one of
those, so the base is bytes it already has; otherwise (``tally compact``, or a server
just restarted past them) the state there is folded from the newest usable state
before it: a checkpoint, the current base, or the log's start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bus.contract import Bus
from bus.errors import NotRetained, TallyError
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.snapshot import (
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    read_snapshot_meta,
    restamp_snapshot,
)
from server.atomic import write_atomically
from server.live.checkpoint import CheckpointStore

__all__ = [
    "Base",
    "BaseMismatch",
    "CompactBusy",
    "Compaction",
    "HeldState",
    "base_dir",
    "check_until",
    "compact",
    "list_bases",
    "load_base",
    "log_start",
    "promote",
]

log = logging.getLogger("tally.compact")

_SUFFIX: Final = ".snap"
_LOCK: Final = "LOCK"


class BaseMismatch(TallyError):
    """Raised when the base snapshot is corrupt or was folded under another projection config."""

    exit_code = 2


class CompactBusy(TallyError):
    """Raised when another compaction of the same data directory is running."""

    http_status = 409


@dataclass(frozen=True, slots=True)
class Base:
    """The base snapshot in use: where the retained log starts, and the state folded up to it.

    It keeps the encoded bytes, not a decoded projection: a server asks for the base after
    every checkpoint and needs its state only to restore from it.
    """

    path: Path
    offset: int
    clock: float
    data: bytes = field(repr=False)
    config: ProjectionConfig = field(repr=False)
    #: The first event ``ts`` of the log before any cut (``SnapshotMeta.log_start``).
    log_start: float | None = None

    def projection(self) -> Projection:
        """A new projection holding the base's state (the caller owns it)."""
        try:
            projection, _ = decode_snapshot(self.data, self.config)
        except SnapshotError as exc:
            raise _mismatch(self.path, self.offset, exc) from None
        return projection


@dataclass(frozen=True, slots=True)
class HeldState:
    """The state a live fold encoded as it reached a cut point (a segment's start): a base
    there costs no second fold of the log, nor a second projection in the server."""

    offset: int
    data: bytes = field(repr=False)


def _mismatch(path: Path, offset: int, reason: object) -> BaseMismatch:
    return BaseMismatch(
        f"the base snapshot {path} cannot be used: {reason}; the log before position "
        f"{offset} was removed, so it cannot be folded again under this config "
        "(restore the config it was folded under)"
    )


@dataclass(slots=True)
class Compaction:
    """What ``compact`` did: the base (new, or the one already there) and what it removed."""

    base: Base | None
    removed: list[str] = field(default_factory=list)
    created: bool = False


def base_dir(data_dir: Path) -> Path:
    """``<data-dir>/snapshots/base``."""
    return data_dir / "snapshots" / "base"


def list_bases(data_dir: Path) -> list[tuple[int, Path]]:
    """``(position, path)`` of the base snapshots, newest (highest position) first."""
    try:
        names = os.listdir(base_dir(data_dir))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem = name.removesuffix(_SUFFIX)
        if name.endswith(_SUFFIX) and len(stem) == 20 and stem.isdigit():
            found.append((int(stem), base_dir(data_dir) / name))
    return sorted(found, reverse=True)


async def load_base(data_dir: Path, bus: Bus, config: ProjectionConfig) -> Base | None:
    """The newest base snapshot of this log; ``None`` if there is none.

    One of another log (replaced or re-created since) is logged and passed over;
    one folded under another config, or corrupt, raises ``BaseMismatch``: the
    log before it may be gone, so nothing can stand in for it.
    """
    for offset, path in list_bases(data_dir):
        try:
            data = path.read_bytes()
            meta = read_snapshot_meta(data)
        except FileNotFoundError:
            continue  # pruned meanwhile by a newer compaction
        except (OSError, SnapshotError) as exc:
            raise BaseMismatch(f"cannot read the base snapshot {path}: {exc}") from None
        if meta.bus_identity != await bus.identity(meta.offset):
            log.warning("ignoring base snapshot %s: it was taken from another log", path)
            continue
        if meta.fingerprint != config.fingerprint():
            raise _mismatch(
                path,
                offset,
                f"it was folded under another projection config (fingerprint "
                f"{meta.fingerprint}, current {config.fingerprint()})",
            )
        return Base(path, meta.offset, meta.clock, data, config, meta.log_start)
    return None


def check_until(base: Base | None, until_offset: int | None, until_ts: float | None) -> None:
    """``NotRetained`` if ``until_offset`` or ``until_ts`` lies before what ``base`` can serve.

    The base holds every event before its position, all with ``ts`` at most
    its clock: a replay as of an earlier time would need events it merged.
    """
    if base is None:
        return
    if until_offset is not None and until_offset < base.offset:
        raise NotRetained(f"--until-offset {until_offset}", base.offset, base.clock)
    if until_ts is not None and until_ts < base.clock:
        raise NotRetained(f"--until-ts {until_ts}", base.offset, base.clock)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    directory = base_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CompactBusy(f"another compaction of {data_dir} is running") from None
        yield
    finally:
        os.close(fd)


async def _log_clock(bus: Bus, store: CheckpointStore, start: int, clock: float) -> float:
    """The newest event time of the log: the newest checkpoint's clock, then the events after it."""
    for checkpoint in store.list():
        if checkpoint.offset < start:
            break
        try:
            meta = read_snapshot_meta(checkpoint.path.read_bytes())
        except (OSError, SnapshotError):
            continue
        if meta.bus_identity == await bus.identity(meta.offset):
            start, clock = meta.offset, max(clock, meta.clock)
            break
    async for batch in bus.read(start):
        for event in batch.events:
            if event.ts is not None and event.ts > clock:
                clock = event.ts
    return clock


async def log_start(bus: Bus, base: Base | None) -> float | None:
    """The first stamped event's ``ts`` of the log before any cut: the base's record of it,
    else the log's own first (``None`` if the base predates the record, or none is stamped)."""
    if base is not None:
        return base.log_start
    async for batch in bus.read(await bus.first()):
        for event in batch.events:
            if event.ts is not None and math.isfinite(event.ts):
                return event.ts
    return None


async def _first_younger(bus: Bus, start: int, threshold: float) -> int:
    """The position of the first event from ``start`` on with ``ts`` after ``threshold``."""
    end = start
    async for batch in bus.read(start):
        for position, event in batch:
            if event.ts is not None and event.ts > threshold:
                return position
        end = batch.end
    return end


async def _state_before(
    bus: Bus, store: CheckpointStore, config: ProjectionConfig, base: Base | None, cut: int
) -> Projection:
    """The state folded up to ``cut``: from the newest usable checkpoint at or before it,
    else from the base, else from the log's start."""
    floor = base.offset if base is not None else await bus.first()
    for checkpoint in store.list():
        if not floor <= checkpoint.offset <= cut:
            continue
        try:
            projection, meta = decode_snapshot(checkpoint.path.read_bytes(), config)
        except (OSError, SnapshotError):
            continue
        if meta.bus_identity == await bus.identity(meta.offset):
            break
    else:
        if base is not None:
            projection = base.projection()
        else:
            projection = Projection(config)
            projection.offset = floor
    async for batch in bus.read(projection.offset, cut):
        projection.fold_batch(batch)
    projection.offset = cut  # everything before the cut is folded
    return projection


def promote(data_dir: Path, checkpoint: Path, offset: int, start_ts: float | None) -> Path:
    """Make the checkpoint at ``offset`` the base (a copy, written atomically, with the log's
    ``start_ts``: see ``log_start``); the older bases go. What a server on a JetStream stream
    with limits does: the stream deletes."""
    with _locked(data_dir):
        path = base_dir(data_dir) / f"{offset:020d}{_SUFFIX}"
        data = restamp_snapshot(checkpoint.read_bytes(), log_start=start_ts)
        write_atomically(path, data, tmp=path.with_name(f".{path.name}.{os.getpid()}.tmp"))
        for _, old in list_bases(data_dir)[1:]:
            old.unlink(missing_ok=True)
    log.info("base snapshot at position %d (the stream's limits delete before it)", offset)
    return path


async def compact(
    data_dir: Path,
    bus: Bus,
    config: ProjectionConfig,
    *,
    before: int | None = None,
    older_than_s: float | None = None,
    retain_bytes: int | None = None,
    clock: float | None = None,
    ceiling: int | None = None,
    held: Sequence[HeldState] = (),
) -> Compaction:
    """Cut the log at the highest cut point at or before every limit given, after writing
    the base there; ``clock`` is the log's newest event time if the caller knows it, and
    no cut goes past ``ceiling`` (the running server's folded position: its own reader
    must never find the log cut ahead of it).

    ``held`` are states a live fold took at cut points, oldest first: the newest of them
    past the current base and at or before the cut becomes the base as it is, and the cut
    moves back to it (retaining a little more than asked). Only without one is the state
    at the cut folded here, from a checkpoint or the base.

    Without any limit, or when the cut is not past the current base, nothing changes.
    """
    with _locked(data_dir):
        store = CheckpointStore(data_dir, bus)
        base = await load_base(data_dir, bus, config)
        start = base.offset if base is not None else await bus.first()
        end = await bus.end()
        points = []
        if before is not None:
            points.append(before)
        if retain_bytes is not None:
            points.append(end - retain_bytes)
        if older_than_s is not None:
            if clock is None:
                floor = base.clock if base is not None else -math.inf
                clock = await _log_clock(bus, store, start, floor)
            points.append(await _first_younger(bus, start, clock - older_than_s))
        if not points:
            return Compaction(base)
        cut = await bus.cut_point(min(max(points), end, end if ceiling is None else ceiling))
        if cut <= start:
            if base is not None:  # a crash may have left segments before it: remove them
                return Compaction(base, await bus.drop_before(base.offset))
            return Compaction(base)
        start_ts = await log_start(bus, base)
        state = next((h for h in reversed(held) if start < h.offset <= cut), None)
        if state is not None:
            cut, data = state.offset, state.data
            when = read_snapshot_meta(data).clock
        else:
            projection = await _state_before(bus, store, config, base, cut)
            data = encode_snapshot(projection, bus_identity=await bus.identity(cut))
            when = projection.clock.now
            del projection  # the only reference: free it before anything else is allocated
        data = restamp_snapshot(data, log_start=start_ts)
        path = base_dir(data_dir) / f"{cut:020d}{_SUFFIX}"
        write_atomically(path, data, tmp=path.with_name(f".{path.name}.{os.getpid()}.tmp"))
        new = Base(path, cut, when, data, config, start_ts)
        removed = await bus.drop_before(cut)
        for _, old in list_bases(data_dir)[1:]:
            old.unlink(missing_ok=True)
        log.info(
            "base snapshot at position %d (%s); removed %s",
            cut,
            "held by the live fold" if state is not None else "folded to the cut",
            ", ".join(removed) or "nothing",
        )
        return Compaction(new, removed, created=True)
