"""History, pure: a projection's state at aligned step boundaries of event time.

Rule: no I/O and no wall clock here: time is event ``ts`` (the fold's clock); the
caller (``server.history``) reads the log and hands in its batches.

The step semantics are those of ``tally replay --step`` (``projections.replay.StepFold``),
with the boundaries aligned to multiples of the step (``k * step_s``) so that two
queries line up: the state at a boundary holds every event folded before the clock
(max ``ts``) passed it, and its position is that of the event that passed it (events
at smaller positions are in the state). An event whose ``ts`` lies behind the clock
counts in the step in which it appears in the log.

Fast path: ``BoundarySampler.add`` finds the events that pass a boundary by bisecting
the batch's running clock instead of looking at each event in Python; a batch with
an unstamped or infinite ``ts`` takes the plain loop. ``tests/projections/test_history.py``
keeps both equal to ``StepFold``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from itertools import accumulate
from operator import attrgetter
from typing import Final

from bus.lines import Batch
from projections.exemplars import PositionsOf
from projections.fold import Projection
from projections.replay import DurationError

__all__ = [
    "MAX_BOUNDARIES",
    "STEPS",
    "BoundarySampler",
    "boundary_span",
    "default_step",
]

#: The most boundaries one history may hold.
MAX_BOUNDARIES: Final = 2000
#: The steps ``default_step`` picks from, in seconds (1s up to 1w).
STEPS: Final = (
    *(1.0, 2.0, 5.0, 10.0, 15.0, 30.0),
    *(60.0, 120.0, 300.0, 600.0, 900.0, 1800.0),
    *(3600.0, 7200.0, 10800.0, 21600.0, 43200.0),
    *(86400.0, 172800.0, 604800.0),
)

_TS: Final = attrgetter("ts")

#: ``sample(k, position, projection)``: the state as the clock passes boundary ``k * step_s``.
Sample = Callable[[int, int, Projection], None]


def _from(locate: PositionsOf, start: int) -> PositionsOf:
    """The positions of a batch's events from index ``start`` on (exemplars need them)."""
    return lambda indices: locate([start + i for i in indices])


def default_step(since_s: float, points: int = 240) -> float:
    """The smallest step of ``STEPS`` giving at most ``points`` boundaries over ``since_s``
    (the largest one for longer spans)."""
    for step in STEPS:
        if since_s / step <= points:
            return step
    return STEPS[-1]


def boundary_span(from_s: float, to_s: float, step_s: float) -> range:
    """The ``k`` of the boundaries ``k * step_s`` with ``from_s <= k * step_s < to_s``.

    A boundary at ``to_s`` itself is left out: more events at that very ``ts``
    may still come, so its state is not final yet.
    """
    if not (math.isfinite(step_s) and step_s > 0):
        raise DurationError(f"step must be a positive duration, got {step_s!r} s")
    first = math.ceil(from_s / step_s)
    stop = math.ceil(to_s / step_s)
    return range(first, max(first, stop))


class BoundarySampler:
    """Folds batches into ``projection``, calling ``sample`` at each boundary the clock passes.

    Boundaries are ``k * step_s`` from ``k = first_k`` on; the projection's clock must
    not have passed the first one (a fresh projection, or a keyframe taken before it).
    Boundaries the clock passes before ``first_k`` are not sampled.
    """

    def __init__(
        self, projection: Projection, *, step_s: float, first_k: int, sample: Sample
    ) -> None:
        if not (math.isfinite(step_s) and step_s > 0):
            raise DurationError(f"step must be a positive duration, got {step_s!r} s")
        if projection.clock.now > first_k * step_s:
            raise ValueError(
                f"the projection's clock ({projection.clock.now}) already passed "
                f"the first boundary ({first_k * step_s})"
            )
        self.projection = projection
        self.step_s = step_s
        self.next_k = first_k
        self._sample = sample

    @property
    def next_boundary(self) -> float:
        """The next boundary the clock has yet to pass."""
        return self.next_k * self.step_s

    def add(self, batch: Batch) -> None:
        """Fold the next batch of the log, sampling at each boundary it passes."""
        projection, events = self.projection, batch.events
        stamps = list(map(_TS, events))
        if None in stamps or math.inf in stamps:  # unstamped or infinite: the plain loop
            self._add_slowly(batch)
            return
        # the clock after each event (NaN never wins a max against a finite start)
        clocks = list(accumulate(stamps, max, initial=projection.clock.now))[1:]
        boundary, start = self.next_boundary, 0
        i = bisect.bisect_right(clocks, boundary)
        locate = batch.locator()
        if i < len(events):
            offsets = batch.offsets
            while i < len(events):
                projection.fold_events(events[start:i], _from(locate, start))
                start = i
                projection.offset = offsets[i]
                while clocks[i] > boundary:
                    self._sample(self.next_k, offsets[i], projection)
                    self.next_k += 1
                    boundary = self.next_boundary
                i = bisect.bisect_right(clocks, boundary, lo=i)
        if start:
            projection.fold_batch(batch, events[start:], _from(locate, start))
        else:
            projection.fold_batch(batch)

    def _add_slowly(self, batch: Batch) -> None:
        """``add`` event by event, passing over those without a finite ``ts``."""
        projection, boundary = self.projection, self.next_boundary
        events, locate = batch.events, batch.locator()
        start = 0
        for i, (offset, ev) in enumerate(batch):
            ts = ev.ts
            if ts is None or not ts > boundary or not math.isfinite(ts):
                continue
            projection.fold_events(events[start:i], _from(locate, start))
            start = i
            projection.offset = offset
            while ts > boundary:
                self._sample(self.next_k, offset, projection)
                self.next_k += 1
                boundary = self.next_boundary
        projection.fold_batch(batch, events[start:], _from(locate, start))
