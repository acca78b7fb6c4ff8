"""`tally loop -- CMD` end to end: a real fake agent, real git, real subprocesses.

The fake agent (tests/support/fake_agent.py) does what its PLAN says on each run;
the metrics tally rebuilds from the log must be what it did.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import fake_agent
from tests.support.buses import bus_url
from tests.support.serverproc import TALLY, samples, tail, tally

__all__ = ["bus_url"]  # the fixture, used by name

AGENT = (sys.executable, str(Path(fake_agent.__file__)))
LOOP = 'loop="demo"'
MIB = 1 << 20


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return proc.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "agent@example.com")
    git(path, "config", "user.name", "agent")
    for name in ("b.txt", "c.txt"):
        (path / name).write_text("initial\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def run_loop(
    data_dir: Path, *args: str, stdin: bytes = b"", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*TALLY, "loop", "--data-dir", str(data_dir), *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def replay_json(data_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(tally(data_dir, "replay", "--format", "json").stdout)
    return doc


def test_a_loop_of_a_real_agent_yields_every_family_with_what_it_did(
    data_dir: Path, repo: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    report = tmp_path / "report.xml"
    proc = run_loop(
        data_dir,
        "--loop-id", "demo",
        "--max-iterations", "5",
        "--repo", str(repo),
        "--junit", str(report),
        "--progress-cmd", f"cat {state / 'score'}",
        "--sample-every", "0.1",
        "--context-from", "claude-json",
        "--", *AGENT, str(state), str(repo), str(report),
        stdin=b"the prompt\n",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    # the agent's streams are its own: stdin reached it, stdout and stderr came through
    assert (state / "stdin-1").read_bytes() == b"the prompt\n"
    expected_stdout = "".join(
        fake_agent.claude_output(n, str(plan["claude"]))
        for n, plan in fake_agent.PLAN.items()
        if "claude" in plan
    )
    assert proc.stdout.decode() == expected_stdout
    stderr = proc.stderr.decode()
    for n in fake_agent.PLAN:
        assert f"agent stderr {n}\n" in stderr

    events = tail(data_dir)
    types = [e["type"] for e in events]
    assert types[0] == "loop_started" and types[-1] == "loop_stopped"
    assert events[-1]["reason"] == "max_iterations"
    completed = [e for e in events if e["type"] == "iteration_completed"]
    assert [e["iteration"] for e in completed] == [1, 2, 3, 4, 5]
    assert [e["success"] for e in completed] == [True, False, True, True, True]
    assert [e["files_changed"] for e in completed] == [1, 0, 2, 0, 1]
    assert [e["made_progress"] for e in completed] == [True, False, True, False, True]
    assert [e["progress_score"] for e in completed] == [10.0, 20.0, 30.0, 40.0, 50.0]
    reports = [e for e in events if e["type"] == "tests_reported"]  # run 4 wrote none
    assert [(r["passed"], r["failed"], r["total"], r["flaky"]) for r in reports] == [
        (1, 2, 3, 0),
        (2, 1, 3, 0),
        (3, 0, 3, 0),
        (3, 1, 4, 1),
    ]
    percents = [e["percent"] for e in events if e["type"] == "context_usage"]
    assert percents == pytest.approx([17.0, 22.0, 27.0, 37.0])  # runs 1, 2, 3, 5
    reboots = [e["percent"] for e in events if e["type"] == "context_reboot"]
    assert reboots == pytest.approx([17.0, 22.0, 27.0, 27.0, 37.0])  # run 4: the last known
    resource = [e for e in events if e["type"] == "resource_sample"]
    peak = max(e["rss_bytes"] for e in resource)
    assert 50 * MIB <= peak <= 50 * MIB + 80 * MIB  # run 2 held 50 MiB
    assert any(e["cpu_percent"] > 0 for e in resource)  # run 1 burned half a second

    metrics = samples(tally(data_dir, "replay").stdout.decode())
    assert metrics[f'ralph_loop_iterations_total{{{LOOP},result="success"}}'] == 4
    assert metrics[f'ralph_loop_iterations_total{{{LOOP},result="failure"}}'] == 1
    assert metrics[f"ralph_loop_iterations_with_progress_total{{{LOOP}}}"] == 3
    assert metrics[f"ralph_loop_no_progress_streak{{{LOOP}}}"] == 0
    assert metrics[f"ralph_loop_files_changed_total{{{LOOP}}}"] == 4
    assert metrics[f"ralph_loop_progress_score{{{LOOP}}}"] == 50
    assert metrics[f"ralph_loop_progress_velocity{{{LOOP}}}"] == 30
    assert metrics[f"ralph_loop_sessions_created_total{{{LOOP}}}"] == 5
    assert metrics[f"ralph_loop_active_sessions{{{LOOP}}}"] == 0
    assert metrics[f"ralph_loop_context_reboots_total{{{LOOP}}}"] == 5
    assert metrics[f"ralph_loop_context_usage_ratio{{{LOOP}}}"] == pytest.approx(0.37)
    assert metrics[f"ralph_loop_context_at_reboot_ratio_count{{{LOOP}}}"] == 5
    assert metrics[f'ralph_loop_tests{{{LOOP},state="passing"}}'] == 3
    assert metrics[f'ralph_loop_tests{{{LOOP},state="failing"}}'] == 1
    assert metrics[f"ralph_loop_test_pass_ratio{{{LOOP}}}"] == 0.75
    assert metrics[f"ralph_loop_test_failure_streak{{{LOOP}}}"] == 1
    assert metrics[f"ralph_loop_flaky_tests{{{LOOP}}}"] == 1
    assert metrics[f"ralph_loop_resident_memory_bytes{{{LOOP}}}"] == resource[-1]["rss_bytes"]
    assert metrics[f"ralph_loop_cpu_usage_ratio{{{LOOP}}}"] == pytest.approx(
        resource[-1]["cpu_percent"] / 100
    )
    assert metrics[f"ralph_loop_iteration_duration_seconds_count{{{LOOP}}}"] == 5
    assert metrics["ralph_loop_active_loops"] == 0

    rollup = replay_json(data_dir)["loops"]["demo"]
    assert rollup["total_iterations"] == 5
    assert rollup["failed_iterations"] == 1
    assert rollup["total_reboots"] == 5
    assert rollup["context_usage_percent"] == pytest.approx(37.0)
    assert rollup["tests"]["pass_rate"] == 0.75
    assert rollup["progress"]["files_changed"] == 4
    assert rollup["progress"]["velocity"] == 30
    assert rollup["session"]["sessions_created"] == 5
    assert rollup["session"]["avg_context_at_reboot"] == pytest.approx(26.0)


def _wait_for(data_dir: Path, event_type: str, count: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    needle = f'"type":"{event_type}"'.encode()
    while time.monotonic() < deadline:
        bus = data_dir / "bus"
        if bus.is_dir() and sum(p.read_bytes().count(needle) for p in bus.glob("*.jsonl")) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {event_type} event within {timeout} s")


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_a_signal_stops_the_agent_and_the_loop_cleanly(
    data_dir: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    proc = subprocess.Popen(
        [*TALLY, "loop", "--data-dir", str(data_dir), "--loop-id", "sig", "--",
         *AGENT, "--sleep"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(data_dir, "session_started")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err.decode()
    events = tail(data_dir)
    assert [e["type"] for e in events] == [
        "loop_started",
        "session_started",
        "iteration_completed",
        "session_ended",
        "context_reboot",
        "loop_stopped",
    ]
    assert events[-1]["reason"] == f"signal:{sig.name}"
    assert events[2]["success"] is False  # the agent died of the forwarded signal


@pytest.mark.parametrize(
    ("args", "reason", "iterations"),
    [
        (("--until-success", "2"), "until_success", 2),
        (("--max-failures", "3", "--success-cmd", "exit 1"), "max_failures", 3),
    ],
    ids=["until-success", "max-failures"],
)
def test_stop_conditions(
    data_dir: Path, args: tuple[str, ...], reason: str, iterations: int
) -> None:
    proc = run_loop(data_dir, "--loop-id", "stops", *args, "--", "true")
    assert proc.returncode == 0, proc.stderr.decode()
    events = tail(data_dir)
    assert events[-1] == {**events[-1], "type": "loop_stopped", "reason": reason}
    assert sum(e["type"] == "iteration_completed" for e in events) == iterations


def test_a_stop_file_stops_before_the_next_iteration(data_dir: Path, tmp_path: Path) -> None:
    stop = tmp_path / "STOP"
    proc = run_loop(data_dir, "--stop-file", str(stop), "--loop-id", "sf", "--", "touch", str(stop))
    assert proc.returncode == 0, proc.stderr.decode()
    events = tail(data_dir)
    assert sum(e["type"] == "iteration_completed" for e in events) == 1
    assert events[-1]["reason"] == "stop_file"


def test_the_exit_status_is_the_last_run_s_and_a_missing_command_is_127(
    data_dir: Path,
) -> None:
    proc = run_loop(data_dir, "--max-iterations", "2", "--", "sh", "-c", "exit 7")
    assert proc.returncode == 7
    missing = run_loop(data_dir, "--", "no-such-command-for-tally")
    assert missing.returncode == 127
    assert b"no-such-command-for-tally: command not found" in missing.stderr


def test_bad_options_exit_2_naming_them(data_dir: Path, tmp_path: Path) -> None:
    cases = [
        ((), "give the command to run"),
        (("--token-file", "x", "--", "true"), "--token-file needs --url"),
        (("--junit", "r.xml", "--tests-cmd", "x", "--", "true"), "not both"),
        (("--url", "ftp://x", "--", "true"), "--url"),
        (("--repo", str(tmp_path), "--", "true"), "--repo"),
        (("--max-iterations", "0", "--", "true"), "--max-iterations"),
    ]
    for args, message in cases:
        proc = run_loop(data_dir, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr.decode(), (args, proc.stderr)
        assert b"tally loop: " in proc.stderr


def test_tests_cmd_json_and_an_unreadable_report_is_skipped(data_dir: Path) -> None:
    script = (
        'if [ "$TALLY_ITERATION" = 1 ]; then echo \'{"passed": 4, "failed": 1, "flaky": 2}\';'
        " else echo 'no report here'; fi"
    )
    proc = run_loop(data_dir, "--max-iterations", "2", "--tests-cmd", script, "--", "true")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"--tests-cmd: expected JUnit XML or a JSON object" in proc.stderr
    reports = [e for e in tail(data_dir) if e["type"] == "tests_reported"]
    assert [(r["passed"], r["failed"], r["total"], r["flaky"]) for r in reports] == [(4, 1, 5, 2)]


def test_the_loop_id_defaults_to_the_directory_s_name(data_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "my-project"
    work.mkdir()
    proc = subprocess.run(
        [*TALLY, "loop", "--data-dir", str(data_dir), "--max-iterations", "1", "--", "true"],
        cwd=work,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert {e["loop_id"] for e in tail(data_dir)} == {"my-project"}


def test_in_a_terminal_the_agent_reads_it_and_ctrl_c_reaches_it(data_dir: Path) -> None:
    """As a shell does: the agent's group is the terminal's foreground while it runs."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: tally loop on the pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "server", "loop", "--data-dir",
                 str(data_dir), "--", "sh", "-c", "read x; echo got $x"])  # fmt: skip
    out = b""

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out:
            assert time.monotonic() < deadline, out
            if select.select([fd], [], [], 0.1)[0]:
                out += os.read(fd, 1024)

    try:
        _wait_for(data_dir, "session_started")
        os.write(fd, b"hello\n")
        read_until(b"got hello")
        _wait_for(data_dir, "session_started", 2)  # the second run reads the terminal
        os.write(fd, b"\x03")  # Ctrl-C: SIGINT to the foreground group, the agent's
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130
    events = tail(data_dir)
    assert [e["success"] for e in events if e["type"] == "iteration_completed"] == [True, False]
    assert events[-1]["reason"] == "signal:SIGINT"


def test_the_local_sink_writes_to_the_configured_bus(data_dir: Path, bus_url: str | None) -> None:
    """``tally loop`` appends through the bus contract: to the files, or to a JetStream stream."""
    proc = run_loop(data_dir, "--loop-id", "on-bus", "--max-iterations", "2", "--", "true")
    assert proc.returncode == 0, proc.stderr.decode()
    events = tail(data_dir)
    types = [e["type"] for e in events]
    assert types[0] == "loop_started" and types[-1] == "loop_stopped"
    assert types.count("iteration_completed") == 2
    positions = [e["offset"] for e in events]
    assert positions == sorted(set(positions))
    if bus_url is not None:  # nothing went to the files of the data directory
        assert not (data_dir / "bus").exists()
