"""conductor-loop messages as tally events: one parsed message (and its run record) in, events out.

Rule: no I/O and no clock here; every event takes its ``ts`` from the message.
"""

from __future__ import annotations

from bus.events import BusMessage, Event, RunFinished, RunStarted
from server.conductor.files import BusFile
from server.conductor.format import (
    RUN_CRASH,
    RUN_START,
    RUN_STOP,
    BusEntry,
    exit_code_in,
)
from server.conductor.runinfo import RunInfo

__all__ = ["entry_events", "is_run_message"]


def is_run_message(entry: BusEntry) -> bool:
    """Whether the message is a RUN_START, RUN_STOP or RUN_CRASH (in any case)."""
    return entry.msg_type.upper() in (RUN_START, RUN_STOP, RUN_CRASH)


def entry_events(entry: BusEntry, bus_file: BusFile, run: RunInfo | None) -> list[Event]:
    """The events of one message: a ``bus_message``, then a run event for RUN_* with a run_id."""
    project = entry.project or bus_file.project
    task = entry.task or bus_file.task
    events: list[Event] = [
        BusMessage(
            ts=entry.ts,
            project=project,
            task=task,
            run_id=entry.run_id,
            msg_type=entry.msg_type,
            msg_id=entry.msg_id,
        )
    ]
    kind = entry.msg_type.upper()
    if not entry.run_id or kind not in (RUN_START, RUN_STOP, RUN_CRASH):
        return events
    agent = run.agent if run is not None else ""
    if kind == RUN_START:
        events.append(
            RunStarted(ts=entry.ts, run_id=entry.run_id, project=project, task=task, agent=agent)
        )
        return events
    failed = kind == RUN_CRASH
    exit_code = run.exit_code if run is not None and run.finished else None
    if exit_code is None:
        exit_code = exit_code_in(entry.body)
    if exit_code is None:
        exit_code = -1 if failed else 0
    events.append(
        RunFinished(
            ts=entry.ts,
            run_id=entry.run_id,
            project=project,
            task=task,
            agent=agent,
            status="failed" if failed else "completed",
            exit_code=exit_code,
            duration_s=run.duration_s if run is not None else None,
        )
    )
    return events
