"""The live projection worker: restore, catch up, then follow the bus.

The fold runs on the event loop one batch at a time and yields between
batches, so a scrape always reads a consistent state and never waits for a
backlog. Checkpoints are encoded on the loop and written in a thread.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import anyio.abc

from bus.follower import follow
from bus.reader import Batch, BusReader
from projections.config import ProjectionConfig
from projections.fold import Projection
from server.live.checkpoint import Checkpoint, CheckpointStore

__all__ = ["ProjectionWorker"]

log = logging.getLogger("tally.worker")


class ProjectionWorker:
    def __init__(
        self,
        data_dir: Path,
        config: ProjectionConfig,
        *,
        checkpoint_every_events: int = 100_000,
        checkpoint_every_s: float = 30.0,
        poll_interval_s: float = 0.01,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.store = CheckpointStore(data_dir)
        self.checkpoint_every_events = checkpoint_every_events
        self.checkpoint_every_s = checkpoint_every_s
        self.poll_interval_s = poll_interval_s
        self.projection = Projection(config)
        self.reader = BusReader(data_dir)
        self.ready = anyio.Event()
        self.restored_from: int | None = None
        self.last_checkpoint: Checkpoint | None = None
        self._events_since_checkpoint = 0
        self._last_checkpoint_time = time.monotonic()
        self._checkpoint_lock = anyio.Lock()

    # -- the fold loop -------------------------------------------------------

    def restore(self) -> None:
        """Load the newest valid checkpoint, if any (else the state stays empty)."""
        restored = self.store.load_latest(self.config)
        if restored is not None:
            self.projection = restored
            self.restored_from = restored.offset
            log.info("restored checkpoint at offset %d", restored.offset)
            # Only the checkpoint actually restored counts: a newer file that was ignored
            # (corrupt, or from another log) must not suppress the next checkpoint.
            self.last_checkpoint = next(
                (c for c in self.store.list() if c.offset == restored.offset), None
            )

    def _fold(self, batch: Batch) -> None:
        self.projection.fold_batch(batch)
        self._events_since_checkpoint += len(batch.events)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.restore()
        task_status.started()
        target = self.reader.end_offset()
        log.info("catching up from offset %d to %d", self.projection.offset, target)
        for batch in self.reader.read_from(self.projection.offset):
            self._fold(batch)
            await self._maybe_checkpoint()
            await anyio.sleep(0)  # let scrapes in between batches
            if batch.end >= target:
                break
        self.ready.set()
        log.info("ready at offset %d", self.projection.offset)
        async for batch in follow(
            self.data_dir,
            self.projection.offset,
            poll_interval=self.poll_interval_s,
            reader=self.reader,
        ):
            self._fold(batch)
            await self._maybe_checkpoint()

    # -- checkpoints -----------------------------------------------------------

    async def _maybe_checkpoint(self) -> None:
        due = self._events_since_checkpoint >= self.checkpoint_every_events or (
            self._events_since_checkpoint
            and time.monotonic() - self._last_checkpoint_time >= self.checkpoint_every_s
        )
        if due:
            await self.checkpoint()

    async def checkpoint(self) -> Checkpoint | None:
        """Snapshot the state now (if it moved since the last one); safe to call any time."""
        async with self._checkpoint_lock:
            if self.last_checkpoint is not None and (
                self.last_checkpoint.offset == self.projection.offset
            ):
                return self.last_checkpoint
            prepared = self.store.prepare(self.projection)
            self._events_since_checkpoint = 0
            self._last_checkpoint_time = time.monotonic()
            with anyio.CancelScope(shield=True):
                checkpoint = await anyio.to_thread.run_sync(self.store.write, *prepared)
            self.last_checkpoint = checkpoint
            log.info("checkpoint at offset %d", checkpoint.offset)
            return checkpoint
