"""Server-sent events: one hub diffs the projection, each subscriber conflates.

The fold never waits for a subscriber: the hub writes into each subscriber's
bounded pending map (newest value per series wins) and wakes it; a slow
reader costs at most ``buffer_series`` entries, then is resynced by snapshot.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import msgspec

from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily, Labels
from projections.metrics.summary import QUANTILES, AnyFamily

__all__ = ["RETRY_MS", "SseHub", "Subscriber"]

RETRY_MS: Final = 2000
SeriesKey = tuple[str, Labels]

_json: Final = msgspec.json.Encoder()


def _num(value: float) -> float | str | None:
    """JSON has no NaN or infinities: they travel as the strings Prometheus uses."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _tokens(family: AnyFamily) -> dict[Labels, object]:
    """A cheap value per series that changes whenever the series does."""
    if isinstance(family, CounterFamily | GaugeFamily):
        return dict(family.values)
    if isinstance(family, HistogramFamily):
        return {labels: (s.count, s.sum) for labels, s in family.series.items()}
    window = family.window()
    return {labels: (s.count, s.sum, window) for labels, s in family.series.items()}


def series_payload(family: AnyFamily, labels: Labels) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": family.name,
        "type": family.kind,
        "labels": dict(zip(family.label_names, labels, strict=True)),
    }
    if isinstance(family, CounterFamily | GaugeFamily):
        out["value"] = _num(family.values[labels])
    elif isinstance(family, HistogramFamily):
        hist = family.series[labels]
        cumulative, buckets = 0, {}
        for bound, n in zip((*family.bounds, math.inf), hist.counts, strict=True):
            cumulative += n
            buckets[str(_num(bound))] = cumulative
        out.update(buckets=buckets, sum=_num(hist.sum), count=hist.count)
    else:
        summary = family.series[labels]
        quantiles = {str(q): _num(family.quantile(labels, q)) for q in QUANTILES}
        out.update(quantiles=quantiles, sum=_num(summary.sum), count=summary.count)
    return out


def frame(event: str, offset: int, series: Iterable[dict[str, Any]]) -> bytes:
    data = _json.encode({"offset": offset, "series": list(series)})
    return b"event: %s\nid: %d\ndata: %s\n\n" % (event.encode(), offset, data)


@dataclass(eq=False, slots=True)
class Subscriber:
    match: str
    interval_s: float
    pending: dict[SeriesKey, dict[str, Any]] = field(default_factory=dict)
    resync: bool = True  # the first frame is a snapshot
    wake: anyio.Event = field(default_factory=anyio.Event)
    conflated: int = 0
    offset: int = 0  # the folded offset the pending values reflect

    def matches(self, name: str) -> bool:
        return name.startswith(self.match)


class SseHub:
    """Diffs the projection's series at most once per tick and fans changes out."""

    def __init__(
        self,
        families: Callable[[], list[AnyFamily]],
        offset: Callable[[], int],
        *,
        buffer_series: int = 100_000,
        heartbeat_s: float = 15.0,
        default_interval_s: float = 1.0,
    ) -> None:
        self._families = families
        self._offset = offset
        self.buffer_series = buffer_series
        self.heartbeat_s = heartbeat_s
        self.default_interval_s = default_interval_s
        self.subscribers: set[Subscriber] = set()
        self._last: dict[str, dict[Labels, object]] = {}
        self._last_offset = -1
        self.conflated_total = 0
        self.resyncs_total = 0
        self.frames_total = 0

    def tick(self, *, force: bool = False) -> None:
        """Diff against the previous tick; push changed series to matching subscribers.

        Without subscribers there is nobody to tell: the diff (a copy of every series) is
        skipped, and the first subscriber's resync diffs against the last baseline taken.
        """
        offset = self._offset()
        if (offset == self._last_offset or not self.subscribers) and not force:
            return
        self._last_offset = offset
        current: dict[str, dict[Labels, object]] = {}
        changed: list[tuple[AnyFamily, Labels]] = []
        for family in self._families():
            tokens = current[family.name] = _tokens(family)
            before = self._last.get(family.name)
            if before is None:
                changed.extend((family, labels) for labels in tokens)
                continue
            if before == tokens:
                continue
            changed.extend(
                (family, labels) for labels, tok in tokens.items() if before.get(labels) != tok
            )
            # Series that vanished (a metrics_reset) are announced with a null value.
            changed.extend((family, labels) for labels in before.keys() - tokens.keys())
        self._last = current
        if not changed or all(sub.resync for sub in self.subscribers):
            return
        payloads: list[tuple[SeriesKey, dict[str, Any]]] = []
        for family, labels in changed:
            if labels in current[family.name]:
                payload = series_payload(family, labels)
            else:
                payload = {
                    "name": family.name,
                    "type": family.kind,
                    "labels": dict(zip(family.label_names, labels, strict=True)),
                    "value": None,
                    "removed": True,
                }
            payloads.append(((family.name, labels), payload))
        for sub in self.subscribers:
            if sub.resync:
                continue
            pending = sub.pending
            for key, payload in payloads:
                if sub.matches(key[0]):
                    if key in pending:
                        sub.conflated += 1
                        self.conflated_total += 1
                    pending[key] = payload
            if len(pending) > self.buffer_series:
                pending.clear()
                sub.resync = True
                self.resyncs_total += 1
            sub.offset = offset
            if sub.pending or sub.resync:
                sub.wake.set()

    def snapshot(self, sub: Subscriber) -> bytes:
        series = [
            series_payload(family, labels)
            for family in self._families()
            if sub.matches(family.name)
            for labels in sorted(_tokens(family))
        ]
        return frame("snapshot", self._offset(), series)

    async def stream(self, sub: Subscriber) -> AsyncIterator[bytes]:
        """The response body of one subscriber: retry hint, snapshot, then updates."""
        self.subscribers.add(sub)
        try:
            yield b"retry: %d\n\n" % RETRY_MS
            last_frame = -math.inf
            while True:
                if not sub.pending and not sub.resync:
                    with anyio.move_on_after(self.heartbeat_s):
                        await sub.wake.wait()
                    sub.wake = anyio.Event()
                    if not sub.pending and not sub.resync:
                        yield b": heartbeat\n\n"
                        continue
                wait = last_frame + sub.interval_s - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)
                if sub.resync:
                    # Diff baseline = the state the snapshot shows: changes folded since the
                    # last tick go to the others now, not to this subscriber as a stale update.
                    self.tick()
                    sub.resync = False
                    sub.pending.clear()
                    data = self.snapshot(sub)
                else:
                    series = [sub.pending[k] for k in sorted(sub.pending)]
                    sub.pending.clear()
                    data = frame("update", sub.offset, series)
                last_frame = anyio.current_time()
                self.frames_total += 1
                yield data
        finally:
            self.subscribers.discard(sub)
