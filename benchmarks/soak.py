"""Soak: a week of event time through a real ``tally serve`` with retention on (issue 15, item 4).

Run: ``python -m benchmarks.soak [--quick] [--events N] [--days D] [--intervals K]
[--retain-bytes B] [--segment-bytes S] [--out FILE]``. The full run is 50,000,000
events spread over 7 days of event time (``workload.mixed_events`` with its gaps
stretched: conductor runs, bus messages, API requests, custom metrics, and Ralph
loops that start and stop, a loop that comes back in a later 4-hour period being a
new loop, and a loop gone for a day of event time is forgotten: ``[projections]
forget_after_s``). This process appends them in batches of 1,000 with a ``BusWriter`` (what
``tally emit`` and the server's ingest do) to a data directory whose ``tally.toml``
sets ``[bus] retain_bytes`` and ``segment_bytes``; a ``tally serve`` subprocess
follows the log, folds it, checkpoints, and after each checkpoint cuts the log to
``retain_bytes`` (a base snapshot at the cut, then whole segments removed).
The same batches are folded, as they are written, into a reference
``projections.fold.Projection`` that never forgets an event: the uncompacted fold.

At each of ``--intervals`` points (the writer paused, the server caught up) it
measures: the bytes of ``bus/`` once retention has run (waiting up to a minute for
it) beside the bound ``retain_bytes + segment_bytes + one batch + the log since the
server's last checkpoint`` (retention removes whole segments only, a segment may pass
``segment_bytes`` by a batch, and the server cuts after each checkpoint, taken every
``checkpoint_every_events`` or ``checkpoint_every_s`` while events arrive), the peak
seen while writing (sampled every 64 batches), the bytes of ``snapshots/``
(checkpoints and the base), the server's RSS, and a restart from the base: ``tally
replay`` in a fresh process (the base snapshot, then the retained log to
its end), whose Prometheus text must equal the reference's. At the end: all four
formats of that replay equal the reference's, byte for byte; the server's JSON
(``/api/v1/metrics?format=json``) equals it for every family the log feeds (the
server adds its own requests and uptime); and ``tally serve`` restarts (its latest
checkpoint, then catch-up) and answers the same. Prints each row as it is measured
(stderr), then the table (stdout), and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Final

from benchmarks.report import machine, write_json
from bus.config import BusConfig
from bus.events import Event, encode_events
from bus.lines import Batch
from bus.writer import BusWriter
from projections.config import ProjectionConfig
from projections.exposition.formats import FORMATS, Format, render
from projections.fold import Projection
from tests.support.serverproc import (
    PROCESS_ONLY,
    TALLY,
    TallyServer,
    start_server,
    stop_server,
)
from tests.support.workload import MEAN_GAP_S, mixed_events

DEFAULT_OUT: Final = Path(__file__).with_name("results-soak.json")
FULL_EVENTS: Final = 50_000_000
QUICK_EVENTS: Final = 400_000
DAY_S: Final = 86_400.0
BATCH: Final = 1_000
_MIB: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Settings:
    events: int
    days: float
    intervals: int
    retain_bytes: int
    segment_bytes: int
    loop_period_s: float = 4 * 3600.0
    checkpoint_every_s: float = 2.0
    checkpoint_every_events: int = 200_000
    #: ``[projections] forget_after_s``: loops gone for a day are freed (0: never).
    forget_after_s: float = DAY_S


FULL: Final = Settings(FULL_EVENTS, 7.0, 14, 512 * _MIB, 64 * _MIB)
QUICK: Final = Settings(QUICK_EVENTS, 7.0, 4, 8 * _MIB, 2 * _MIB, checkpoint_every_events=20_000)


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement point: the writer paused, the server caught up."""

    events: int
    event_days: float
    end_offset: int
    bus_bytes: int
    snapshot_bytes: int
    bound_bytes: int
    peak_bus_bytes: int
    settle_s: float
    rss_bytes: int
    series: int
    restart_s: float
    replay_equal: bool
    elapsed_s: float


def _toml(settings: Settings) -> str:
    retain = f"retain_bytes = {settings.retain_bytes}\n" if settings.retain_bytes else ""
    return (
        "[bus]\n"
        f"segment_bytes = {settings.segment_bytes}\n"
        f"{retain}"
        'durability = "interval"\n\n'
        "[server]\n"
        f"checkpoint_every_s = {settings.checkpoint_every_s}\n"
        f"checkpoint_every_events = {settings.checkpoint_every_events}\n\n"
        "[projections]\n"
        f"forget_after_s = {settings.forget_after_s}\n"
    )


def _bytes_under(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile by retention
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _batches(settings: Settings) -> Iterator[list[Event]]:
    gap_scale = settings.days * DAY_S / (settings.events * MEAN_GAP_S)
    events = mixed_events(
        settings.events, gap_scale=gap_scale, loop_period_s=settings.loop_period_s
    )
    while chunk := list(islice(events, BATCH)):
        yield chunk


def _series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def _replay(data_dir: Path, fmt: Format) -> tuple[bytes, float]:
    """``tally replay --format fmt`` in a fresh process: its output and wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [*TALLY, "replay", "--format", fmt, "--data-dir", str(data_dir)],
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"tally replay exited {proc.returncode}: {proc.stderr.decode()}")
    return proc.stdout, seconds


def _settle(server: TallyServer, data_dir: Path, end: int, bound: int) -> tuple[int, int, float]:
    """Wait until the server folded to ``end`` and its retention brought ``bus/`` within
    ``bound`` plus the log since its last checkpoint (a minute at most: it compacts after
    a checkpoint, in a task of its own). The bytes of ``bus/`` then, that bound, and the
    seconds it took."""
    started = time.perf_counter()
    status = server.wait_folded(end, timeout=600.0)
    deadline = time.monotonic() + 60.0
    while True:
        last = status["last_checkpoint"]
        limit = bound + end - (last["offset"] if last is not None else 0)
        size = _bytes_under(data_dir / "bus")
        if size <= limit or time.monotonic() > deadline:
            return size, limit, time.perf_counter() - started
        time.sleep(0.1)
        status = server.status()


def _families(doc: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: f for f in doc["families"] if not f["name"].startswith(PROCESS_ONLY)}


def _server_equal(server: TallyServer, reference: Projection) -> bool:
    """The server's JSON equals the reference's for every family the log feeds, and loops."""
    reply = server.get("/api/v1/metrics?format=json")
    served = json.loads(reply.body)
    expected = json.loads(render(reference.families(), "json", loops=reference.loops()))
    ours = _families(served)
    return all(ours.get(name) == fam for name, fam in _families(expected).items()) and (
        served.get("loops") == expected.get("loops")
    )


def soak(root: Path, settings: Settings, *, log: bool = True) -> dict[str, Any]:
    """Run the soak in ``root`` (a fresh directory); every sample and the final checks."""
    data_dir = root / "data"
    data_dir.mkdir()
    (data_dir / "tally.toml").write_text(_toml(settings))
    bus_config = BusConfig(segment_bytes=settings.segment_bytes, durability="interval")
    reference = Projection(ProjectionConfig(forget_after_s=settings.forget_after_s))
    every = max(1, settings.events // settings.intervals)
    samples: list[Sample] = []
    started = time.perf_counter()
    written = batch_bytes = peak = 0
    first_ts = last_ts = 0.0
    server = start_server(data_dir)
    try:
        server.wait_ready()
        with BusWriter(data_dir, bus_config) as writer:
            end = 0
            for batch in _batches(settings):
                data = encode_events(batch)
                offsets = writer.append_encoded(data, len(batch))
                end = offsets[0] + len(data)
                # as a reader folds it: positions too (exemplars carry them); offset -> end
                reference.fold_batch(Batch(offsets[0], end, batch, offsets=offsets))
                if not written:
                    first_ts = batch[0].ts or 0.0  # the workload stamps every event
                last_ts = batch[-1].ts or 0.0
                written += len(batch)
                batch_bytes = max(batch_bytes, len(data))
                if written % (64 * BATCH) == 0:
                    peak = max(peak, _bytes_under(data_dir / "bus"))
                if written % every < BATCH or written == settings.events:
                    writer.sync()
                    point = _Point(written, end, (last_ts - first_ts) / DAY_S, batch_bytes, peak)
                    samples.append(
                        _sample(server, data_dir, settings, reference, point=point, started=started)
                    )
                    peak = 0
                    if log:
                        print(_row(samples[-1]), file=sys.stderr, flush=True)
        final = _final(server, data_dir, reference, end)
        stop_server(server)
        restart_started = time.perf_counter()
        server = start_server(data_dir)
        server.wait_ready()
        final["serve_restart_s"] = _caught_up_after(server, end, restart_started)
        final["serve_restarted_equal"] = _server_equal(server, reference)
        final["serve_restarted_rss_bytes"] = server.rss_bytes()
    finally:
        stop_server(server)
    elapsed = time.perf_counter() - started
    return {
        "settings": asdict(settings),
        "samples": [asdict(s) for s in samples],
        "final": final,
        "summary": _summary(samples, final, written, elapsed, last_ts - first_ts),
    }


@dataclass(frozen=True, slots=True)
class _Point:
    """Where the writer paused: events written, the log's end, event days, largest batch, the
    peak of ``bus/`` seen since the last sample."""

    written: int
    end: int
    event_days: float
    batch_bytes: int
    peak: int


def _sample(
    server: TallyServer,
    data_dir: Path,
    settings: Settings,
    reference: Projection,
    *,
    point: _Point,
    started: float,
) -> Sample:
    bound = settings.retain_bytes + settings.segment_bytes + point.batch_bytes
    bus_bytes, bound, settle_s = _settle(server, data_dir, point.end, bound)
    body, seconds = _replay(data_dir, "prometheus")
    expected = render(reference.families(), "prometheus")
    return Sample(
        events=point.written,
        event_days=point.event_days,
        end_offset=point.end,
        bus_bytes=bus_bytes,
        snapshot_bytes=_bytes_under(data_dir / "snapshots"),
        bound_bytes=bound,
        peak_bus_bytes=max(point.peak, bus_bytes),
        settle_s=settle_s,
        rss_bytes=server.rss_bytes(),
        series=_series(expected),
        restart_s=seconds,
        replay_equal=body == expected,
        elapsed_s=time.perf_counter() - started,
    )


def _final(server: TallyServer, data_dir: Path, reference: Projection, end: int) -> dict[str, Any]:
    """All four formats of a fresh replay, and the live server, against the reference."""
    formats: dict[str, bool] = {}
    for fmt in FORMATS:
        body, _ = _replay(data_dir, fmt)
        formats[fmt] = body == render(reference.families(), fmt, loops=reference.loops())
    return {"replay_equal": formats, "serve_equal": _server_equal(server, reference)}


def _caught_up_after(server: TallyServer, end: int, since: float) -> float:
    server.wait_folded(end, timeout=600.0)
    return time.perf_counter() - since


def _summary(
    samples: list[Sample], final: dict[str, Any], events: int, elapsed: float, span_s: float
) -> dict[str, Any]:
    rss = [s.rss_bytes for s in samples]
    restart = [s.restart_s for s in samples]
    disk = [s.bus_bytes for s in samples]
    return {
        "events": events,
        "event_days": span_s / DAY_S,
        "elapsed_s": elapsed,
        "events_per_s": events / elapsed,
        "max_bus_bytes": max(disk),
        "max_peak_bus_bytes": max(s.peak_bus_bytes for s in samples),
        "bound_bytes": samples[-1].bound_bytes,
        "bus_within_bound": all(s.bus_bytes <= s.bound_bytes for s in samples),
        "max_snapshot_bytes": max(s.snapshot_bytes for s in samples),
        "rss_first_bytes": rss[0],
        "rss_last_bytes": rss[-1],
        "rss_max_bytes": max(rss),
        "restart_first_s": restart[0],
        "restart_last_s": restart[-1],
        "restart_max_s": max(restart),
        "replay_equal_every_sample": all(s.replay_equal for s in samples),
        "final_equal": all(final["replay_equal"].values())
        and final["serve_equal"]
        and final["serve_restarted_equal"],
    }


_HEADER: Final = (
    f"{'day':>5s} {'events':>11s} {'bus MiB':>8s} {'peak MiB':>8s} {'bound MiB':>9s} "
    f"{'snap MiB':>8s} "
    f"{'RSS MiB':>8s} {'series':>7s} {'restart s':>9s} {'equal':>5s} {'elapsed s':>9s}"
)


def _row(s: Sample) -> str:
    return (
        f"{s.event_days:5.2f} {s.events:11,d} {s.bus_bytes / _MIB:8.1f} "
        f"{s.peak_bus_bytes / _MIB:8.1f} {s.bound_bytes / _MIB:9.1f} "
        f"{s.snapshot_bytes / _MIB:8.2f} {s.rss_bytes / _MIB:8.1f} "
        f"{s.series:7,d} {s.restart_s:9.2f} {'yes' if s.replay_equal else 'NO':>5s} "
        f"{s.elapsed_s:9.0f}"
    )


def table(results: dict[str, Any]) -> str:
    """The samples, one row each, then the final checks."""
    rows = [_HEADER, *(_row(Sample(**s)) for s in results["samples"])]
    final, summary = results["final"], results["summary"]
    formats = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in final["replay_equal"].items())
    rows += [
        f"{summary['events']:,d} events over {summary['event_days']:.2f} days of event time "
        f"in {summary['elapsed_s']:.0f} s ({summary['events_per_s']:,.0f} events/s); "
        f"bus within bound at every sample: {'yes' if summary['bus_within_bound'] else 'NO'}",
        f"final replay equals the uncompacted fold: {formats}; live server: "
        f"{'yes' if final['serve_equal'] else 'NO'}; after a restart of tally serve "
        f"({final['serve_restart_s']:.2f} s to catch up): "
        f"{'yes' if final['serve_restarted_equal'] else 'NO'}",
    ]
    return "\n".join(rows)


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else FULL
    changes = {
        "events": args.events,
        "days": args.days,
        "intervals": args.intervals,
        "retain_bytes": args.retain_bytes,
        "segment_bytes": args.segment_bytes,
        "checkpoint_every_events": args.checkpoint_every_events,
        "forget_after_s": args.forget_after_s,
    }
    fields = asdict(base) | {k: v for k, v in changes.items() if v is not None}
    return Settings(**fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    parser.add_argument("--events", type=int, help=f"events (default {FULL_EVENTS:,})")
    parser.add_argument("--days", type=float, help="days of event time (default 7)")
    parser.add_argument("--intervals", type=int, help="measurement points")
    parser.add_argument("--retain-bytes", type=int, help="[bus] retain_bytes")
    parser.add_argument("--segment-bytes", type=int, help="[bus] segment_bytes")
    parser.add_argument(
        "--checkpoint-every-events", type=int, help="[server] checkpoint_every_events"
    )
    parser.add_argument(
        "--forget-after-s", type=float, help="[projections] forget_after_s (0: never)"
    )
    parser.add_argument("--dir", type=Path, help="where the data directory goes (a temp dir)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    settings = settings_from(args)
    print(_HEADER, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tally-soak-", dir=args.dir) as tmp:
        results = soak(Path(tmp), settings)
    print(table(results))
    write_json(args.out, machine(), results)
    print(f"wrote {args.out}")
    return 0 if results["summary"]["final_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
