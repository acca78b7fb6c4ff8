"""The live projection worker: restore, catch up, then follow the bus (any backend).

The fold runs on the event loop one batch at a time and yields between
batches, so a scrape always reads a consistent state and never waits for a
backlog. Checkpoints are encoded on the loop and written in a thread.

A bus that stops answering (``BusUnavailable``: a NATS node lost, a stream
leader being elected) is read again from the folded position a second later,
as often as it takes: the server stays up, not ready until it caught up.

Retention: when the bus no longer holds the events just past the restored
checkpoint (a JetStream stream's limits removed them), the worker logs it,
keeps where the gap was (``skipped_from``, ``skipped_to``) and folds what is left.
After a compaction the restore starts from the base snapshot when no newer
checkpoint is usable; with ``retain_bytes`` or ``retain_age_s`` (``[bus]``) the
worker compacts the log after each checkpoint, in a task of its own (never past
its own checkpoint; a ``tally compact`` that cuts ahead of a catching-up fold
makes it restore the new base and fold on from there). So that a cut costs no second
fold, the worker holds its encoded state at a cut point (a segment's start) every
``hold_every_bytes`` of log it folds (``HeldState``): the base is then bytes it has; with
``keep_base`` (a JetStream stream whose own limits delete) it keeps a checkpoint
past the stream's first message as the base, so replays start where it does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Final

import anyio
import anyio.abc

from bus.contract import Bus
from bus.errors import BusError, BusUnavailable, NotRetained, TallyError
from bus.lines import Batch
from projections.config import ProjectionConfig
from projections.fold import Projection
from server.live.checkpoint import Checkpoint, CheckpointStore
from server.live.compact import (
    Compaction,
    HeldState,
    compact,
    list_bases,
    load_base,
    log_start,
    promote,
)

__all__ = ["ProjectionWorker"]

log = logging.getLogger("tally.worker")

#: How long a reading of the bus's end may take before the last one known is used.
END_TIMEOUT_S: Final = 1.0
#: How long to wait before reading again when the bus stopped answering.
RETRY_S: Final = 1.0
#: At most this many held states, and bytes of them; past either, every other one goes.
MAX_HELD: Final = 32
MAX_HELD_BYTES: Final = 64 << 20


class ProjectionWorker:
    def __init__(
        self,
        data_dir: Path,
        bus: Bus,
        config: ProjectionConfig,
        *,
        checkpoint_every_events: int = 100_000,
        checkpoint_every_s: float = 30.0,
        retain_bytes: int | None = None,
        retain_age_s: float | None = None,
        keep_base: bool = False,
        hold_every_bytes: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.bus = bus
        self.config = config
        self.store = CheckpointStore(data_dir, bus)
        self.checkpoint_every_events = checkpoint_every_events
        self.checkpoint_every_s = checkpoint_every_s
        self.projection = Projection(config)
        self.ready = anyio.Event()
        self.restored_from: int | None = None
        self.last_checkpoint: Checkpoint | None = None
        #: The oldest position the bus held when the worker caught up.
        self.first_position: int | None = None
        #: Where retention removed events this projection had not folded: [from, to).
        self.skipped_from: int | None = None
        self.skipped_to: int | None = None
        self._end = 0
        self._events_since_checkpoint = 0
        self._last_checkpoint_time = time.monotonic()
        self._checkpoint_lock = anyio.Lock()
        self.retain_bytes = retain_bytes
        self.retain_age_s = retain_age_s
        self.keep_base = keep_base
        self._checkpointed = anyio.Event()
        #: What the last retention pass did (``None``: none ran yet).
        self.last_compaction: Compaction | None = None
        #: States held at cut points past the base, oldest first (retention only).
        self.held: list[HeldState] = []
        self.hold_every_bytes = (
            hold_every_bytes if retain_bytes is not None or retain_age_s is not None else None
        )
        self._bytes_since_held = 0

    # -- the bus's end ---------------------------------------------------------

    async def end(self) -> int:
        """The bus's end now; the last one known when the bus does not answer within a second."""
        with anyio.move_on_after(END_TIMEOUT_S):
            try:
                self._end = max(self._end, await self.bus.end())
            except BusError as exc:
                log.debug("end of %s unknown: %s", self.bus.url, exc)
        return max(self._end, self.projection.offset)

    # -- the fold loop -------------------------------------------------------

    async def restore(self) -> None:
        """Load the newest valid checkpoint, else the base, if any (else the state stays empty)."""
        self.held = []  # states of the fold being replaced
        base = await load_base(self.data_dir, self.bus, self.config)
        floor = base.offset if base is not None else None
        restored = await self.store.load_latest(self.config, floor=floor)
        if restored is None and base is not None:
            restored = base.projection()
            log.info("restoring the base snapshot %s", base.path)
        if restored is not None:
            self.projection = restored
            self.restored_from = restored.offset
            log.info("restored checkpoint at offset %d", restored.offset)
            # Only the checkpoint actually restored counts: a newer file that was ignored
            # (corrupt, or from another log) must not suppress the next checkpoint.
            self.last_checkpoint = next(
                (c for c in self.store.list() if c.offset == restored.offset), None
            )

    async def _fold(self, batch: Batch) -> None:
        if (
            self.hold_every_bytes is not None
            and self._bytes_since_held >= self.hold_every_bytes
            and batch.start == self.projection.offset
        ):
            await self._hold(batch.start)
        self.projection.fold_batch(batch)
        self._events_since_checkpoint += len(batch.events)
        self._bytes_since_held += batch.nbytes

    async def _hold(self, position: int) -> None:
        """Keep the state at ``position`` (all before it folded) if the bus can cut there."""
        try:
            if await self.bus.cut_point(position) != position:
                return
            offset, data = await self.store.prepare(self.projection)
        except BusError as exc:  # the fold goes on; the next cut point is held instead
            log.debug("not holding the state at %d: %s", position, exc)
            return
        self.held.append(HeldState(offset, data))
        self._bytes_since_held = 0
        while len(self.held) > 1 and (
            len(self.held) > MAX_HELD or sum(len(h.data) for h in self.held) > MAX_HELD_BYTES
        ):
            self.held = self.held[::-1][::2][::-1]  # the newest, and every other one before it

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self.restore()
        task_status.started()
        async with anyio.create_task_group() as tg:
            if self.retain_bytes is not None or self.retain_age_s is not None or self.keep_base:
                tg.start_soon(self._retain)
            await self._fold_forever()

    async def _fold_forever(self) -> None:
        while True:
            try:
                await self._fold_bus()
            except BusUnavailable as exc:  # a NATS node lost, a leader being elected
                log.warning(
                    "%s; reading again from offset %d in %.0f s",
                    exc,
                    self.projection.offset,
                    RETRY_S,
                )
                await anyio.sleep(RETRY_S)
            except NotRetained as exc:  # `tally compact` cut the log ahead of this fold
                log.warning("%s; restoring the base snapshot and folding on from there", exc)
                folded = self.projection.offset
                await self.restore()
                if self.projection.offset <= folded:
                    raise  # no base past the cut: the events are gone, not skippable

    async def _fold_bus(self) -> None:
        """Catch up (unless ready), then follow; from the folded position, so it may run again."""
        if not self.ready.is_set():
            start = await self._start()
            target = await self.bus.end()
            log.info("catching up on %s from offset %d to %d", self.bus.url, start, target)
            async for batch in self.bus.read(start):
                await self._fold(batch)
                await self._maybe_checkpoint()
                await anyio.sleep(0)  # let scrapes in between batches
                if batch.end >= target:
                    break
            # everything before target is folded (an empty stream holds nothing before it)
            self.projection.offset = max(self.projection.offset, target)
            self._end = max(self._end, target)
            self.ready.set()
            log.info("ready at offset %d", self.projection.offset)
        async for batch in self.bus.follow(self.projection.offset):
            await self._fold(batch)
            await self._maybe_checkpoint()

    async def _start(self) -> int:
        """Where to read from: the folded position, or the oldest one held if retention took it."""
        first = await self.bus.first()
        self.first_position = first
        folded = self.projection.offset
        if first <= folded:
            return folded
        if list_bases(self.data_dir):  # a compaction since the restore: its base is ahead
            await self.restore()
            folded = self.projection.offset
            if first <= folded:
                return folded
        if self.restored_from is not None:
            self.skipped_from, self.skipped_to = folded, first
            log.warning(
                "%s no longer holds the events from offset %d to %d (retention removed them); "
                "folding what is left",
                self.bus.url,
                folded,
                first,
            )
        return first

    # -- checkpoints -----------------------------------------------------------

    async def _maybe_checkpoint(self) -> None:
        due = self._events_since_checkpoint >= self.checkpoint_every_events or (
            self._events_since_checkpoint
            and time.monotonic() - self._last_checkpoint_time >= self.checkpoint_every_s
        )
        if due:
            try:
                await self.checkpoint()
            except OSError as exc:  # e.g. ENOSPC: the older checkpoints stay; try again later
                log.warning(
                    "cannot write a checkpoint at offset %d (retrying in %.0f s): %s",
                    self.projection.offset,
                    self.checkpoint_every_s,
                    exc,
                )

    async def checkpoint(self) -> Checkpoint | None:
        """Snapshot the state now (if it moved since the last one); safe to call any time."""
        async with self._checkpoint_lock:
            if self.last_checkpoint is not None and (
                self.last_checkpoint.offset == self.projection.offset
            ):
                return self.last_checkpoint
            prepared = await self.store.prepare(self.projection)
            self._events_since_checkpoint = 0
            self._last_checkpoint_time = time.monotonic()
            with anyio.CancelScope(shield=True):
                checkpoint = await anyio.to_thread.run_sync(self.store.write, *prepared)
            self.last_checkpoint = checkpoint
            log.info("checkpoint at offset %d", checkpoint.offset)
            self._checkpointed.set()
            return checkpoint

    # -- retention ---------------------------------------------------------------

    async def _retain(self) -> None:
        """After each checkpoint, cut the log by ``retain_bytes`` and ``retain_age_s``, or keep
        a base ahead of the stream's own deletions."""
        while True:
            await self._checkpointed.wait()
            self._checkpointed = anyio.Event()
            if self.keep_base:
                await self._keep_base()
                continue
            folded = self.last_checkpoint.offset if self.last_checkpoint is not None else 0
            try:
                self.last_compaction = await compact(
                    self.data_dir,
                    self.bus,
                    self.config,
                    retain_bytes=self.retain_bytes,
                    older_than_s=self.retain_age_s,
                    clock=self.projection.clock.now,
                    ceiling=folded,
                    held=self.held,
                )
                base = self.last_compaction.base
                if base is not None:  # what is at or before the base can never be used
                    self.held = [h for h in self.held if h.offset > base.offset]
            except (TallyError, OSError) as exc:  # busy, a full disk, a bus away: next time
                log.warning("retention: cannot compact the log now: %s", exc)

    async def _keep_base(self) -> None:
        """The newest checkpoint becomes the base once the stream's first message passed the
        base (or there is none yet)."""
        checkpoint = self.last_checkpoint
        if checkpoint is None:
            return
        try:
            first = await self.bus.first()
            bases = list_bases(self.data_dir)
            if checkpoint.offset >= first and (not bases or bases[0][0] < first):
                start_ts = await log_start(
                    self.bus, await load_base(self.data_dir, self.bus, self.config)
                )
                await anyio.to_thread.run_sync(
                    promote, self.data_dir, checkpoint.path, checkpoint.offset, start_ts
                )
        except (TallyError, OSError) as exc:
            log.warning("retention: cannot keep a base snapshot now: %s", exc)
