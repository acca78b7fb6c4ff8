"""The log as a whole: one pass over every event, through the bus contract, into one ``LogReport``.

Rule: a scan reads and never writes the log; like every reader it quarantines
the corrupt lines it meets (once each), so a scan shows where they went. What
only one backend has (segments and a torn tail on the files, messages on
JetStream) is filled in for that backend and left ``None`` for the other.
"""

from __future__ import annotations

import msgspec

from bus.contract import Bus
from bus.filebus import FileBus
from bus.reader import BusReader
from bus.segments import list_segments

__all__ = ["LogReport", "missing_log", "scan_log"]


class LogReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one scan found: the log's shape, its events by type, and its trouble."""

    #: Segment files (file bus only).
    segments: int | None = None
    #: Stored messages, one per appended batch (JetStream only).
    messages: int | None = None
    bytes: int
    events: int
    events_by_type: dict[str, int]
    corrupt_lines: int
    unknown_events: int
    unknown_types: dict[str, int]
    #: The last segment ends inside a line: a write in progress, or a dead writer (file bus only).
    torn_tail: bool | None = None
    #: Position just past the last complete line (file bus: a byte offset).
    end_offset: int


def missing_log(bus: Bus) -> str | None:
    """Where the log should be when nothing is there (a file bus without its directory)."""
    if isinstance(bus, FileBus) and not bus.bus.is_dir():
        return str(bus.bus)
    return None


async def scan_log(bus: Bus) -> LogReport:
    """Read ``bus`` from its first event to its end (all zeros when it holds none)."""
    by_type: dict[str, int] = {}
    unknown_types: dict[str, int] = {}
    events = corrupt = unknown = 0
    async for batch in bus.read(await bus.first()):
        for event in batch.events:
            tag = str(type(event).__struct_config__.tag)
            by_type[tag] = by_type.get(tag, 0) + 1
        for tag, n in batch.unknown_types.items():
            unknown_types[tag] = unknown_types.get(tag, 0) + n
        events += len(batch.events)
        corrupt += batch.corrupt
        unknown += batch.unknown
    segments = messages = None
    torn_tail = None
    if isinstance(bus, FileBus):
        files = list_segments(bus.bus)
        segments, size = len(files), sum(seg.size for seg in files)
        torn_tail = BusReader(bus.data_dir, bus=bus.bus, quarantine=False).torn_tail()
    else:
        messages, size = await _messages(bus), await bus.size()
    return LogReport(
        segments=segments,
        messages=messages,
        bytes=size,
        events=events,
        events_by_type=dict(sorted(by_type.items())),
        corrupt_lines=corrupt,
        unknown_events=unknown,
        unknown_types=dict(sorted(unknown_types.items())),
        torn_tail=torn_tail,
        end_offset=await bus.end(),
    )


async def _messages(bus: Bus) -> int | None:
    from bus.jetstream import JetStreamBus  # noqa: PLC0415 - imports nats

    if isinstance(bus, JetStreamBus):
        return await bus.messages()
    return None
