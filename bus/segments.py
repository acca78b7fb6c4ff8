"""Layout of the log on disk: ``<data_dir>/bus/LOCK`` and segments named by their base offset.

Rule: an event's identity is its global byte offset, the base of its segment plus
the position of its line; segment N+1 starts exactly where segment N ends.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "LOCK_NAME",
    "SEGMENT_SUFFIX",
    "Segment",
    "bus_dir",
    "list_segments",
    "lock_path",
    "segment_name",
]

LOCK_NAME: Final = "LOCK"
SEGMENT_SUFFIX: Final = ".jsonl"
_SEGMENT_RE: Final = re.compile(r"^(\d{20})\.jsonl$")


def bus_dir(data_dir: Path) -> Path:
    """The directory holding the lock file and the segments."""
    return data_dir / "bus"


def lock_path(bus: Path) -> Path:
    """The append lock shared by every writer process (``bus/LOCK``)."""
    return bus / LOCK_NAME


def segment_name(base: int) -> str:
    """File name of the segment whose first byte has global offset ``base``."""
    if base < 0:
        raise ValueError(f"segment base must be >= 0, got {base}")
    return f"{base:020d}{SEGMENT_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment file; its size is read from the file system on each access."""

    base: int
    path: Path

    @property
    def size(self) -> int:
        """Current size in bytes (0 if the file has vanished)."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    @property
    def end(self) -> int:
        """Global offset just past the segment's current last byte."""
        return self.base + self.size


def list_segments(bus: Path) -> list[Segment]:
    """The segments in ``bus`` sorted by base; other files are ignored."""
    try:
        names = os.listdir(bus)
    except FileNotFoundError:
        return []
    segments = [
        Segment(int(match.group(1)), bus / name)
        for name in names
        if (match := _SEGMENT_RE.match(name)) is not None
    ]
    segments.sort(key=lambda seg: seg.base)
    return segments
