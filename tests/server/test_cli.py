"""The `tally` command line, run as real subprocesses on real data directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus.segments import bus_dir, list_segments


def tally(
    data_dir: Path, *args: str, stdin: bytes | None = None, check: bool = False
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TALLY_DATA_DIR": str(data_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "server", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tally {args} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


def bus_bytes(data_dir: Path) -> dict[str, bytes]:
    if not bus_dir(data_dir).exists():
        return {}
    return {seg.path.name: seg.path.read_bytes() for seg in list_segments(bus_dir(data_dir))}


def check_json(data_dir: Path) -> dict[str, object]:
    proc = tally(data_dir, "check", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def test_emit_pairs_prints_offsets_and_check_counts(data_dir: Path) -> None:
    first = tally(data_dir, "emit", "run_started", "run_id=123", "project=web", check=True)
    second = tally(
        data_dir, "emit", "api_request", "method=GET", "status=200", "duration_s=0.2", check=True
    )
    assert first.stdout == b"0\n"
    offset = int(second.stdout)
    assert offset > 0
    tail = tally(data_dir, "tail", check=True)
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [r["offset"] for r in records] == [0, offset]
    assert records[0]["run_id"] == "123"  # a string field keeps what was typed
    assert records[1]["status"] == 200
    assert isinstance(records[0]["ts"], float)
    report = check_json(data_dir)
    assert report["events"] == 2
    assert report["events_by_type"] == {"api_request": 1, "run_started": 1}
    assert report["corrupt_lines"] == 0


def test_emit_json_and_stdin(data_dir: Path) -> None:
    tally(
        data_dir,
        "emit",
        "--json",
        '[{"type":"loop_started","loop_id":"a"},{"type":"loop_stopped","loop_id":"a"}]',
        check=True,
    )
    lines = b'{"type":"bus_message","project":"p","msg_type":"FACT"}\n' * 3
    proc = tally(data_dir, "emit", "-", stdin=lines, check=True)
    assert len(proc.stdout.splitlines()) == 3
    assert check_json(data_dir)["events"] == 5


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (["emit", "api_request", "method=GET", "status=abc"], None, b"field 'status'"),
        (["emit", "run_started", "project=p"], None, b"field 'run_id'"),
        (["emit", "no_such_type"], None, b"unknown event type"),
        (
            ["emit", "--json", '{"type":"context_usage","loop_id":"l","percent":140}'],
            None,
            b"percent",
        ),
        (
            ["emit", "-"],
            b'{"type":"loop_started","loop_id":"a"}\n{"type":"loop_started","loop_id":"b"}\n'
            b'{"type":"loop_started"}\n',
            b"line 3, field 'loop_id'",
        ),
        (["emit", "-"], b'{"type":"loop_started","loop_id":"a"}\n{not json\n', b"line 2"),
    ],
)
def test_bad_emit_exits_2_and_leaves_bus_identical(
    data_dir: Path, args: list[str], stdin: bytes | None, needle: bytes
) -> None:
    tally(data_dir, "emit", "loop_started", "loop_id=seed", check=True)
    before = bus_bytes(data_dir)
    proc = tally(data_dir, *args, stdin=stdin)
    assert proc.returncode == 2
    assert needle in proc.stderr, proc.stderr
    assert b"nothing was appended" in proc.stderr
    assert bus_bytes(data_dir) == before


def _run_emitters(data_dir: Path, writers: int, batches: int, per_batch: int, torn: bool) -> None:
    """Each writer process runs one `tally emit -` process per batch of JSONL."""
    script = Path(__file__).parents[1] / "support" / "emitter.py"
    env = {**os.environ, "TALLY_DATA_DIR": str(data_dir)}
    args = [str(batches), str(per_batch), str(int(torn))]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(w), *args], env=env)
        for w in range(writers)
    ]
    for proc in procs:
        assert proc.wait(timeout=600) == 0


def _assert_every_writer_in_order(data_dir: Path, writers: int, per_writer: int) -> None:
    tail = tally(data_dir, "tail", check=True)
    seen: dict[str, list[int]] = {}
    for line in tail.stdout.splitlines():
        record = json.loads(line)
        seen.setdefault(record["project"], []).append(int(record["msg_id"]))
    assert sorted(seen) == [f"w{w}" for w in range(writers)]
    for ids in seen.values():
        assert ids == list(range(per_writer))


@pytest.mark.parametrize("torn", [False, True], ids=["clean", "torn-line-between-batches"])
def test_eight_concurrent_emitters(data_dir: Path, torn: bool) -> None:
    # The figure is 8 x 20,000 in batches of 1,000; the same shape at a
    # tenth of the size keeps the suite fast (benchmarks run the full size).
    writers, batches, per_batch = 8, 4, 500
    _run_emitters(data_dir, writers, batches, per_batch, torn)
    report = check_json(data_dir)
    assert report["events"] == writers * batches * per_batch
    assert report["corrupt_lines"] == (1 if torn else 0)
    assert report["torn_tail"] is False
    _assert_every_writer_in_order(data_dir, writers, batches * per_batch)
    quarantine = (data_dir / "quarantine.jsonl").read_bytes().splitlines() if torn else []
    assert len(quarantine) == (1 if torn else 0)


def test_schema_is_json_schema_of_every_type(data_dir: Path) -> None:
    proc = tally(data_dir, "schema", check=True)
    schema = json.loads(proc.stdout)
    text = json.dumps(schema)
    for tag in ("run_queued", "iteration_completed", "metric", "metrics_reset"):
        assert f'"{tag}"' in text


def test_check_reports_torn_tail_and_exit_1_on_corrupt(data_dir: Path) -> None:
    tally(data_dir, "emit", "loop_started", "loop_id=a", check=True)
    segment = list_segments(bus_dir(data_dir))[-1].path
    with segment.open("ab") as fh:
        fh.write(b"garbage that is not json\n")
        fh.write(b'{"type":"loop_started","loo')
    proc = tally(data_dir, "check", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["corrupt_lines"] == 1
    assert report["torn_tail"] is True
    assert report["events"] == 1


def test_replay_bad_step_is_a_usage_error(data_dir: Path) -> None:
    tally(data_dir, "emit", "loop_started", "loop_id=a", check=True)
    proc = tally(data_dir, "replay", "--step", "5x")
    assert proc.returncode == 2
    assert b"--step" in proc.stderr


def test_replay_prints_folded_metrics(data_dir: Path) -> None:
    tally(data_dir, "emit", "run_started", "run_id=r1", "project=p", "agent=claude", check=True)
    tally(data_dir, "emit", "run_finished", "run_id=r1", "project=p", "status=failed", check=True)
    text = tally(data_dir, "replay", check=True).stdout.decode()
    assert "conductor_failed_runs_total 1\n" in text
    assert "conductor_active_runs_total 0\n" in text
    assert 'conductor_agent_runs_total{agent_type="claude"} 1\n' in text
    om = tally(data_dir, "replay", "--format", "openmetrics", check=True).stdout
    assert om.endswith(b"# EOF\n")
