"""conductor-loop's message buses under a runs root, appended to tally's bus exactly once.

Rule: a pass appends its events first and saves the file positions after; on
start, every ``bus_message`` id found on the bus past the saved bus position
counts as already appended. So a crash between the two steps is caught up with
neither a message counted twice nor one skipped. Each pass's append carries a
``msg_id`` derived from the files and message ids it holds, so a batch retried
after a lost acknowledgement (a timeout from JetStream) lands once.

Files are known by identity, not by path (see ``server.conductor.positions``): a
rotation keeps its position, a truncated or rewritten file is read again from the
start, and a file replaced by a copy (new inode, same name, same bytes up to the
position) keeps its position.

Which files and run records there are: ``server.conductor.files``; the events a
message becomes: ``server.conductor.events``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import msgspec

from bus.contract import Bus
from bus.events import Event
from server.conductor.events import entry_events, is_run_message
from server.conductor.files import BusFile, discover, read_run_info
from server.conductor.format import BusEntry, parse_bus
from server.conductor.positions import (
    FileState,
    Positions,
    advanced,
    appended_ids,
    copy_of,
    load_positions,
    lock_positions,
    save_positions,
    still_valid,
)
from server.conductor.runinfo import RunInfo

__all__ = [
    "DEFAULT_POLL_S",
    "AppendEvents",
    "BlockReport",
    "BridgeStats",
    "ConductorBridge",
]

log = logging.getLogger("tally.conductor")

#: Appends events to tally's bus as one batch under a msg_id; their positions once written.
AppendEvents = Callable[[list[Event], str | None], Awaitable[list[int]]]

DEFAULT_POLL_S: Final = 0.25
RETRY_S: Final = 2.0  # pause after a failed pass while following
CHUNK_BYTES: Final = 4 << 20
MAX_BATCH_EVENTS: Final = 20_000  # a pass stops here; the next one goes on at once
MISSING_TTL_S: Final = 86_400.0  # a vanished file's position is kept this long
IDLE_SAVE_BYTES: Final = 4 << 20  # re-save when the bus grew this much past the saved offset


# -- the bridge -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockReport:
    """An unparseable block: the file, its line, why."""

    path: Path
    line: int
    reason: str


@dataclass(slots=True)
class BridgeStats:
    """Running totals; ``files`` and ``pending`` describe the last pass."""

    files: int = 0
    messages: int = 0  # messages appended
    events: int = 0  # events appended (messages plus run events)
    duplicates: int = 0  # messages found already appended, skipped
    unparseable: int = 0  # broken blocks reported
    pending: int = 0  # files ending in an entry or line still being written
    rewritten: int = 0  # files found truncated or rewritten, read again from the start
    runs_without_id: int = 0  # RUN_* messages without a run_id: no run event
    passes: int = 0


@dataclass(slots=True)
class _Pass:
    states: dict[tuple[int, int], FileState]
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    settled: dict[tuple[int, int], int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    reports: list[BlockReport] = field(default_factory=list)
    used: Counter[str] = field(default_factory=Counter)
    stats: BridgeStats = field(default_factory=BridgeStats)
    quiet: bool = True  # every file was parsed as quiet (its size seen twice)
    cut: bool = False  # stopped at MAX_BATCH_EVENTS; more to do at once
    runs: dict[tuple[str, str, str], RunInfo | None] = field(default_factory=dict)
    #: Digest of the files and message ids of the events: the append's msg_id.
    key: hashlib.blake2b = field(default_factory=lambda: hashlib.blake2b(digest_size=16))

    @property
    def msg_id(self) -> str:
        return f"conductor-{self.key.hexdigest()}"


def _log_report(report: BlockReport) -> None:
    log.warning("%s:%d: %s", report.path, report.line, report.reason)


class ConductorBridge:
    """Imports every bus file under ``root`` into ``bus``; ``run(follow=True)`` keeps doing it.

    ``append`` replaces ``bus.append`` (``tally serve`` goes through its group committer).
    """

    def __init__(
        self,
        root: Path,
        data_dir: Path,
        bus: Bus,
        *,
        append: AppendEvents | None = None,
        report: Callable[[BlockReport], None] = _log_report,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.data_dir = data_dir
        self.stats = BridgeStats()
        self.bus = bus
        self._append = append if append is not None else self._bus_append
        self._report = report
        self._clock = clock
        self._key = str(self.root.resolve())
        self._lock_fd: int | None = None
        self._positions = Positions()
        self._states: dict[tuple[int, int], FileState] = {}
        self._already: Counter[str] = Counter()  # ids appended before a crash, not matched yet
        self._sizes: dict[tuple[int, int], int] = {}  # each file's size at the previous pass
        self._settled: dict[tuple[int, int], int] = {}  # size at which a quiet parse left a tail
        self._unsaved = False  # positions changed in memory but not yet saved

    # -- lifetime -------------------------------------------------------------------

    async def _bus_append(self, events: list[Event], msg_id: str | None) -> list[int]:
        return await self.bus.append(events, msg_id=msg_id)

    async def open(self) -> None:
        """Take the lock, load the positions and collect the ids appended since their save."""
        self._lock_fd = lock_positions(self.data_dir)
        try:
            await self._load()
        except BaseException:
            self.close()
            raise

    async def _load(self) -> None:
        end = await self.bus.end()
        self._positions = await anyio.to_thread.run_sync(load_positions, self.data_dir, end)
        states = self._positions.roots.get(self._key, [])
        self._states = {(s.dev, s.ino): s for s in states}
        self._already, self._positions.bus_offset = await appended_ids(
            self.bus, self._positions.bus_offset
        )

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _save(self) -> None:
        save_positions(self.data_dir, self._positions)

    async def run(
        self,
        *,
        follow: bool = False,
        poll_interval_s: float = DEFAULT_POLL_S,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> BridgeStats:
        """Import until every file is read (or, with ``follow``, until cancelled).

        Opens the bridge unless ``open()`` was called already; closes it on the way out.
        """
        if self._lock_fd is None:
            await self.open()
        try:
            task_status.started()
            while True:
                try:
                    more = await self.poll(quiet=not follow)
                except Exception:
                    if not follow:
                        raise
                    log.exception("conductor import pass failed; retrying")  # nothing was saved
                    await anyio.sleep(RETRY_S)
                    more = False
                if not more:
                    if not follow:
                        return self.stats
                    await anyio.sleep(poll_interval_s)
        finally:
            self.close()

    async def poll(self, *, quiet: bool) -> bool:
        """One pass: read, append, save. ``quiet`` treats every file as complete (one-shot).

        Returns whether the pass stopped early with more to read.
        """
        plan = await anyio.to_thread.run_sync(self._plan, quiet)
        if plan.events:
            try:
                await self._append(plan.events, plan.msg_id)
            except Exception:  # part of the batch may have landed: take it as appended
                await self._recheck()
                raise
        with anyio.CancelScope(shield=True):
            end = await self.bus.end()
            await anyio.to_thread.run_sync(self._commit, plan, end)
        return plan.cut

    async def _recheck(self) -> None:
        self._already, _ = await appended_ids(self.bus, self._positions.bus_offset)

    # -- one pass -------------------------------------------------------------------------

    def _plan(self, quiet_all: bool) -> _Pass:
        now = self._clock()
        plan = _Pass(states={})
        found: list[tuple[BusFile, os.stat_result]] = []
        for bus_file in discover(self.root):
            try:
                st = os.stat(bus_file.path, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in plan.sizes:
                plan.sizes[(st.st_dev, st.st_ino)] = st.st_size
                found.append((bus_file, st))
        orphans = {k: s for k, s in self._states.items() if k not in plan.sizes}
        for bus_file, st in found:
            ident = (st.st_dev, st.st_ino)
            state = self._states.get(ident) or copy_of(
                orphans, bus_file.path, bus_file.logical, st.st_size
            )
            if state is not None:  # as found now: the file may have been renamed or replaced
                state = msgspec.structs.replace(
                    state, dev=ident[0], ino=ident[1], path=bus_file.rel, missing_since=None
                )
                plan.states[ident] = state
            if plan.cut:
                continue
            quiet = quiet_all or self._sizes.get(ident) == st.st_size
            plan.quiet &= quiet
            try:
                self._plan_file(plan, bus_file, st, state, quiet=quiet)
            except OSError as exc:
                log.warning("cannot read %s: %s", bus_file.path, exc)
        for ident, state in orphans.items():
            since = state.missing_since if state.missing_since is not None else now
            if now - since < MISSING_TTL_S:
                plan.states[ident] = msgspec.structs.replace(state, missing_since=since)
        plan.stats.files = len(found)
        return plan

    def _plan_file(
        self,
        plan: _Pass,
        bus_file: BusFile,
        st: os.stat_result,
        state: FileState | None,
        *,
        quiet: bool,
    ) -> None:
        """Read one file from its position; its new state goes into ``plan.states``."""
        ident = (st.st_dev, st.st_ino)
        size = st.st_size
        fresh = FileState(dev=ident[0], ino=ident[1], path=bus_file.rel, logical=bus_file.logical)
        if state is not None:
            if size == state.offset:
                return  # nothing new
            if quiet and self._settled.get(ident) == size:
                plan.settled[ident] = size  # a tail still incomplete: nothing new either
                plan.stats.pending += 1
                return
        skip: set[str] = set()
        with open(bus_file.path, "rb", buffering=0) as f:
            fd = f.fileno()
            if state is not None and not still_valid(fd, size, state):
                log.warning(
                    "%s was truncated or rewritten: reading it from the start", bus_file.path
                )
                plan.stats.rewritten += 1
                skip = set(state.recent)
                state = None
            state = state or fresh
            pos, line, recent = state.offset, state.line, list(state.recent)
            chunk, pending = CHUNK_BYTES, False
            while True:
                want = min(chunk, size - pos)
                data = os.pread(fd, want, pos)
                at_end = len(data) < want or pos + len(data) >= size
                result = parse_bus(
                    data,
                    offset=pos,
                    line=line,
                    final=quiet and at_end and len(data) == want,
                    id_seed=bus_file.logical,
                )
                for error in result.errors:
                    plan.reports.append(BlockReport(bus_file.path, error.line, error.reason))
                for entry in result.entries:
                    self._take(plan, entry, bus_file, ident, skip)
                    recent.append(entry.msg_id)
                stalled = result.consumed == pos
                pos, line = result.consumed, result.consumed_line
                if at_end:
                    pending = result.pending_line is not None
                    break
                if len(plan.events) >= MAX_BATCH_EVENTS:
                    plan.cut = True
                    break
                if stalled:  # one entry longer than a chunk
                    chunk *= 2
            plan.states[ident] = advanced(state, fd, size, offset=pos, line=line, recent=recent)
        if pending:
            plan.stats.pending += 1
            if quiet:
                plan.settled[ident] = size

    def _take(
        self,
        plan: _Pass,
        entry: BusEntry,
        bus_file: BusFile,
        ident: tuple[int, int],
        skip: set[str],
    ) -> None:
        """Add one message's events to the pass, unless it was appended already."""
        msg_id = entry.msg_id
        if self._already[msg_id] > plan.used[msg_id]:
            plan.used[msg_id] += 1
            plan.stats.duplicates += 1
            return
        if msg_id in skip:
            skip.discard(msg_id)
            plan.stats.duplicates += 1
            return
        run = None
        if is_run_message(entry):
            if entry.run_id:
                run = self._run_info(entry, bus_file, plan.runs)
            else:
                plan.stats.runs_without_id += 1
        events = entry_events(entry, bus_file, run)
        where = f"{ident[0]}:{ident[1]}:{bus_file.logical}:{entry.offset}"
        plan.key.update(f"{where}\0{msg_id}\n".encode())
        plan.events.extend(events)
        plan.stats.messages += 1
        plan.stats.events += len(events)

    def _run_info(
        self, entry: BusEntry, bus_file: BusFile, runs: dict[tuple[str, str, str], RunInfo | None]
    ) -> RunInfo | None:
        """``<root>/<project>/<task>/runs/<run_id>/run-info.yaml``, read once per pass."""
        key = (entry.project or bus_file.project, entry.task or bus_file.task, entry.run_id)
        if key not in runs:
            runs[key] = read_run_info(self.root, *key)
        return runs[key]

    def _commit(self, plan: _Pass, end: int) -> None:
        """After the append: adopt the pass's positions, report its blocks, save.

        Memory is updated before the save, so a failed save never appends twice;
        it is retried at the next pass (a crash before then is the recovery case).
        """
        changed = bool(plan.events) or plan.states != self._states or self._unsaved
        self._unsaved = changed
        self._states = plan.states
        self._sizes = plan.sizes
        self._settled = plan.settled
        self._already -= plan.used
        if plan.quiet and not plan.cut and self._already:
            self._already.clear()  # every file was read to its quiet end: the rest is not ours
            changed = True
        for report in plan.reports:
            self._report(report)
        total, done = self.stats, plan.stats
        total.files, total.pending = done.files, done.pending
        total.messages += done.messages
        total.events += done.events
        total.duplicates += done.duplicates
        total.unparseable += len(plan.reports)
        total.rewritten += done.rewritten
        total.runs_without_id += done.runs_without_id
        total.passes += 1
        if not changed and end - self._positions.bus_offset < IDLE_SAVE_BYTES:
            return
        if not self._already:  # else keep re-checking from where the unmatched ids are
            self._positions.bus_offset = end
        self._positions.roots[self._key] = list(self._states.values())
        self._save()
        self._unsaved = False
