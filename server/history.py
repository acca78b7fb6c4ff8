"""``GET /api/v1/history``: each series' value at every step of event time, read from the log.

Rule: no request folds what a keyframe or a kept history already holds, and none folds
more than ``max_fold_events`` events.

* Keyframes: encoded snapshots of the state (``projections.snapshot``), at least
  ``KEYFRAME_SPACING_S`` of event time apart, at most ``MAX_KEYFRAMES`` of them and
  ``MAX_KEYFRAME_BYTES`` in all (the oldest go first). ``run`` takes one of the live
  projection whenever its clock moved a spacing past the newest (checked every
  ``KEYFRAME_POLL_S``, so a catch-up encodes at most one a second); a history fold takes
  them as it goes too, so a second query over the same past starts close to it. They
  are kept on disk as well (``<data-dir>/snapshots/keyframes/<position>.snap``, a cache:
  written without fsync, each with the log's identity at its position), and a server
  starting again takes back those of the same log and config, so its first query does
  not fold from the log's start.
* A history is folded from the newest keyframe at or before its first boundary (or from
  the base snapshot of a compacted log, its first boundary then the first after the
  base's clock; or from the log's first position) up to the live projection's
  position, sampling at each boundary (``projections.history.BoundarySampler``, the
  ``tally replay --step`` semantics, boundaries at multiples of the step).
* Runs: the last ``MAX_RUNS`` histories are kept, keyed on ``(match, step)``, with the
  state folded so far; a query whose first boundary the run already holds only folds
  the log's new tail. ``folded_events`` in the answer says what the query cost.
* One fold at a time (a lock), yielding between batches; a query folds at most
  ``max_fold_events`` events. One that needs more answers 503 with ``Retry-After``, keeping
  its progress (the run and the keyframes it took), so asking again goes on from there.

The answer holds the log's events only: this server's own requests (in
``conductor_api_requests_total`` on ``/metrics``) are not events, and not in it.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import anyio

from bus.contract import Bus
from bus.errors import TallyError
from bus.lines import Batch
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.history import MAX_BOUNDARIES, BoundarySampler, boundary_span, default_step
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily, Labels
from projections.metrics.summary import AnyFamily
from projections.replay import DurationError, parse_duration
from projections.snapshot import (
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
    read_snapshot_meta,
)
from server.http.routing import Request, Response, gzip_if_accepted
from server.live.compact import load_base
from server.live.sse import series_payload
from server.live.worker import ProjectionWorker

__all__ = ["HistoryService", "HistoryStats", "Keyframe", "Keyframes", "keyframe_dir"]

log = logging.getLogger("tally.history")

DEFAULT_SINCE_S: Final = 3600.0
KEYFRAME_SPACING_S: Final = 300.0
KEYFRAME_POLL_S: Final = 1.0
MAX_KEYFRAMES: Final = 48
MAX_KEYFRAME_BYTES: Final = 64 << 20
MAX_RUNS: Final = 4
#: The most series one history holds; past it, new series are left out (``series_left_out``).
MAX_SERIES: Final = 10_000
MAX_FOLD_EVENTS: Final = 1_000_000
_SUFFIX: Final = ".snap"
RETRY_AFTER_S: Final = 1

SeriesKey = tuple[str, Labels]
_META: Final = ("name", "type", "labels")


def keyframe_dir(data_dir: Path) -> Path:
    """``<data-dir>/snapshots/keyframes``: the keyframes a server keeps across restarts."""
    return data_dir / "snapshots" / "keyframes"


@dataclass(frozen=True, slots=True)
class Keyframe:
    clock: float
    position: int
    data: bytes


class Keyframes:
    """Encoded states ordered by clock, at least ``spacing_s`` apart; bounded in count and bytes.

    With a ``directory`` each is also written there, removed when it goes, and ``load``
    takes them back.
    """

    def __init__(
        self,
        *,
        directory: Path | None = None,
        spacing_s: float = KEYFRAME_SPACING_S,
        max_count: int = MAX_KEYFRAMES,
        max_bytes: int = MAX_KEYFRAME_BYTES,
    ) -> None:
        self.directory = directory
        self.spacing_s = spacing_s
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.frames: list[Keyframe] = []
        self.nbytes = 0
        self._warned = False

    def due(self, clock: float) -> bool:
        """Whether a state at ``clock`` is a spacing away from every keyframe held."""
        clocks = [f.clock for f in self.frames]
        i = bisect.bisect_left(clocks, clock)
        before = clocks[i - 1] if i else -math.inf
        after = clocks[i] if i < len(clocks) else math.inf
        return clock - before >= self.spacing_s and after - clock >= self.spacing_s

    def add(self, projection: Projection, *, identity: str = "") -> None:
        """Keep the state of ``projection`` (if due), then drop the oldest beyond the limits;
        ``identity`` is the log's at the projection's position (``Bus.identity``)."""
        clock = projection.clock.now
        if not self.due(clock):
            return
        data = encode_snapshot(projection, bus_identity=identity)
        frame = Keyframe(clock, projection.offset, data)
        if self._insert(frame):
            self._save(frame)

    async def take(self, projection: Projection, bus: Bus) -> None:
        """``add`` with the log's identity at the projection's position, asked only when due."""
        while self.due(projection.clock.now):
            position = projection.offset
            try:
                identity = await bus.identity(position)
            except TallyError as exc:  # a bus away: the next one
                log.debug("no keyframe at %d: %s", position, exc)
                return
            if projection.offset == position:  # else the fold moved on meanwhile: again
                self.add(projection, identity=identity)
                return

    async def load(self, bus: Bus, config: ProjectionConfig) -> int:
        """Take back the keyframes a previous server left in ``directory``: those of this
        log (its identity at their position) and this config; remove the others. How many."""
        if self.directory is None:
            return 0
        try:
            paths = sorted(self.directory.iterdir())
        except OSError:
            return 0
        fingerprint = config.fingerprint()
        for path in paths:
            try:
                if path.suffix != _SUFFIX or path.name.startswith("."):  # a write cut short
                    path.unlink()
                    continue
                data = path.read_bytes()
                meta = read_snapshot_meta(data)
                same = meta.fingerprint == fingerprint and (
                    meta.bus_identity == await bus.identity(meta.offset)
                )
            except (OSError, SnapshotError, TallyError) as exc:
                log.debug("keyframe %s not taken back: %s", path, exc)
                same = False
            if not (
                same
                and self.due(meta.clock)
                and self._insert(Keyframe(meta.clock, meta.offset, data))
            ):
                path.unlink(missing_ok=True)
        log.info("%d keyframes taken back from %s", len(self.frames), self.directory)
        return len(self.frames)

    def _insert(self, frame: Keyframe) -> bool:
        """Hold ``frame`` and drop the oldest beyond the limits; whether ``frame`` stayed."""
        bisect.insort(self.frames, frame, key=lambda f: f.clock)
        self.nbytes += len(frame.data)
        kept = True
        while self.frames and (len(self.frames) > self.max_count or self.nbytes > self.max_bytes):
            old = self.frames.pop(0)
            self.nbytes -= len(old.data)
            kept = kept and old is not frame
            if self.directory is not None and old is not frame:
                self._path(old).unlink(missing_ok=True)
        return kept

    def _path(self, frame: Keyframe) -> Path:
        assert self.directory is not None
        return self.directory / f"{frame.position:020d}{_SUFFIX}"

    def _save(self, frame: Keyframe) -> None:
        """Write ``frame`` to the directory: a cache, so no fsync, and a failure only logged."""
        if self.directory is None:
            return
        path = self._path(frame)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(frame.data)
            os.replace(tmp, path)
        except OSError as exc:  # a full disk, say: the keyframe is still held in memory
            tmp.unlink(missing_ok=True)
            if not self._warned:
                log.warning("cannot keep keyframes in %s: %s", self.directory, exc)
                self._warned = True

    def at_or_before(self, clock: float) -> Keyframe | None:
        """The newest keyframe whose clock is at or before ``clock``."""
        i = bisect.bisect_right([f.clock for f in self.frames], clock)
        return self.frames[i - 1] if i else None


@dataclass(slots=True)
class _Column:
    kind: str
    labels: dict[str, str]
    points: list[dict[str, Any] | None]
    #: What the last point was made from (``_token``): the same again, the same point.
    token: object = None


@dataclass(eq=False, slots=True)
class _Run:
    """One history kept up to date: boundaries ``first_k * step_s`` on, state at ``position``."""

    match: tuple[str, ...]
    step_s: float
    first_k: int
    position: int
    timestamps: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    columns: dict[SeriesKey, _Column] = field(default_factory=dict)
    #: Whether series were left out for ``MAX_SERIES``.
    series_left_out: bool = False
    #: Whether ``first_k`` is the first boundary after the base snapshot: none before it exists.
    at_base: bool = False
    sampler: BoundarySampler = field(init=False)

    def sample(self, k: int, position: int, projection: Projection) -> None:
        """The ``BoundarySampler`` callback: one more point for every matching series."""
        n = len(self.timestamps)
        self.timestamps.append(k * self.step_s)
        self.positions.append(position)
        for family in projection.families():
            if self.match and not family.name.startswith(self.match):
                continue
            names = family.label_names
            for labels in _series_labels(family):
                key = (family.name, labels)
                column = self.columns.get(key)
                if column is None:
                    if len(self.columns) >= MAX_SERIES:
                        self.series_left_out = True
                        continue
                    column = _Column(family.kind, dict(zip(names, labels, strict=True)), [])
                    column.points.extend([None] * n)
                    self.columns[key] = column
                token = _token(family, labels)
                last = column.points[-1] if column.points else None
                if last is not None and token is not None and token == column.token:
                    column.points.append(last)
                    continue
                payload = series_payload(family, labels)
                for name in _META:
                    del payload[name]
                column.token = token
                column.points.append(last if last == payload else payload)
        for column in self.columns.values():
            if len(column.points) == n:
                column.points.append(None)
        if len(self.timestamps) > MAX_BOUNDARIES:
            self._trim(len(self.timestamps) - MAX_BOUNDARIES)

    def _trim(self, n: int) -> None:
        self.first_k += n
        del self.timestamps[:n], self.positions[:n]
        for key in list(self.columns):
            points = self.columns[key].points
            del points[:n]
            if all(p is None for p in points):
                del self.columns[key]


def _token(family: AnyFamily, labels: Labels) -> object:
    """A cheap value that changes whenever the series' point does; ``None`` for summaries
    (their quantiles move with the clock's window)."""
    if isinstance(family, CounterFamily | GaugeFamily):
        return family.values[labels]
    if isinstance(family, HistogramFamily):
        series = family.series[labels]
        return (series.count, series.sum)
    return None


def _series_labels(family: AnyFamily) -> list[Labels]:
    if isinstance(family, CounterFamily | GaugeFamily):
        return sorted(family.values)
    return sorted(family.series)


@dataclass(slots=True)
class HistoryStats:
    """Running totals of the history service (one typed snapshot, read by tests and status)."""

    queries: int = 0
    runs_started: int = 0
    events_folded: int = 0
    keyframes: int = 0
    keyframe_bytes: int = 0


class HistoryService:
    """Answers history queries from the live worker's log, with keyframes and a run cache."""

    def __init__(
        self,
        worker: ProjectionWorker,
        *,
        max_fold_events: int = MAX_FOLD_EVENTS,
        keyframes: Keyframes | None = None,
    ) -> None:
        self.worker = worker
        self.max_fold_events = max_fold_events
        self.keyframes = (
            keyframes
            if keyframes is not None
            else Keyframes(directory=keyframe_dir(worker.data_dir))
        )
        self.runs: OrderedDict[tuple[tuple[str, ...], float], _Run] = OrderedDict()
        self._stats = HistoryStats()
        self._lock = anyio.Lock()

    @property
    def stats(self) -> HistoryStats:
        self._stats.keyframes = len(self.keyframes.frames)
        self._stats.keyframe_bytes = self.keyframes.nbytes
        return self._stats

    async def run(self) -> None:
        """Take back the keyframes kept on disk, then take keyframes of the live projection
        as its clock moves on, until cancelled."""
        async with self._lock:  # no query starts from a keyframe set half loaded
            await self.keyframes.load(self.worker.bus, self.worker.config)
        while True:
            await anyio.sleep(KEYFRAME_POLL_S)
            await self.keyframes.take(self.worker.projection, self.worker.bus)

    # -- the endpoint ----------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """``GET /api/v1/history?match=PREFIX&since=DURATION&step=DURATION``; a bad duration
        raises ``DurationError`` (400, naming the parameter)."""
        match, since_s, step_s = _params(request.target)  # DurationError: 400
        async with self._lock:
            response = await self._answer(match, since_s, step_s)
        return gzip_if_accepted(request, response)

    async def _answer(self, match: tuple[str, ...], since_s: float, step_s: float) -> Response:
        self._stats.queries += 1
        live = self.worker.projection
        target, to_s = live.offset, live.clock.now
        from_s = to_s - since_s
        span = boundary_span(from_s, to_s, step_s) if to_s > 0 else range(0)
        if len(span) > MAX_BOUNDARIES:
            raise DurationError(
                f"step: since/step gives {len(span)} points, at most {MAX_BOUNDARIES}: "
                "raise step or shorten since"
            )
        body: dict[str, Any] = {"from": from_s, "to": to_s, "step": step_s}
        if not span:
            return Response.json(
                200,
                {
                    **body,
                    "timestamps": [],
                    "positions": [],
                    "series": [],
                    "series_left_out": False,
                    "folded_events": 0,
                },
            )
        run = self._run_for(match, step_s, span.start)
        if run is None:
            run = await self._start_run(match, step_s, span.start)
        folded = await self._fold(run, target)
        if run.position < target:
            response = Response.json(
                503,
                {
                    "error": f"history: still folding the log (at position {run.position} of "
                    f"{target}, event time {run.sampler.projection.clock.now}); ask again",
                    "folded_events": folded,
                },
            )
            response.headers.append(("retry-after", str(RETRY_AFTER_S)))
            return response
        return Response.json(200, {**body, **_slice(run, span), "folded_events": folded})

    def _run_for(self, match: tuple[str, ...], step_s: float, first_k: int) -> _Run | None:
        key = (match, step_s)
        run = self.runs.get(key)
        if run is None or (run.first_k > first_k and not run.at_base):
            return None
        self.runs.move_to_end(key)
        return run

    async def _start_run(self, match: tuple[str, ...], step_s: float, first_k: int) -> _Run:
        config, bus = self.worker.config, self.worker.bus
        frame = self.keyframes.at_or_before(first_k * step_s)
        base = await load_base(self.worker.data_dir, bus, config)
        at_base = False
        if frame is not None and (base is None or frame.position >= base.offset):
            projection, _ = decode_snapshot(frame.data, config)
            position = frame.position
        elif base is not None:  # the log before the base was compacted away: start there
            projection, position = base.projection(), base.offset
            after = math.floor(base.clock / step_s) + 1
            if first_k < after:
                first_k, at_base = after, True
        else:
            projection, position = Projection(config), await bus.first()
        log.debug(
            "history of %s every %g s from %g: folding from position %d",
            match or "everything",
            step_s,
            first_k * step_s,
            position,
        )
        run = _Run(match, step_s, first_k, position, at_base=at_base)
        run.sampler = BoundarySampler(projection, step_s=step_s, first_k=first_k, sample=run.sample)
        self.runs[(match, step_s)] = run
        while len(self.runs) > MAX_RUNS:
            self.runs.popitem(last=False)
        self._stats.runs_started += 1
        return run

    async def _fold(self, run: _Run, target: int) -> int:
        """Fold ``run`` on towards ``target``, at most ``max_fold_events``; events folded."""
        folded = 0
        if run.position >= target:
            return 0
        projection = run.sampler.projection
        batch: Batch
        async for batch in self.worker.bus.read(run.position, target):
            run.sampler.add(batch)
            run.position = batch.end
            folded += len(batch.events)
            await self.keyframes.take(projection, self.worker.bus)
            if folded >= self.max_fold_events:
                break
            await anyio.sleep(0)  # let scrapes and the live fold in between batches
        else:
            run.position = max(run.position, target)  # nothing before target is left
        self._stats.events_folded += folded
        return folded


def _slice(run: _Run, span: range) -> dict[str, Any]:
    """The run's boundaries from ``span.start`` on, and every series seen there."""
    i = max(0, span.start - run.first_k)  # a run that starts at the base has none before it
    series = []
    for (name, _), column in sorted(run.columns.items()):
        points = column.points[i:]
        if all(p is None for p in points):
            continue
        series.append(
            {"name": name, "type": column.kind, "labels": column.labels, "points": points}
        )
    return {
        "timestamps": run.timestamps[i:],
        "positions": run.positions[i:],
        "series": series,
        "series_left_out": run.series_left_out,
    }


def _params(target: str) -> tuple[tuple[str, ...], float, float]:
    query = parse_qs(urlsplit(target).query, keep_blank_values=True)
    match = tuple(sorted(set(query.get("match", []))))
    if "" in match:
        match = ()
    since_s = _duration(query, "since", DEFAULT_SINCE_S)
    step_s = _duration(query, "step", None) if "step" in query else default_step(since_s)
    return match, since_s, step_s


def _duration(query: dict[str, list[str]], name: str, default: float | None) -> float:
    values = query.get(name)
    if not values:
        assert default is not None
        return default
    if len(values) > 1:
        raise DurationError(f"{name}: given {len(values)} times, expected once")
    try:
        seconds = parse_duration(values[0])
    except DurationError as exc:
        raise DurationError(f"{name}: {exc}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise DurationError(f"{name}: must be a positive duration, got {values[0]!r}")
    return seconds
