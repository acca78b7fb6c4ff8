"""Replays, pure: batches read from the log folded into a projection, now or as of a past time.

Rule: no I/O here (the caller opens the log and hands in its batches: ``server.replay``);
time is event time, never the wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from bus.config import duration_seconds
from bus.errors import TallyError
from bus.events import Event
from bus.lines import Batch
from projections.config import ProjectionConfig
from projections.exemplars import PositionsOf
from projections.exposition.openmetrics import OpenMetricsHistory
from projections.fold import Projection

__all__ = [
    "DurationError",
    "StepFold",
    "fold_batch",
    "fold_batches",
    "fold_steps",
    "parse_duration",
]


class DurationError(TallyError, ValueError):
    """Raised when a duration like ``30s`` cannot be parsed, or a step is not positive."""

    exit_code = 2
    http_status = 400


def parse_duration(text: str) -> float:
    """Seconds in ``"250ms"``, ``"30s"``, ``"1m"``, ``"1.5h"``, ``"2d"``, ``"1w"`` or ``"30"``."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise DurationError(
            f"invalid duration {text!r}: expected a number and a unit "
            "(ms, s, m, h, d, w), like 30s, 1.5h or 2d"
        )
    return seconds


def _until(events: list[Event], until_ts: float) -> list[int]:
    """Indices of the events with ``ts <= until_ts``; an unstamped event (``ts`` None) is kept."""
    return [i for i, ev in enumerate(events) if ev.ts is None or ev.ts <= until_ts]


def listed(positions: Sequence[int]) -> PositionsOf:
    """``PositionsOf`` for events whose positions are all known already."""
    return lambda indices: [positions[i] for i in indices]


def fold_batch(projection: Projection, batch: Batch, until_ts: float | None = None) -> None:
    """Fold one batch into ``projection``; with ``until_ts``, its events with ``ts <= until_ts``."""
    if until_ts is None:
        projection.fold_batch(batch)
        return
    kept = _until(batch.events, until_ts)
    events, locate = batch.events, batch.locator()
    projection.fold_batch(
        batch, [events[i] for i in kept], lambda indices: locate([kept[i] for i in indices])
    )


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
        fold_batch(projection, batch, until_ts)
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
    """OpenMetrics with the state as of every ``step_s`` of event time (see ``StepFold``)."""
    steps = StepFold(config=config, step_s=step_s, until_ts=until_ts)
    for batch in batches:
        steps.add(batch)
    return steps.render()


def _first_at_or_after(t0: float, step_s: float, clock: float) -> int:
    """The least ``k`` with ``t0 + k * step_s >= clock``, as the fold computes boundaries."""
    k = max(0, math.ceil((clock - t0) / step_s))
    while k > 0 and t0 + (k - 1) * step_s >= clock:
        k -= 1
    while t0 + k * step_s < clock:
        k += 1
    return k


class StepFold:
    """The state as of every ``step_s`` of event time, each sample set timestamped: ``add``
    the log's batches in order, then ``render`` OpenMetrics.

    Boundaries are ``t0 + k * step_s`` for ``k = 0, 1, ...`` where ``t0`` is the
    first event's ``ts``; the state at a boundary holds every event folded before
    the clock (max ``ts``) passed it, and the last boundary is the first one at or
    after the final event. An event whose ``ts`` lies behind the clock counts in
    the step in which it appears in the log. An empty log gives just ``# EOF``.

    ``start`` is a state to go on from (a compacted log's base), and ``log_start`` the
    first event ``ts`` of the log before the cut (``SnapshotMeta.log_start``): then the
    boundaries are those of the whole log from the first at or after the state's clock,
    and the sample sets are the whole log's from there on. Without ``log_start`` (a base
    that predates it) ``t0`` is the state's clock, and the first sample set that state.
    """

    def __init__(
        self,
        *,
        config: ProjectionConfig,
        step_s: float,
        until_ts: float | None = None,
        start: Projection | None = None,
        log_start: float | None = None,
    ) -> None:
        if not (math.isfinite(step_s) and step_s > 0):
            raise DurationError(f"step must be a positive duration, got {step_s!r} s")
        self.step_s = step_s
        self.until_ts = until_ts
        self.history = OpenMetricsHistory()
        self.projection = start if start is not None else Projection(config)
        self.t0: float | None = None
        self.k = 0
        self.boundary = math.inf
        if start is not None and math.isfinite(start.clock.now):
            self.t0 = self.boundary = start.clock.now
            if log_start is not None and log_start <= start.clock.now:
                self.t0, self.k = log_start, _first_at_or_after(log_start, step_s, start.clock.now)
                self.boundary = self.t0 + self.k * self.step_s

    def add(self, batch: Batch) -> None:
        """Fold the next batch of the log, adding a sample set at each boundary it passes."""
        projection, history, until_ts = self.projection, self.history, self.until_ts
        pairs = list(batch)
        if until_ts is not None:
            pairs = [(off, ev) for off, ev in pairs if ev.ts is None or ev.ts <= until_ts]
        start = 0
        for i, (offset, ev) in enumerate(pairs):
            ts = ev.ts
            if ts is None or not math.isfinite(ts):
                continue
            if self.t0 is None:
                self.t0 = self.boundary = ts
                continue
            if ts <= self.boundary:
                continue
            projection.fold_events(
                [e for _, e in pairs[start:i]], listed([o for o, _ in pairs[start:i]])
            )
            start = i
            projection.offset = offset
            families = projection.families()
            while ts > self.boundary:
                history.add(self.boundary, families)
                self.k += 1
                self.boundary = self.t0 + self.k * self.step_s
        projection.fold_batch(
            batch, [e for _, e in pairs[start:]], listed([o for o, _ in pairs[start:]])
        )

    def render(self) -> bytes:
        """The history so far, ending with the sample set at the last boundary, and ``# EOF``."""
        if self.t0 is not None:
            self.history.add(self.boundary, self.projection.families())
        return self.history.render()
