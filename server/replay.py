"""Replays from a data directory: open the log, fold it from its start, as of now or the past.

Rule: this module opens readers; the folding itself is ``projections.replay``'s, pure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bus.reader import BusReader
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.replay import fold_batches, fold_steps

__all__ = ["fold_reader", "replay", "replay_steps"]


def fold_reader(
    projection: Projection,
    reader: BusReader,
    *,
    until_offset: int | None = None,
    until_ts: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Projection:
    """Fold what ``reader`` reads from the start of the log into ``projection`` (see ``replay``)."""
    tick = None
    if progress is not None:
        total = reader.end_offset()
        if until_offset is not None:
            total = min(total, until_offset)

        def tick(end: int) -> None:
            progress(min(end, total), total)

    return fold_batches(
        projection, reader.read_from(0, until_offset), until_ts=until_ts, progress=tick
    )


def replay(
    data_dir: Path,
    *,
    config: ProjectionConfig,
    until_offset: int | None = None,
    until_ts: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Projection:
    """Fold the log of ``data_dir`` from its start into a fresh projection.

    ``until_offset`` keeps the events that start before that byte offset;
    ``until_ts`` keeps the events with ``ts <= until_ts`` wherever they are in the
    log. ``progress(done, total)`` is called after each batch with byte offsets.
    """
    return fold_reader(
        Projection(config),
        BusReader(data_dir),
        until_offset=until_offset,
        until_ts=until_ts,
        progress=progress,
    )


def replay_steps(
    data_dir: Path,
    *,
    config: ProjectionConfig,
    step_s: float,
    until_offset: int | None = None,
    until_ts: float | None = None,
) -> bytes:
    """OpenMetrics with the state as of every ``step_s`` of event time (``fold_steps``)."""
    batches = BusReader(data_dir).read_from(0, until_offset)
    return fold_steps(batches, config=config, step_s=step_s, until_ts=until_ts)
