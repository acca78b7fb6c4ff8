"""Replays, pure: batches read from the log folded into a projection, now or as of a past time.

Rule: no I/O here (the caller opens the log and hands in its batches: ``server.replay``);
time is event time, never the wall clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Final

from bus.errors import TallyError
from bus.events import Event
from bus.reader import Batch
from projections.config import ProjectionConfig
from projections.exposition.openmetrics import OpenMetricsHistory
from projections.fold import Projection

__all__ = ["DurationError", "fold_batches", "fold_steps", "parse_duration"]

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)?")


class DurationError(TallyError, ValueError):
    """Raised when a duration like ``30s`` cannot be parsed, or a step is not positive."""

    exit_code = 2
    http_status = 400


def parse_duration(text: str) -> float:
    """Seconds in ``"250ms"``, ``"30s"``, ``"1m"``, ``"1.5h"``, ``"2d"``, ``"1w"`` or ``"30"``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise DurationError(
            f"invalid duration {text!r}: expected a number and a unit "
            "(ms, s, m, h, d, w), like 30s, 1.5h or 2d"
        )
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


def _until(events: list[Event], until_ts: float) -> list[Event]:
    """Events with ``ts <= until_ts``; an unstamped event (``ts`` None) is kept."""
    return [ev for ev in events if ev.ts is None or ev.ts <= until_ts]


def fold_batches(
    projection: Projection,
    batches: Iterable[Batch],
    *,
    until_ts: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Projection:
    """Fold ``batches`` (read from the log, in order) into ``projection`` and return it.

    ``until_ts`` keeps the events with ``ts <= until_ts`` wherever they are in the
    log (it need not be ordered by time); ``progress(end)`` is called after each
    batch with the offset folded up to.
    """
    for batch in batches:
        if until_ts is None:
            projection.fold_batch(batch)
        else:
            projection.fold_batch(batch, _until(batch.events, until_ts))
        if progress is not None:
            progress(batch.end)
    return projection


def fold_steps(
    batches: Iterable[Batch],
    *,
    config: ProjectionConfig,
    step_s: float,
    until_ts: float | None = None,
) -> bytes:
    """OpenMetrics with the state as of every ``step_s`` of event time, each sample timestamped.

    Boundaries are ``t0 + k * step_s`` for ``k = 0, 1, ...`` where ``t0`` is the
    first event's ``ts``; the state at a boundary holds every event folded before
    the clock (max ``ts``) passed it, and the last boundary is the first one at or
    after the final event. An event whose ``ts`` lies behind the clock counts in
    the step in which it appears in the log. An empty log gives just ``# EOF``.
    """
    if not (math.isfinite(step_s) and step_s > 0):
        raise DurationError(f"step must be a positive duration, got {step_s!r} s")
    history = OpenMetricsHistory()
    projection = Projection(config)
    t0: float | None = None
    k = 0
    boundary = math.inf
    for batch in batches:
        pairs = list(batch)
        if until_ts is not None:
            pairs = [(off, ev) for off, ev in pairs if ev.ts is None or ev.ts <= until_ts]
        start = 0
        for i, (offset, ev) in enumerate(pairs):
            ts = ev.ts
            if ts is None or not math.isfinite(ts):
                continue
            if t0 is None:
                t0 = boundary = ts
                continue
            if ts <= boundary:
                continue
            projection.fold_events([e for _, e in pairs[start:i]])
            start = i
            projection.offset = offset
            families = projection.families()
            while ts > boundary:
                history.add(boundary, families)
                k += 1
                boundary = t0 + k * step_s
        projection.fold_batch(batch, [e for _, e in pairs[start:]])
    if t0 is not None:
        history.add(boundary, projection.families())
    return history.render()
