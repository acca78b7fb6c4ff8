"""Two `tally serve` on a three-node JetStream cluster (R=3) while a node and a server die.

Four clients POST batches with an Idempotency-Key each, spread over both servers, and
retry a failed batch with the same key against the other server. During ingest the
node leading the stream (the one both servers are connected to) and server A are
killed (SIGKILL); B must keep acknowledging batches and answering /metrics; A restarts
while that node is still down (its URL lists all three), then the node restarts on its
store. Every batch is counted exactly once (each carries a `metric` event labelled with
its key, and four `bus_message`s with ids of their own), every acknowledgement's
positions hold that batch's events, and A ends with B's /metrics.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from tests.support.nats import NatsCluster, find_nats_server
from tests.support.serverproc import (
    PROCESS_ONLY,
    TallyServer,
    http_request,
    samples,
    tally,
    tally_server,
    without,
)

pytestmark = pytest.mark.skipif(find_nats_server() is None, reason="nats-server not installed")

STREAM: Final = "tally"
CLIENTS: Final = 4
MESSAGES_PER_BATCH: Final = 4
#: Batches acknowledged in each phase (before the kills, by B alone, by A again).
PHASE_BATCHES: Final = 40
#: Guards, not expectations: how long anything may take on a loaded machine before the test
#: gives up (a leader election takes seconds; a reset consumer waits two missed heartbeats).
GUARD_S: Final = 240.0


def batch(key: str) -> bytes:
    """Four bus messages with ids of their own and one counter series of the batch's key."""
    events: list[dict[str, Any]] = [
        {"type": "bus_message", "project": "cluster", "msg_type": "FACT", "msg_id": f"{key}/{k}"}
        for k in range(MESSAGES_PER_BATCH)
    ]
    labels = {"batch": key}
    events.append(
        {
            "type": "metric",
            "name": "cluster_batches_total",
            "kind": "counter",
            "value": 1,
            "labels": labels,
        }
    )
    return json.dumps(events).encode()


@dataclass
class Ingest:
    """The clients' shared state: where the servers are, and what each one acknowledged."""

    ports: dict[str, int]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: key -> (server that answered 200, its answer)
    acked: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    sent: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    #: (server, status or "gone") of every attempt that got no 200 (printed, not asserted)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)

    def acked_by(self, name: str) -> int:
        with self.lock:
            return sum(1 for server, _ in self.acked.values() if server == name)

    def client(self, i: int) -> None:
        """Batches until stopped; each retried (same key, the other server next) until a 200."""
        n = 0
        while not self.stop.is_set():
            key = f"c{i}-{n}"
            with self.lock:
                self.sent.add(key)
            order = ("a", "b") if (i + n) % 2 == 0 else ("b", "a")
            deadline = time.monotonic() + GUARD_S
            attempt = 0
            while True:
                name = order[attempt % 2]
                headers = {"Content-Type": "application/json", "Idempotency-Key": key}
                try:
                    reply = http_request(
                        self.ports[name],
                        "POST",
                        "/api/v1/events",
                        body=batch(key),
                        headers=headers,
                        timeout=60,
                    )
                except (OSError, http.client.HTTPException):
                    reply = None  # the server is gone: never acknowledged
                if reply is not None and reply.status == 200:
                    with self.lock:
                        self.acked[key] = (name, reply.json())
                    break
                with self.lock:
                    self.refused[(name, str(reply.status) if reply else "gone")] += 1
                if time.monotonic() > deadline:
                    with self.lock:
                        self.failures.append(f"{key}: no 200 from either server in {GUARD_S} s")
                    return
                attempt += 1
                if attempt % 2 == 0:  # both refused it: wait a little before the next round
                    time.sleep(0.2)
            n += 1
            time.sleep(0.01)


@dataclass
class Scraper:
    """GET /metrics from one server until stopped; every answer that is not a 200 is kept."""

    port: int
    stop: threading.Event
    ok: int = 0
    failures: list[str] = field(default_factory=list)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                reply = http_request(self.port, "GET", "/metrics", timeout=60)
                if reply.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{reply.status}: {reply.body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            time.sleep(0.1)


def wait_until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD_S
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {GUARD_S} s"
        time.sleep(0.05)


def caught_up(servers: list[TallyServer]) -> bool:
    """Whether every server folded everything, to the same end of the stream."""
    ends = set()
    for server in servers:
        status = server.status()
        if not status["ready"] or status["folded_offset"] != status["end_offset"]:
            return False
        ends.add(status["end_offset"])
    return len(ends) == 1


def create_stream(data_dir: Path, url: str) -> None:
    """`tally check` creates the stream (R=3 from tally.toml) once the cluster can."""
    deadline = time.monotonic() + GUARD_S
    while (proc := tally(data_dir, "check", "--bus", url, check=False)).returncode != 0:
        assert time.monotonic() < deadline, proc.stderr.decode()
        time.sleep(0.5)


@pytest.mark.timeout(1200)
def test_a_node_and_a_server_killed_during_ingest_lose_no_acknowledged_batch(
    tmp_path: Path,
) -> None:
    dirs = {name: tmp_path / name for name in ("a", "b")}
    for data_dir in dirs.values():
        data_dir.mkdir()
        (data_dir / "tally.toml").write_text("[bus.nats]\nreplicas = 3\n")
    cluster = NatsCluster(tmp_path / "nats").start()
    threads: list[threading.Thread] = []
    ingest = Ingest(ports={})
    started: list[TallyServer] = []  # their logs are printed: pytest shows them on failure
    try:
        nodes = cluster.nodes
        create_stream(dirs["a"], f"nats://{nodes[0].host}/{STREAM}")
        lead = nodes[cluster.stream_leader(STREAM)]
        others = [node for node in nodes if node is not lead]
        # both list the leader first: each starts on the node that will die
        urls = {
            "a": f"nats://{lead.host},{others[1].host},{others[0].host}/{STREAM}",
            "b": f"nats://{lead.host},{others[0].host},{others[1].host}/{STREAM}",
        }
        with ExitStack() as servers:
            a, b = (servers.enter_context(tally_server(dirs[n], "--bus", urls[n])) for n in "ab")
            started += [a, b]
            for server in (a, b):
                assert f"connected to {lead.host}" in server.stderr
            ingest.ports.update(a=a.port, b=b.port)
            scraper = Scraper(b.port, stop=ingest.stop)
            threads = [threading.Thread(target=ingest.client, args=(i,)) for i in range(CLIENTS)]
            threads.append(threading.Thread(target=scraper.run))
            for thread in threads:
                thread.start()

            wait_until("batches before the kills", lambda: len(ingest.acked) >= PHASE_BATCHES)
            lead.kill()
            assert a.kill() == -signal.SIGKILL
            by_b, scrapes = ingest.acked_by("b"), scraper.ok
            wait_until(
                "batches acknowledged by the survivor",
                lambda: ingest.acked_by("b") >= by_b + PHASE_BATCHES,
            )
            wait_until("scrapes of the survivor", lambda: scraper.ok > scrapes)
            assert f"reconnected to {others[0].host}" in b.stderr

            # not ready until it caught up: on a loaded machine that may take a while
            a = servers.enter_context(tally_server(dirs["a"], "--bus", urls["a"], ready=False))
            started.append(a)
            a.wait_ready(GUARD_S)
            assert f"connected to {others[1].host}" in a.stderr  # the first listed is down
            ingest.ports["a"] = a.port
            lead.start()  # on its store: it catches up as a follower
            by_a = ingest.acked_by("a")
            wait_until(
                "batches acknowledged by the restarted server",
                lambda: ingest.acked_by("a") >= by_a + PHASE_BATCHES,
            )
            ingest.stop.set()
            for thread in threads:
                thread.join(GUARD_S)
                assert not thread.is_alive()

            assert ingest.failures == []
            assert scraper.failures == []
            assert set(ingest.acked) == ingest.sent  # every batch was acknowledged at last
            wait_until("both servers caught up", lambda: caught_up([a, b]))
            texts = {name: server.metrics() for name, server in (("a", a), ("b", b))}
            log = [
                json.loads(line)
                for line in tally(dirs["b"], "tail", "--bus", urls["b"]).stdout.splitlines()
            ]
    finally:
        ingest.stop.set()
        for thread in threads:
            thread.join(GUARD_S)
        cluster.stop()
        print(f"acknowledged {len(ingest.acked)} batches; refused: {dict(ingest.refused)}")
        for server in started:
            print(
                f"--- tally serve on {server.data_dir.name}, port {server.port}:\n{server.stderr}"
            )
        for node in cluster.nodes:
            assert node.log is not None
            print(f"--- {node.name}:\n{node.log.read_text()[-5000:]}")

    # each batch exactly once: its counter series is 1, its messages appear once
    values = samples(texts["b"])
    counted = {
        key: value for key, value in values.items() if key.startswith("cluster_batches_total{")
    }
    assert counted == {f'cluster_batches_total{{batch="{key}"}}': 1.0 for key in ingest.acked}
    assert values["conductor_messagebus_appends_total"] == MESSAGES_PER_BATCH * len(ingest.acked)
    ids = Counter(event["msg_id"] for event in log if event["type"] == "bus_message")
    assert ids == Counter(f"{key}/{k}" for key in ingest.acked for k in range(MESSAGES_PER_BATCH))
    # every acknowledgement names the positions of its own batch's events
    at = {event["offset"]: event for event in log}
    for key, (_, doc) in ingest.acked.items():
        first, last = doc["first_offset"], doc["last_offset"]
        events = [at[offset] for offset in sorted(at) if first <= offset <= last]
        assert [e.get("msg_id") or e["labels"]["batch"] for e in events] == [
            *(f"{key}/{k}" for k in range(MESSAGES_PER_BATCH)),
            key,
        ]
    # the restarted server serves what the survivor serves (bar each process's own)
    assert without(texts["a"], PROCESS_ONLY) == without(texts["b"], PROCESS_ONLY)
