"""`tally serve` end to end: a real subprocess on an ephemeral port, real files, real sockets.

Every test talks HTTP to the server and checks what the log (`tally tail`, `tally check`) and
a fresh replay (`tally replay`) say, so the server is judged against the source of truth.
"""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.buses import bus_url
from tests.support.nats import NatsServer, nats_server
from tests.support.serverproc import (
    API_REQUESTS,
    PROCESS_ONLY,
    SERVER_ONLY,
    TALLY,
    TallyServer,
    api_requests,
    bus_files,
    http_request,
    samples,
    start_server,
    tail,
    tally,
    tally_server,
    without,
)

PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OM_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

__all__ = ["bus_url", "nats_server"]  # the fixtures, used by name


def finished(run_id: str, status: str = "completed", agent: str = "claude") -> dict[str, Any]:
    return {
        "type": "run_finished",
        "run_id": run_id,
        "project": "web",
        "agent": agent,
        "status": status,
        "duration_s": 4.5,
    }


def message(n: int) -> dict[str, Any]:
    return {"type": "bus_message", "project": "web", "msg_type": "FACT", "msg_id": f"m{n}"}


def own_requests(server: TallyServer) -> Counter[tuple[str, str]]:
    """What this process has counted when it renders the next GET /metrics (not counted yet)."""
    return server.responses.copy()


def mixed(n: int, seed: int) -> list[dict[str, Any]]:
    """A realistic mix of every event type (the benchmark workload) as plain JSON objects."""
    import msgspec

    from tests.support.workload import mixed_events

    return [msgspec.to_builtins(ev) for ev in mixed_events(n, seed)]


# -- scraping ------------------------------------------------------------------------


def test_emitted_and_posted_events_show_up_on_scrape(data_dir: Path, bus_url: str | None) -> None:
    with tally_server(data_dir) as server:
        emitted = tally(
            data_dir,
            "emit",
            "run_finished",
            "run_id=r1",
            "project=web",
            "agent=claude",
            "status=completed",
            "duration_s=2.5",
        )
        server.wait_folded(int(emitted.stdout) + 1)
        values = samples(server.metrics())
        assert values["conductor_completed_runs_total"] == 1
        assert (
            values['conductor_run_duration_seconds_count{agent="claude",status="completed"}'] == 1
        )
        assert (
            values['conductor_run_duration_seconds_sum{agent="claude",status="completed"}'] == 2.5
        )

        posted = server.post_events([finished("r2", "failed"), message(1), message(2)])
        server.wait_folded(posted["last_offset"] + 1)
        values = samples(server.metrics())
        assert values["conductor_completed_runs_total"] == 1
        assert values["conductor_failed_runs_total"] == 1
        assert values["conductor_messagebus_appends_total"] == 2
        assert values['tally_events_folded_total{type="run_finished"}'] == 2


def test_other_methods_get_405_with_allow_and_are_counted(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        for method in ("DELETE", "POST", "PUT"):
            reply = server.request(method, "/metrics")
            assert reply.status == 405
            assert reply.headers["allow"] == "GET, HEAD"
        assert server.request("GET", "/api/v1/events").headers["allow"] == "POST"
        assert server.get("/no/such/path").status == 404

        expected = own_requests(server)
        text = server.metrics()
        # conductor_api_requests_total is exactly this process's own responses (the log has
        # no api_request events); the scrape that renders it is counted after it is sent.
        assert api_requests(text) == expected
        assert 'conductor_api_requests_total{method="DELETE",status="405"} 1' in text
        assert api_requests(server.metrics())[("GET", "200")] == expected[("GET", "200")] + 1


def _raw_head(port: int, path: str) -> tuple[bytes, bytes]:
    """HEAD on a raw socket with Connection: close: the head and everything after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def test_head_metrics_has_get_headers_and_no_body(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        server.post_events([finished(f"r{i}") for i in range(5)])
        server.wait_caught_up()
        head, rest = _raw_head(server.port, "/metrics")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert rest == b""  # no body, and the connection closed cleanly after the head
        assert f"content-type: {PROM_CONTENT_TYPE}".encode() in head.lower()
        server.responses[("HEAD", "200")] += 1

        # The body changes between two requests only by the uptime gauge's digits (and by the
        # request counters, primed above so that no series appears in between): some HEAD
        # announces exactly the length of the GET that follows it.
        differences = []
        for _ in range(30):
            announced = int(server.request("HEAD", "/metrics").headers["content-length"])
            got = server.get("/metrics")
            differences.append(announced - len(got.body))
            if announced == len(got.body):
                break
        assert differences[-1] == 0, differences
        assert all(abs(d) <= 20 for d in differences), differences  # the uptime's digits


def test_gzip_when_accepted(data_dir: Path) -> None:
    volatile = ("conductor_uptime_seconds", API_REQUESTS)
    with tally_server(data_dir) as server:
        server.post_events(mixed(500, seed=3))
        server.wait_caught_up()
        plain = server.get("/metrics")
        zipped = server.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert zipped.status == 200
        assert zipped.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in zipped.headers["vary"].lower()
        assert "content-encoding" not in plain.headers
        assert "accept-encoding" in plain.headers["vary"].lower()
        assert int(zipped.headers["content-length"]) == len(zipped.body) < len(plain.body)
        unzipped = gzip.decompress(zipped.body).decode()
        assert without(unzipped, volatile) == without(plain.text, volatile)
        refused = server.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "content-encoding" not in refused.headers


def test_content_negotiation(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        server.post_events([finished("r1")])
        server.wait_caught_up()
        default = server.get("/metrics")
        assert default.headers["content-type"] == PROM_CONTENT_TYPE
        assert "# EOF" not in default.text
        assert "conductor_completed_runs_total 1\n" in default.text
        for accept in ("*/*", "text/plain", "text/plain;version=0.0.4"):
            reply = server.get("/metrics", headers={"Accept": accept})
            assert reply.headers["content-type"] == PROM_CONTENT_TYPE, accept
        om = server.get(
            "/metrics",
            headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
        )
        assert om.headers["content-type"] == OM_CONTENT_TYPE
        assert om.text.endswith("# EOF\n")
        assert "# TYPE conductor_completed_runs counter\n" in om.text
        assert "conductor_completed_runs_total 1\n" in om.text


def test_api_metrics_formats(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        server.post_events([finished("r1"), finished("r2", "failed")])
        server.wait_caught_up()

        as_json = server.get("/api/v1/metrics?format=json")
        assert as_json.status == 200
        assert as_json.headers["content-type"] == "application/json"
        assert server.get("/api/v1/metrics").body.startswith(as_json.body[:40])  # JSON default
        doc = as_json.json()
        text = json.dumps(doc)
        assert "conductor_completed_runs_total" in text
        assert "conductor_uptime_seconds" in text

        prom = server.get("/api/v1/metrics?format=prometheus")
        assert prom.headers["content-type"] == PROM_CONTENT_TYPE
        assert "conductor_failed_runs_total 1\n" in prom.text

        om = server.get("/api/v1/metrics?format=openmetrics")
        assert om.headers["content-type"] == OM_CONTENT_TYPE
        assert om.text.endswith("# EOF\n")

        statsd = server.get("/api/v1/metrics?format=statsd")
        assert statsd.status == 200
        assert statsd.headers["content-type"].startswith("text/plain")
        assert "conductor_completed_runs_total" in statsd.text
        assert "|c" in statsd.text or "|g" in statsd.text

        bad = server.get("/api/v1/metrics?format=xml")
        assert bad.status == 400
        assert "format" in bad.json()["error"]


def test_status_keys(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        posted = server.post_events([finished("r1"), message(1)])
        doc = server.wait_folded(posted["last_offset"] + 1)
        for key in (
            "folded_offset",
            "end_offset",
            "lag_bytes",
            "events_by_type",
            "corrupt_lines",
            "unknown_events",
            "sse_subscribers",
            "last_checkpoint",
            "version",
            "uptime_s",
        ):
            assert key in doc, key
        end = tally(data_dir, "check", "--json")
        assert doc["end_offset"] == doc["folded_offset"] == json.loads(end.stdout)["end_offset"]
        assert doc["lag_bytes"] == 0
        assert doc["events_by_type"]["run_finished"] == 1
        assert doc["events_by_type"]["bus_message"] == 1
        assert doc["corrupt_lines"] == doc["unknown_events"] == doc["sse_subscribers"] == 0
        assert doc["last_checkpoint"] is None
        assert doc["restored_from_offset"] is None
        assert isinstance(doc["version"], str) and doc["version"]
        assert doc["uptime_s"] >= 0
        assert server.get("/healthz").status == 200


def _write_big_log(data_dir: Path, n: int) -> int:
    try:
        from tests.support.workload import write_log
    except ImportError:  # pragma: no cover - the benchmark workload is part of the repo
        from bus.events import BusMessage
        from bus.writer import BusConfig, BusWriter

        with BusWriter(data_dir, BusConfig(durability="never")) as writer:
            for start in range(0, n, 10_000):
                events = [BusMessage(project="p", msg_type="FACT") for _ in range(10_000)]
                writer.append(events[: n - start])
        return 0
    return write_log(data_dir, n, batch=10_000)


def test_readyz_is_503_until_the_initial_replay_reached_the_end(data_dir: Path) -> None:
    _write_big_log(data_dir, 300_000)
    server = start_server(data_dir)
    try:
        statuses: list[int] = []
        healthy: list[int] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            reply = server.get("/readyz")
            statuses.append(reply.status)
            if reply.status == 200:
                break
            assert reply.status == 503, reply
            healthy.append(server.get("/healthz").status)
        assert statuses[-1] == 200, "never ready"
        assert 503 in statuses, "the replay finished before the first probe: make the log bigger"
        assert set(healthy) <= {200}
        doc = server.status()
        assert doc["ready"] is True
        assert doc["folded_offset"] == doc["end_offset"]
        assert sum(doc["events_by_type"].values()) == 300_000
    finally:
        assert server.stop() == 0


# -- ingest -----------------------------------------------------------------------------


def test_post_object_array_and_jsonl_report_their_offsets(
    data_dir: Path, bus_url: str | None
) -> None:
    with tally_server(data_dir) as server:
        one = server.post_events(finished("r1"))
        many = server.post_events([message(1), message(2), message(3)])
        jsonl = b"".join(json.dumps(message(n)).encode() + b"\n" for n in (4, 5))
        reply = server.post(
            "/api/v1/events", jsonl, headers={"Content-Type": "application/x-ndjson"}
        )
        assert reply.status == 200, reply.body
        lines = reply.json()

        records = tail(data_dir)
        offsets = [r["offset"] for r in records]
        assert (one["appended"], many["appended"], lines["appended"]) == (1, 3, 2)
        assert one["first_offset"] == one["last_offset"] == offsets[0]
        assert (many["first_offset"], many["last_offset"]) == (offsets[1], offsets[3])
        assert (lines["first_offset"], lines["last_offset"]) == (offsets[4], offsets[5])
        assert [r["type"] for r in records] == ["run_finished"] + ["bus_message"] * 5
        assert [r.get("msg_id") for r in records[1:]] == ["m1", "m2", "m3", "m4", "m5"]
        assert all(isinstance(r["ts"], float) for r in records)  # stamped by the writer


def test_post_with_an_invalid_event_appends_nothing(data_dir: Path, bus_url: str | None) -> None:
    with tally_server(data_dir) as server:
        server.post_events([finished("r0")])
        before = tail(data_dir)

        bad_array = [finished("r1"), {"type": "run_started", "project": "web"}, message(1)]
        reply = server.post("/api/v1/events", json.dumps(bad_array).encode())
        assert reply.status == 400
        errors = reply.json()["errors"]
        assert [(e["line"], e["field"]) for e in errors] == [(2, "run_id")]

        bad_lines = b"\n".join(
            [
                json.dumps(message(1)).encode(),
                json.dumps(message(2)).encode(),
                b'{"type": "api_request", "method": "GET", "status": "teapot"}',
                json.dumps(message(3)).encode(),
            ]
        )
        reply = server.post(
            "/api/v1/events", bad_lines, headers={"Content-Type": "application/x-ndjson"}
        )
        assert reply.status == 400
        errors = reply.json()["errors"]
        assert [(e["line"], e["field"]) for e in errors] == [(3, "status")]
        assert "nothing appended" in reply.json()["error"]

        assert server.post("/api/v1/events", b"{not json").status == 400
        assert server.post("/api/v1/events", b"[]").status == 400
        assert tail(data_dir) == before
        assert server.wait_caught_up()["events_by_type"]["run_finished"] == 1


def test_reset_appends_metrics_reset_and_zeroes_counters(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        server.post_events([finished("r1"), finished("r2", "failed"), message(1)])
        server.wait_caught_up()
        assert samples(server.metrics())["conductor_completed_runs_total"] == 1

        partial = server.post("/api/v1/reset?prefix=conductor_messagebus")
        assert partial.status == 200
        server.wait_folded(partial.json()["offset"] + 1)
        values = samples(server.metrics())
        assert values.get("conductor_messagebus_appends_total", 0) == 0
        assert values["conductor_completed_runs_total"] == 1

        reply = server.post("/api/v1/reset", json.dumps({"prefix": ""}).encode())
        assert reply.status == 200
        offset = reply.json()["offset"]
        server.wait_folded(offset + 1)
        values = samples(server.metrics())
        assert values.get("conductor_completed_runs_total", 0) == 0
        assert values.get("conductor_failed_runs_total", 0) == 0
        assert values['tally_events_folded_total{type="run_finished"}'] == 2  # never reset
        assert values['tally_events_folded_total{type="metrics_reset"}'] == 2

        record = {r["offset"]: r for r in tail(data_dir)}[offset]
        assert record["type"] == "metrics_reset"
        assert record["prefix"] == ""
        assert server.post("/api/v1/reset", b"[1, 2]").status == 400


# -- security ---------------------------------------------------------------------------------


def test_token_guards_posts_and_leaves_reads_open(data_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with tally_server(data_dir, "--token-file", str(token_file), token="s3cret-token") as server:
        server.post_events([finished("r1")])
        before = bus_files(data_dir)
        body = json.dumps(finished("r2")).encode()
        missing = server.post("/api/v1/events", body, auth=False)
        assert missing.status == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = server.post(
            "/api/v1/events", body, headers={"Authorization": "Bearer s3cret-tokeN"}
        )
        assert wrong.status == 401
        basic = server.post("/api/v1/events", body, headers={"Authorization": "Basic czNjcmV0"})
        assert basic.status == 401
        assert server.post("/api/v1/reset", auth=False).status == 401
        assert bus_files(data_dir) == before
        assert server.post("/api/v1/events", body).status == 200

        for path in ("/metrics", "/api/v1/metrics", "/api/v1/status", "/healthz", "/readyz"):
            assert server.get(path, auth=False).status == 200, path


def test_protect_reads_requires_the_token_on_reads(data_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("another-token")
    args = ("--token-file", str(token_file), "--protect-reads")
    with tally_server(data_dir, *args, token="another-token") as server:
        for path in ("/metrics", "/api/v1/metrics", "/api/v1/status", "/api/v1/stream"):
            assert server.get(path, auth=False).status == 401, path
        assert server.get("/metrics").status == 200
        assert server.get("/healthz", auth=False).status == 200  # probes stay open


def test_refuses_a_non_loopback_bind_without_a_token(data_dir: Path) -> None:
    proc = subprocess.run(
        [*TALLY, "serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert b"listening" not in proc.stdout
    assert b"non-loopback" in proc.stderr
    assert b"--token-file" in proc.stderr
    unprotected = subprocess.run(
        [*TALLY, "serve", "--protect-reads", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert unprotected.returncode == 2
    assert b"--token-file" in unprotected.stderr


# -- restarts and crashes ----------------------------------------------------------------------


def _value(text: str, name: str) -> float:
    return samples(text)[name]


def test_restart_restores_the_checkpoint_and_serves_identical_metrics(
    data_dir: Path, bus_url: str | None
) -> None:
    events = mixed(3000, seed=11)
    with tally_server(data_dir) as first:
        for start in range(0, len(events), 500):
            last = first.post_events(events[start : start + 500])["last_offset"]
        status = first.wait_folded(last + 1)
        end = status["end_offset"]
        own1 = own_requests(first)
        text1 = first.metrics()
        assert first.stop() == 0
    snaps = sorted(p.name for p in (data_dir / "snapshots").iterdir())
    assert snaps == [f"{end:020d}.snap"], snaps

    with tally_server(data_dir) as second:
        own2 = own_requests(second)
        text2 = second.metrics()
        status2 = second.status()
    assert status2["restored_from_offset"] == end
    assert status2["folded_offset"] == end

    # 1. Everything but the server-only families and the request counter is identical, and
    #    identical to a fresh replay of the log.
    replayed = tally(data_dir, "replay").stdout.decode()
    steady = (*SERVER_ONLY, API_REQUESTS)
    assert without(text1, steady) == without(text2, steady) == without(replayed, (API_REQUESTS,))

    # 2. The request counter is the folded api_request events plus this process's own
    #    responses, which start from zero in each process.
    folded = api_requests(replayed)
    assert sum(folded.values()) > 0
    assert api_requests(text1) == folded + own1
    assert api_requests(text2) == folded + own2

    # 3. Server-only gauges: the end of the bus did not move; the checkpoint gauge went from
    #    "none yet" (the first process only wrote its final checkpoint on SIGTERM) to that
    #    checkpoint; SSE families are all zero in both; uptime is the one wall-clock value.
    assert _value(text1, "tally_end_offset_bytes") == _value(text2, "tally_end_offset_bytes") == end
    assert _value(text1, "tally_checkpoint_offset_bytes") == -1
    assert _value(text2, "tally_checkpoint_offset_bytes") == end
    for name in ("tally_sse_subscribers", "tally_sse_frames_total"):
        assert _value(text1, name) == _value(text2, name) == 0
    assert _value(text1, "conductor_uptime_seconds") > 0
    assert _value(text2, "conductor_uptime_seconds") > 0


def test_sigkill_during_ingest_loses_no_acknowledged_event(
    data_dir: Path, bus_url: str | None
) -> None:
    server = start_server(data_dir)
    acked: list[tuple[int, int, list[str]]] = []
    stop = threading.Event()

    def client() -> None:
        n = 0
        while not stop.is_set():
            ids = [f"r{n}-{k}" for k in range(5)]
            body = json.dumps([finished(run_id) for run_id in ids]).encode()
            n += 1
            try:
                reply = http_request(server.port, "POST", "/api/v1/events", body=body, timeout=5)
            except (OSError, http.client.HTTPException):
                return  # the server is gone (an unanswered request was never acknowledged)
            if reply.status == 200:
                doc = reply.json()
                acked.append((doc["first_offset"], doc["last_offset"], ids))

    try:
        server.wait_ready()
        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        server.stop()
    assert len(acked) >= 60

    records = {r["offset"]: r for r in tail(data_dir)}
    for first, last, ids in acked:
        batch = [records[o] for o in sorted(records) if first <= o <= last]
        assert [r["run_id"] for r in batch] == ids
    report = json.loads(tally(data_dir, "check", "--json", check=False).stdout)
    finished_events = report["events_by_type"]["run_finished"]
    assert finished_events == len(records) >= 5 * len(acked)

    with tally_server(data_dir) as again:
        values = samples(again.metrics())
        assert again.status()["restored_from_offset"] is None  # killed: no final checkpoint
    assert values["conductor_completed_runs_total"] == finished_events
    assert values['tally_events_folded_total{type="run_finished"}'] == finished_events


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_with_a_final_checkpoint(
    data_dir: Path, bus_url: str | None, signum: int
) -> None:
    with tally_server(data_dir) as server:
        last = server.post_events([finished("r1"), message(1)])["last_offset"]
        end = server.wait_folded(last + 1)["end_offset"]
        assert server.stop(signum) == 0
        assert "shutting down" in server.stderr
    assert [p.name for p in (data_dir / "snapshots").iterdir()] == [f"{end:020d}.snap"]


# -- the bus ------------------------------------------------------------------------------


def test_a_retried_idempotency_key_appends_once(data_dir: Path, bus_url: str | None) -> None:
    with tally_server(data_dir) as server:
        body = json.dumps([finished("r1"), message(1)]).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": "batch-42"}
        first = server.post("/api/v1/events", body, headers=headers)
        server.post_events([message(2)])  # another batch in between
        again = server.post("/api/v1/events", body, headers=headers)
        assert first.status == again.status == 200
        assert again.json() == first.json()
        records = tail(data_dir)
        assert [r["type"] for r in records] == ["run_finished", "bus_message", "bus_message"]
        doc = first.json()
        assert (doc["first_offset"], doc["last_offset"]) == (
            records[0]["offset"],
            records[1]["offset"],
        )
        status = server.wait_caught_up()
        folded = {tag: n for tag, n in status["events_by_type"].items() if n}
        assert folded == {"bus_message": 2, "run_finished": 1}
        assert doc["bus"] == status["bus"] == (bus_url or f"file:{data_dir / 'bus'}")
        bad = server.post("/api/v1/events", body, headers={"Idempotency-Key": "new\tline"})
        assert bad.status == 400


def test_two_servers_on_one_stream_serve_the_same_metrics(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    url = f"{nats_server.url}/shared"
    events = mixed(2000, seed=3)
    with (
        tally_server(tmp_path / "a", "--bus", url) as a,
        tally_server(tmp_path / "b", "--bus", url) as b,
    ):
        for start in range(0, len(events), 250):
            (a if start % 500 else b).post_events(events[start : start + 250])
        tally(tmp_path / "a", "emit", "--bus", url, "run_started", "run_id=x", "project=p")
        end = b.status()["end_offset"]
        for server in (a, b):
            deadline = time.monotonic() + 15
            while (status := server.wait_caught_up())["folded_offset"] < end:
                assert time.monotonic() < deadline, status
        texts = {name: (own_requests(s), s.metrics()) for name, s in (("a", a), ("b", b))}
    (own_a, text_a), (own_b, text_b) = texts["a"], texts["b"]
    assert without(text_a, PROCESS_ONLY) == without(text_b, PROCESS_ONLY)
    folded = samples(text_a)
    assert sum(v for k, v in folded.items() if k.startswith("tally_events_folded_total")) == 2001
    assert api_requests(text_a) - own_a == api_requests(text_b) - own_b
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["snapshots"]  # no bus files


DEPLOY_TYPES = """
[[event_types]]
name = "deploy_finished"
fields = [
  { name = "service", type = "str" },
  { name = "duration_s", type = "float", required = false },
]
"""
DEPLOY_RULE = """
[[rules]]
name = "deploys"
on = "deploy_finished"
family = "deploys_total"
kind = "counter"
labels = { service = "service" }
"""


def deploy(service: str, **fields: Any) -> dict[str, Any]:
    return {"type": "deploy_finished", "service": service, **fields}


def test_declared_types_are_ingested_and_a_new_rule_counts_their_history(
    data_dir: Path, bus_url: str | None
) -> None:
    (data_dir / "tally.toml").write_text(DEPLOY_TYPES)
    with tally_server(data_dir) as first:
        posted = first.post_events([deploy("api", duration_s=2), deploy("web"), message(1)])
        lines = b"\n".join(json.dumps(deploy("api")).encode() for _ in range(2))
        reply = first.post(
            "/api/v1/events", lines, headers={"Content-Type": "application/x-ndjson"}
        )
        assert reply.status == 200, reply.body
        before = tail(data_dir)
        bad = [deploy("api"), deploy("web", duration_s="slow"), {"type": "deploy_started"}]
        reply = first.post("/api/v1/events", json.dumps(bad).encode())
        assert reply.status == 400
        errors = reply.json()["errors"]
        assert [(e["line"], e["field"]) for e in errors] == [(2, "duration_s"), (3, "type")]
        assert tail(data_dir) == before
        first.wait_folded(posted["last_offset"] + 1)
        assert first.wait_caught_up()["events_by_type"]["deploy_finished"] == 4
        values = samples(first.metrics())
        assert values['tally_events_folded_total{type="deploy_finished"}'] == 4
        assert "deploys_total" not in first.metrics()
        assert first.stop() == 0

    (data_dir / "tally.toml").write_text(DEPLOY_TYPES + DEPLOY_RULE)  # a new rule: refold
    with tally_server(data_dir) as second:
        second.wait_caught_up()
        values = samples(second.metrics())
        assert values['deploys_total{service="api"}'] == 3
        assert values['deploys_total{service="web"}'] == 1
        assert values['tally_events_folded_total{type="deploy_finished"}'] == 4
        assert values["tally_unknown_events_total"] == 0
        assert second.status()["restored_from_offset"] is None
    replayed = samples(tally(data_dir, "replay").stdout.decode())
    assert replayed['deploys_total{service="api"}'] == 3
