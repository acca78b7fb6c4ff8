"""The event clock: the fold's only notion of time, advanced by event ``ts``.

Rule: no wall clock here. ``now`` is the newest finite ``ts`` folded so far; it
never moves back, so replay and the live fold see the same time at each event.
"""

from __future__ import annotations

import math

__all__ = ["EventClock", "elapsed"]


class EventClock:
    """The newest event ``ts`` folded so far; the fold advances it, summaries read it."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def advance(self, ts: float) -> None:
        """Move ``now`` forward to ``ts`` (never back; non-finite ``ts`` is ignored)."""
        if ts > self.now and math.isfinite(ts):
            self.now = ts

    def __repr__(self) -> str:
        return f"EventClock(now={self.now!r})"


def elapsed(start: float | None, ts: float | None, now: float) -> float | None:
    """Seconds from ``start`` to an event at ``ts`` (``now`` if unstamped), never negative.

    None when the start was not folded (a log that begins mid-run or mid-session).
    """
    if start is None:
        return None
    return max(0.0, (now if ts is None else ts) - start)
