"""Group commit: concurrent submissions share one locked write (and one fsync).

A submission is acknowledged only after its bytes are written (and fsynced
under the ``always`` policy). A failed write fails every submission of its
group; nothing of a failed group is acknowledged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import anyio
import anyio.abc

from bus.events import Event, encode_events, stamp
from bus.writer import BusWriter

__all__ = ["GroupCommitter", "Submission"]


@dataclass(slots=True)
class Submission:
    events: list[Event]
    done: anyio.Event = field(default_factory=anyio.Event)
    offsets: list[int] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommitter:
    """One writer task drains every waiting submission into a single append."""

    def __init__(self, writer: BusWriter, *, max_group_events: int = 100_000) -> None:
        self.writer = writer
        self.max_group_events = max_group_events
        self.groups_written = 0
        self.events_written = 0
        send, receive = anyio.create_memory_object_stream[Submission](math.inf)
        self._send = send
        self._receive = receive

    async def submit(self, events: list[Event]) -> list[int]:
        """Append ``events`` (already validated) and return their offsets once durable."""
        submission = Submission(stamp(events))
        await self._send.send(submission)
        await submission.done.wait()
        if submission.error is not None:
            raise submission.error
        return submission.offsets

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer task: runs until cancelled."""
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                group = [first]
                count = len(first.events)
                while count < self.max_group_events:
                    try:
                        nxt = self._receive.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    group.append(nxt)
                    count += len(nxt.events)
                await self._commit(group, count)

    async def _commit(self, group: list[Submission], count: int) -> None:
        events = [ev for sub in group for ev in sub.events]
        data = encode_events(events)
        try:
            with anyio.CancelScope(shield=True):
                offsets = await anyio.to_thread.run_sync(self.writer.append_encoded, data, count)
        except Exception as exc:  # every waiter learns of the failure
            for sub in group:
                sub.error = exc
                sub.done.set()
            return
        start = 0
        for sub in group:
            end = start + len(sub.events)
            sub.offsets = offsets[start:end]
            start = end
            sub.done.set()
        self.groups_written += 1
        self.events_written += count
