"""Projection checkpoints: atomic snapshot files in the data directory, the newest two kept.

A checkpoint that cannot be written (a full disk) leaves no partial file and
removes none of the older ones; the worker logs it and tries again later.

A snapshot carries the identity of the log it was folded from (``Bus.identity``
at its position), so one taken from a replaced or truncated log, or from a
deleted and re-created stream, is reported and ignored, never trusted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bus.contract import Bus
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.snapshot import SnapshotError, decode_snapshot, encode_snapshot
from server.atomic import write_atomically

__all__ = ["KEEP", "Checkpoint", "CheckpointStore"]

log = logging.getLogger("tally.checkpoint")

KEEP: Final = 2
_SUFFIX: Final = ".snap"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: Path
    offset: int
    mtime: float


class CheckpointStore:
    """``<data-dir>/snapshots/<20-digit position>.snap`` files of ``bus``, written atomically."""

    def __init__(self, data_dir: Path, bus: Bus, *, keep: int = KEEP) -> None:
        self.data_dir = data_dir
        self.bus = bus
        self.dir = data_dir / "snapshots"
        self.keep = keep

    def list(self) -> list[Checkpoint]:
        """Checkpoints, newest (highest offset) first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            stem, suffix = name[: -len(_SUFFIX)], name[-len(_SUFFIX) :]
            if suffix != _SUFFIX or len(stem) != 20 or not stem.isdigit():
                continue
            path = self.dir / name
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            found.append(Checkpoint(path, int(stem), mtime))
        return sorted(found, key=lambda c: c.offset, reverse=True)

    async def save(self, projection: Projection) -> Checkpoint:
        """Write a snapshot of ``projection`` (temporary file, fsync, rename), prune old ones."""
        return self.write(*await self.prepare(projection))

    async def prepare(self, projection: Projection) -> tuple[int, bytes]:
        """Encode the state at its position, with the bus's identity there.

        The encoding itself does not yield, so a fold in another task cannot tear
        it; if the fold moved on while the identity was asked for, it is asked again.
        """
        while True:
            offset = projection.offset
            identity = await self.bus.identity(offset)
            if projection.offset == offset:
                return offset, encode_snapshot(projection, bus_identity=identity)

    def write(self, offset: int, data: bytes) -> Checkpoint:
        """Write encoded state atomically; may run in a thread."""
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"{offset:020d}{_SUFFIX}"
        tmp = self.dir / f".{offset:020d}{_SUFFIX}.{os.getpid()}.tmp"
        try:
            write_atomically(final, data, tmp=tmp)
        except OSError:  # a full disk: drop the partial file, keep the older checkpoints
            tmp.unlink(missing_ok=True)
            raise
        for old in self.list()[self.keep :]:
            old.path.unlink(missing_ok=True)
        return Checkpoint(final, offset, final.stat().st_mtime)

    async def load_latest(
        self, config: ProjectionConfig, *, floor: int | None = None
    ) -> Projection | None:
        """The newest snapshot that is valid, compatible and of this log; ``None`` if none is.

        Each one passed over is logged with its reason; the caller then
        replays from the start (or the base). Those before ``floor`` (a base
        snapshot's position: the log before it is gone) are not considered.
        """
        for checkpoint in self.list():
            if floor is not None and checkpoint.offset < floor:
                continue
            try:
                projection, meta = decode_snapshot(checkpoint.path.read_bytes(), config)
            except (SnapshotError, OSError) as exc:
                log.warning("ignoring checkpoint %s: %s", checkpoint.path, exc)
                continue
            expected = await self.bus.identity(meta.offset)
            if meta.bus_identity != expected:
                log.warning(
                    "ignoring checkpoint %s: it was taken from another log than %s "
                    "(replaced, truncated or re-created since); folding the log from its start",
                    checkpoint.path,
                    self.bus.url,
                )
                continue
            return projection
        return None
