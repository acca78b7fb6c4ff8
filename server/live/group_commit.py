"""Group commit: concurrent submissions share one append to the bus (and one fsync).

A submission is acknowledged only after the bus acknowledged its batch (on the
file bus: written, and fsynced under the ``always`` policy). A failed append
fails every submission of its group; nothing of a failed group is acknowledged,
and the failure is counted by reason (``tally_append_errors_total``).
A submission with a ``msg_id`` is appended as a batch of its own, so that the
id stands for exactly its events (a retry then gets exactly its positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.abc

from bus.contract import Bus
from bus.errors import BusError, BusFull, BusUnavailable
from bus.events import Event, encode_events, stamp

__all__ = ["APPEND_ERROR_REASONS", "GroupCommitter", "Submission", "append_error_reason"]

#: The ``reason`` label of ``tally_append_errors_total``: why an append failed.
APPEND_ERROR_REASONS: Final[dict[str, str]] = {
    "no_space": "the device or quota is full (HTTP 507)",
    "unavailable": "the bus cannot be reached (a NATS node lost, a leader being elected)",
    "io_error": "any other bus error (EIO, a closed bus, ...)",
    "other": "an unexpected error",
}


def append_error_reason(exc: BaseException) -> str:
    """``exc``'s ``reason`` label for ``tally_append_errors_total``."""
    if isinstance(exc, BusFull):
        return "no_space"
    if isinstance(exc, BusUnavailable):
        return "unavailable"
    if isinstance(exc, BusError):
        return "io_error"
    return "other"


@dataclass(slots=True)
class Submission:
    events: list[Event]
    msg_id: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    offsets: list[int] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommitter:
    """One task drains every waiting submission into a single append."""

    def __init__(self, bus: Bus, *, max_group_events: int = 100_000) -> None:
        self.bus = bus
        self.max_group_events = max_group_events
        self.groups_written = 0
        self.events_written = 0
        #: Events submitted and not yet acknowledged or failed (what callers wait on).
        self.pending_events = 0
        #: Failed appends (groups, not submissions) by ``append_error_reason``.
        self.append_errors: dict[str, int] = {}
        send, receive = anyio.create_memory_object_stream[Submission](math.inf)
        self._send = send
        self._receive = receive

    async def submit(self, events: list[Event], msg_id: str | None = None) -> list[int]:
        """Append ``events`` (already validated) and return their positions once acknowledged.

        With ``msg_id``, the same id submitted again within the bus's de-dup window
        appends nothing and returns the first submission's positions.
        """
        submission = Submission(stamp(events), msg_id)
        self.pending_events += len(events)
        try:
            await self._send.send(submission)
            await submission.done.wait()
        finally:
            self.pending_events -= len(events)
        if submission.error is not None:
            raise submission.error
        return submission.offsets

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The committing task: runs until cancelled."""
        task_status.started()
        carried: Submission | None = None
        async with self._receive:
            while True:
                if carried is None:
                    try:
                        first = await self._receive.receive()
                    except anyio.EndOfStream:
                        return
                else:
                    first, carried = carried, None
                group = [first]
                count = len(first.events)
                while first.msg_id is None and count < self.max_group_events:
                    try:
                        nxt = self._receive.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    if nxt.msg_id is not None:  # goes alone, next
                        carried = nxt
                        break
                    group.append(nxt)
                    count += len(nxt.events)
                await self._commit(group, count, first.msg_id)

    async def _commit(self, group: list[Submission], count: int, msg_id: str | None) -> None:
        events = [ev for sub in group for ev in sub.events]
        data = encode_events(events)
        try:
            with anyio.CancelScope(shield=True):
                offsets = await self.bus.append_encoded(data, count, msg_id=msg_id)
        except Exception as exc:  # every waiter learns of the failure
            reason = append_error_reason(exc)
            self.append_errors[reason] = self.append_errors.get(reason, 0) + 1
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
