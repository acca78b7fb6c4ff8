"""The log as a whole: one pass over every line, counted into one ``LogReport``.

Rule: a scan reads and never writes the log; like every reader it quarantines
the corrupt lines it meets (once each), so a scan shows where they went.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from bus.reader import BusReader
from bus.segments import bus_dir, list_segments

__all__ = ["LogReport", "scan_log"]


class LogReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one scan found: the log's shape, its events by type, and its trouble."""

    segments: int
    bytes: int
    events: int
    events_by_type: dict[str, int]
    corrupt_lines: int
    unknown_events: int
    unknown_types: dict[str, int]
    #: The last segment ends inside a line (a write in progress, or a dead writer).
    torn_tail: bool
    #: Offset just past the last complete line.
    end_offset: int


def scan_log(data_dir: Path) -> LogReport:
    """Read the log of ``data_dir`` from its start to its end (all zeros when it has none)."""
    reader = BusReader(data_dir)
    by_type: dict[str, int] = {}
    unknown_types: dict[str, int] = {}
    for batch in reader.read_from(0):
        for event in batch.events:
            tag = str(type(event).__struct_config__.tag)
            by_type[tag] = by_type.get(tag, 0) + 1
        for tag, n in batch.unknown_types.items():
            unknown_types[tag] = unknown_types.get(tag, 0) + n
    segments = list_segments(bus_dir(data_dir))
    return LogReport(
        segments=len(segments),
        bytes=sum(seg.size for seg in segments),
        events=reader.stats.events,
        events_by_type=dict(sorted(by_type.items())),
        corrupt_lines=reader.stats.corrupt,
        unknown_events=reader.stats.unknown,
        unknown_types=dict(sorted(unknown_types.items())),
        torn_tail=reader.torn_tail(),
        end_offset=reader.end_offset(),
    )
