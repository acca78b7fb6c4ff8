"""A real Prometheus server scrapes a real `tally serve` and sees the values tally holds."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.serverproc import api_requests, http_request, samples, tally, tally_server

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

pytestmark = pytest.mark.skipif(
    not Path(PROMETHEUS).is_file(),
    reason="needs the prometheus binary (Debian package 'prometheus'; scripts/test installs it)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def prometheus(tmp_path: Path, target_port: int, *flags: str) -> Iterator[int]:
    """Prometheus on a loopback ephemeral port, scraping 127.0.0.1:`target_port` every 1 s
    (with more command-line `flags`)."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: tally\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            *flags,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def query(port: int, promql: str) -> list[dict[str, Any]]:
    """The instant vector Prometheus returns for `promql` (empty while not yet scraped)."""
    try:
        reply = http_request(
            port, "GET", "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        )
    except OSError:
        return []  # not listening yet
    if reply.status != 200:
        return []
    doc = json.loads(reply.body)
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def wait_for_value(port: int, promql: str, want: float, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = query(port, promql)
        if len(result) == 1 and float(result[0]["value"][1]) == want:
            return
        time.sleep(0.25)
    text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise AssertionError(f"{promql} never became {want}: {result}\n{text}")


def run_started(run_id: str, agent: str) -> dict[str, Any]:
    return {"type": "run_started", "run_id": run_id, "project": "web", "agent": agent}


def run_finished(run_id: str, agent: str, status: str) -> dict[str, Any]:
    return {
        "type": "run_finished",
        "run_id": run_id,
        "project": "web",
        "agent": agent,
        "status": status,
        "duration_s": 12.0,
    }


def test_prometheus_scrapes_the_values_tally_holds(data_dir: Path, tmp_path: Path) -> None:
    runs = [("r1", "claude", "completed"), ("r2", "claude", "completed"), ("r3", "codex", "failed")]
    runs += [("r4", "gemini", "completed")]
    events = [run_started(run_id, agent) for run_id, agent, _ in runs]
    events += [run_finished(*run) for run in runs]
    with tally_server(data_dir) as server:
        last = server.post_events(events)["last_offset"]
        tally(data_dir, "emit", "run_started", "run_id=r5", "project=web", "agent=claude")
        server.wait_caught_up()
        assert server.wait_folded(last + 1)
        held = samples(server.metrics())
        assert held["conductor_completed_runs_total"] == 3
        assert held['conductor_agent_runs_total{agent_type="claude"}'] == 3

        with prometheus(tmp_path, server.port) as port:
            log = tmp_path / "prometheus.log"
            wait_for_value(port, "conductor_completed_runs_total", 3, log)
            wait_for_value(port, "conductor_failed_runs_total", 1, log)
            wait_for_value(port, 'conductor_agent_runs_total{agent_type="claude"}', 3, log)
            wait_for_value(port, 'conductor_agent_runs_total{agent_type="codex"}', 1, log)
            wait_for_value(port, "conductor_active_runs_total", 1, log)  # r5 still running
            # Prometheus negotiates OpenMetrics, whose canonical bucket bounds are floats.
            bucket = 'conductor_run_duration_seconds_bucket{agent="claude",status="completed"'
            wait_for_value(port, bucket + ',le="15.0"}', 2, log)
            wait_for_value(port, bucket + ',le="5.0"}', 0, log)
            # A value that changes while Prometheus scrapes shows up too.
            server.post_events([run_finished("r5", "claude", "completed")])
            wait_for_value(port, "conductor_completed_runs_total", 4, log)
            [up] = query(port, 'up{job="tally"}')
            assert up["value"][1] == "1"
        # tally counted Prometheus' scrapes among its own requests, on top of this test's.
        own = server.responses[("GET", "200")]
        assert api_requests(server.metrics())[("GET", "200")] > own


def query_exemplars(port: int, promql: str) -> list[dict[str, Any]]:
    """``/api/v1/query_exemplars`` over the last and next hour (empty while none are stored)."""
    now = time.time()
    params = {"query": promql, "start": str(now - 3600), "end": str(now + 3600)}
    try:
        reply = http_request(
            port, "GET", "/api/v1/query_exemplars?" + urllib.parse.urlencode(params)
        )
    except OSError:
        return []
    if reply.status != 200:
        return []
    doc = json.loads(reply.body)
    assert doc["status"] == "success", doc
    return [
        {**exemplar, "series": series["seriesLabels"]}
        for series in doc["data"]
        for exemplar in series["exemplars"]
    ]


def wait_for_exemplars(port: int, promql: str, log: Path, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = query_exemplars(port, promql)
        if found:
            return found
        time.sleep(0.25)
    text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise AssertionError(f"no exemplars for {promql}\n{text}")


def test_prometheus_stores_exemplars_that_point_into_the_log(
    data_dir: Path, tmp_path: Path
) -> None:
    """With exemplar storage on, Prometheus (asking for OpenMetrics, as it does by default)
    keeps each bucket's exemplar: the run or loop, the observed value, and the event's
    position as POST answered it and `tally emit` printed it."""
    with tally_server(data_dir) as server:
        server.post_events([run_started("run-7", "claude")])
        run_at = server.post_events(
            [{**run_finished("run-7", "claude", "completed"), "duration_s": 4.2}]
        )["last_offset"]
        emitted = tally(
            data_dir,
            "emit",
            "iteration_completed",
            "loop_id=loop-9",
            "iteration=3",
            "duration_s=0.3",
            "success=true",
        )
        loop_at = int(emitted.stdout.split()[-1])
        server.wait_folded(max(run_at, loop_at) + 1)

        with prometheus(tmp_path, server.port, "--enable-feature=exemplar-storage") as port:
            log = tmp_path / "prometheus.log"
            [run] = wait_for_exemplars(port, "conductor_run_duration_seconds_bucket", log)
            assert run["series"]["le"] == "5.0"
            assert run["labels"] == {"run_id": "run-7", "offset": str(run_at)}
            assert float(run["value"]) == 4.2
            [loop] = wait_for_exemplars(port, "ralph_loop_iteration_duration_seconds_bucket", log)
            assert (loop["series"]["loop"], loop["series"]["le"]) == ("loop-9", "0.5")
            assert loop["labels"] == {"loop_id": "loop-9", "offset": str(loop_at)}
            assert float(loop["value"]) == 0.3
        doc = json.loads(server.get("/api/v1/metrics?format=json").body)
    # the exemplar's timestamp is its event's ts (Prometheus keeps whole milliseconds)
    held = {
        f["name"]: s["exemplars"] for f in doc["families"] for s in f["series"] if "exemplars" in s
    }
    run_ts = held["conductor_run_duration_seconds"]["5"]["ts"]
    loop_ts = held["ralph_loop_iteration_duration_seconds"]["0.5"]["ts"]
    assert abs(float(run["timestamp"]) - run_ts) < 0.001
    assert abs(float(loop["timestamp"]) - loop_ts) < 0.001
