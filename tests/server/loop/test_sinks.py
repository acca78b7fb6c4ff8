"""`tally loop --url`: a remote tally that dies, restarts or loses answers loses no event.

Real `tally serve` subprocesses on ephemeral ports, a real `tally loop` subprocess,
a real TCP proxy for the lost answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import fake_agent
from tests.support.proxy import AnswerLosingProxy
from tests.support.serverproc import TALLY, http_request, samples, tail, tally_server

AGENT = (sys.executable, str(Path(fake_agent.__file__)))
PER_ITERATION = ["session_started", "iteration_completed", "session_ended", "context_reboot"]


def loop_cmd(data_dir: Path, url: str, *args: str) -> list[str]:
    return [*TALLY, "loop", "--data-dir", str(data_dir), "--url", url, *args]


def loop_events(log: list[dict[str, Any]], loop_id: str) -> list[dict[str, Any]]:
    return [e for e in log if e.get("loop_id") == loop_id]


def without_repeats(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as first delivered: a batch sent again after a lost answer is dropped."""
    seen: set[str] = set()
    out = []
    for event in events:
        key = json.dumps({k: v for k, v in event.items() if k != "offset"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


def expected_types(iterations: int) -> list[str]:
    return ["loop_started", *PER_ITERATION * iterations, "loop_stopped"]


def assert_whole_and_in_order(events: list[dict[str, Any]], iterations: int) -> None:
    assert [e["type"] for e in events if e["type"] != "resource_sample"] == expected_types(
        iterations
    )
    completed = [e["iteration"] for e in events if e["type"] == "iteration_completed"]
    assert completed == list(range(1, iterations + 1))
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)  # delivered in the order they were written


def wait_until(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def spooled(spool: Path, event_type: str) -> int:
    try:
        return spool.read_text().count(f'"type":"{event_type}"')
    except FileNotFoundError:
        return 0


def test_a_server_killed_and_restarted_mid_loop_loses_no_event(tmp_path: Path) -> None:
    server_dir, loop_dir = tmp_path / "server", tmp_path / "loop"
    spool = loop_dir / "loop-spool" / "remote.jsonl"
    iterations = 8
    with tally_server(server_dir) as server:
        port = server.port
        url = f"http://127.0.0.1:{port}"
        loop = subprocess.Popen(
            loop_cmd(loop_dir, url, "--loop-id", "remote", "--max-iterations", str(iterations),
                     "--sample-every", "0.1", "--", *AGENT, "--step", "0.3"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_until(
                lambda: sum(e["type"] == "iteration_completed" for e in tail(server_dir)) >= 2,
                "two iterations delivered",
            )
            server.kill()
            # the loop goes on: two more iterations wait in the spool
            wait_until(lambda: spooled(spool, "iteration_completed") >= 2, "spooled iterations")
            with tally_server(server_dir, "--port", str(port)) as restarted:
                _, err = loop.communicate(timeout=120)
                assert loop.returncode == 0, err.decode()
                restarted.wait_caught_up()
                metrics = samples(restarted.metrics())
        finally:
            if loop.poll() is None:
                loop.kill()
                loop.wait()
    stderr = err.decode()
    assert stderr.count(f"tally loop: {url}: unreachable, spooling ") == 1, stderr
    assert f"tally loop: {url}: reachable again" in stderr
    assert "left in" not in stderr  # everything was delivered before exit
    events = loop_events(tail(server_dir), "remote")
    assert_whole_and_in_order(without_repeats(events), iterations)
    assert metrics['ralph_loop_iterations_total{loop="remote",result="success"}'] == iterations
    assert metrics['ralph_loop_sessions_created_total{loop="remote"}'] == iterations
    assert metrics['ralph_loop_context_reboots_total{loop="remote"}'] == iterations
    assert 'ralph_loop_resident_memory_bytes{loop="remote"}' in metrics
    assert spool.read_bytes() == b""


def test_a_server_away_all_along_gets_the_spool_from_the_next_loop(tmp_path: Path) -> None:
    server_dir, loop_dir = tmp_path / "server", tmp_path / "loop"
    with tally_server(server_dir) as server:
        port = server.port
    url = f"http://127.0.0.1:{port}"  # nobody listens here now
    first = subprocess.run(
        loop_cmd(loop_dir, url, "--loop-id", "away", "--max-iterations", "2",
                 "--flush-timeout", "0.5", "--", "true"),
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr.decode()
    stderr = first.stderr.decode()
    assert stderr.count(f"{url}: unreachable, spooling ") == 1, stderr
    assert f"{url}: 10 events left in " in stderr  # 1 + 4 per iteration x 2 + 1
    with tally_server(server_dir, "--port", str(port)) as server:
        second = subprocess.run(
            loop_cmd(loop_dir, url, "--loop-id", "away", "--max-iterations", "1", "--", "true"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 0, second.stderr.decode()
        server.wait_caught_up()
    events = loop_events(tail(server_dir), "away")
    types = [e["type"] for e in events]
    assert types == expected_types(2) + expected_types(1)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def _honours_idempotency_key(port: int) -> bool:
    """Whether the server appends a batch posted twice with one key once."""
    body = b'{"type":"metric","name":"idempotency_probe","kind":"counter","value":1}\n'
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "probe-key-1"}
    for _ in range(2):
        reply = http_request(port, "POST", "/api/v1/events", body=body, headers=headers)
        assert reply.status == 200, reply.body
    text = http_request(port, "GET", "/metrics").body.decode()
    return samples(text).get("idempotency_probe_total", samples(text).get("idempotency_probe")) == 1


def test_a_lost_answer_is_sent_again_and_counted_once(tmp_path: Path) -> None:
    """The spool resends a batch whose answer was lost, with the same Idempotency-Key.

    Correct for a server that honours the key; until tally serve does, the batch is
    appended twice and this test is an expected failure.
    """
    server_dir, loop_dir = tmp_path / "server", tmp_path / "loop"
    iterations = 3
    with tally_server(server_dir) as server:
        # lose the answer to the first end-of-iteration batch
        with AnswerLosingProxy(
            server.port, lose=lambda body: b"iteration_completed" in body and not proxy.lost
        ) as proxy:
            run = subprocess.run(
                loop_cmd(loop_dir, f"http://127.0.0.1:{proxy.port}", "--loop-id", "lossy",
                         "--max-iterations", str(iterations), "--", "true"),
                capture_output=True,
                timeout=60,
                check=False,
            )  # fmt: skip
        assert run.returncode == 0, run.stderr.decode()
        assert len(proxy.lost) == 1
        server.wait_caught_up()
        metrics = samples(server.metrics())
        honoured = _honours_idempotency_key(server.port)
    events = loop_events(tail(server_dir), "lossy")
    assert_whole_and_in_order(without_repeats(events), iterations)  # nothing lost
    completed = metrics['ralph_loop_iterations_total{loop="lossy",result="success"}']
    if not honoured and completed == iterations + 1:
        pytest.xfail("tally serve ignores Idempotency-Key on this branch: the resent batch counted")
    assert completed == iterations
    assert [e["type"] for e in events if e["type"] != "resource_sample"] == expected_types(
        iterations
    )
