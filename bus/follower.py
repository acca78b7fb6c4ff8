"""Following the log as it grows: an async generator of batches, by polling segment sizes.

Rule: a follower yields only complete lines, in log order, each exactly once;
it polls (no threads, no inotify), so any anyio backend can run it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel

from bus.reader import Batch, BusReader
from bus.segments import list_segments

__all__ = ["follow"]


def _log_shape(bus: Path) -> tuple[int, int]:
    """``(base, size)`` of the last segment: it changes whenever anything is appended."""
    segments = list_segments(bus)
    if not segments:
        return (-1, 0)
    last = segments[-1]
    return (last.base, last.size)


async def follow(
    data_dir: Path,
    offset: int = 0,
    *,
    poll_interval: float = 0.01,
    reader: BusReader | None = None,
) -> AsyncIterator[Batch]:
    """Yield batches from ``offset`` on, forever: first the backlog, then each append.

    New lines arrive within about ``poll_interval`` of their append; rotation
    is followed. Each batch's ``end`` is where to resume after a restart.
    Pass ``reader`` to share its quarantine and ``stats`` (and to follow its ``bus``).
    """
    if poll_interval <= 0:
        raise ValueError("poll_interval must be positive")
    reader = reader if reader is not None else BusReader(data_dir)
    bus = reader.bus
    position = offset
    seen: tuple[int, int] | None = None
    while True:
        shape = _log_shape(bus)
        if shape == seen:
            await anyio.sleep(poll_interval)
            continue
        seen = shape  # taken before reading: anything appended meanwhile shows next time
        for batch in reader.read_from(position):
            position = batch.end
            yield batch
            await anyio.lowlevel.checkpoint()
