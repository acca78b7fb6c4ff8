"""Cumulative OTLP streams -> increases, counted once whatever is resent or restarted.

Rule: no I/O, no clock; a stream is one sender's series (its name, scope, resource
and every attribute, before any is dropped for labels). Per stream the fold keeps
the last start time, point time and value (for histograms: bucket counts, sum and
count). A point with the same start time adds its increase over the last one (a
resend, or an older point, adds nothing); a later start time is a restart of the
sender, and its whole value is new; an earlier one is a late point of a previous
run, and adds nothing. Without start times, a value that falls is a restart.
Streams are kept in least-recently-updated order; past ``max_streams`` the oldest
is forgotten (if it comes back, its value counts as new).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

__all__ = ["Stream", "Streams", "stream_key"]


class Stream(msgspec.Struct, array_like=True):
    """What the fold remembers of one cumulative stream (a snapshot holds these as they are)."""

    start: int
    time: int
    value: float = 0.0
    counts: list[int] = []
    sum: float = 0.0
    count: int = 0


def stream_key(
    name: str,
    scope: str,
    resource: Mapping[str, object],
    attributes: Mapping[str, object],
) -> str:
    """A short stable digest of a stream's identity."""
    identity = (name, scope, sorted(resource.items()), sorted(attributes.items()))
    return hashlib.blake2b(msgspec.msgpack.encode(identity), digest_size=12).hexdigest()


class Streams:
    """The cumulative streams seen, least recently updated first."""

    __slots__ = ("by_key", "max_streams")

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.by_key: dict[str, Stream] = {}

    def _advance(self, key: str, start: int, time: int, fell: bool) -> tuple[Stream | None, bool]:
        """The stream to update and whether this point restarts it; ``None``: a stale point."""
        stream = self.by_key.pop(key, None)
        if stream is None:
            return None, True
        self.by_key[key] = stream  # most recently updated last
        if start and stream.start and start != stream.start:
            return (stream, True) if start > stream.start else (None, False)
        if time and time < stream.time:
            return None, False
        return stream, fell and not (start and stream.start)

    def _remember(self, key: str, stream: Stream) -> None:
        self.by_key[key] = stream
        while len(self.by_key) > self.max_streams:
            del self.by_key[next(iter(self.by_key))]

    def sum_increase(
        self, key: str, start: int, time: int, value: float, *, monotonic: bool
    ) -> float:
        """What a cumulative sum point adds to its series (a gauge's change when not monotonic)."""
        stream = self.by_key.get(key)
        fell = stream is not None and value < stream.value
        current, restart = self._advance(key, start, time, fell and monotonic)
        if current is None:
            if restart:  # first point of the stream: its whole value is new
                self._remember(key, Stream(start=start, time=time, value=value))
                return value
            return 0.0
        if monotonic and not restart and value < current.value:
            return 0.0  # same run, lower value: an older point arriving late
        base = 0.0 if (restart and monotonic) else current.value
        current.start, current.time, current.value = start or current.start, time, value
        return value - base

    def histogram_increase(
        self, key: str, start: int, time: int, point: tuple[list[int], float, int]
    ) -> tuple[list[int], float, int] | None:
        """What a cumulative histogram point (counts, sum, count) adds; ``None``: nothing."""
        counts, total, count = point
        stream = self.by_key.get(key)
        fell = stream is not None and (
            count < stream.count
            or len(counts) != len(stream.counts)
            or any(n < m for n, m in zip(counts, stream.counts, strict=True))
        )
        current, restart = self._advance(key, start, time, fell)
        if current is None:
            if restart:
                self._remember(
                    key, Stream(start=start, time=time, counts=list(counts), sum=total, count=count)
                )
                return list(counts), total, count
            return None
        if fell and not restart:
            return None
        if restart:
            added = (list(counts), total, count)
        else:
            added = (
                [n - m for n, m in zip(counts, current.counts, strict=True)],
                total - current.sum,
                count - current.count,
            )
        current.start, current.time = start or current.start, time
        current.counts, current.sum, current.count = list(counts), total, count
        return added if added[2] or any(added[0]) else None

    def export_state(self) -> dict[str, Stream]:
        return dict(self.by_key)

    def restore(self, streams: dict[str, Stream]) -> None:
        self.by_key = dict(streams)
