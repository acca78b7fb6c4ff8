"""Replay on two cores (a forked child folds half the event types): the same bytes as one pass."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bus.quarantine import Quarantine
from bus.writer import BusConfig, BusWriter
from projections.config import ProjectionConfig
from projections.rules import Rule
from server.parallel import MIN_PARALLEL_BYTES, replay_parallel
from server.replay import replay
from tests.support.families import rendered
from tests.support.workload import mixed_events

CONFIG = ProjectionConfig()


def write(data_dir: Path, n: int, seed: int = 42) -> None:
    events = list(mixed_events(n, seed=seed))
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        for i in range(0, n, 1000):
            writer.append(events[i : i + 1000])


def test_two_parts_render_what_one_pass_renders(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(data_dir, 20_000)
    with caplog.at_level(logging.DEBUG, logger="tally.replay"):
        two = replay_parallel(data_dir, config=CONFIG, min_bytes=0)
    assert "in two parts" in caplog.text  # the forked path ran, not the fallback
    one = replay(data_dir, config=CONFIG)
    for fmt in ("prometheus", "openmetrics", "json", "statsd"):
        assert rendered(two, fmt) == rendered(one, fmt)
    assert two.events_by_type == one.events_by_type and two.offset == one.offset


def test_as_of_an_offset_and_a_time(data_dir: Path) -> None:
    write(data_dir, 8000, seed=5)
    for kwargs in ({"until_offset": 500_000}, {"until_ts": 1_700_000_040.0}):
        two = replay_parallel(data_dir, config=CONFIG, min_bytes=0, **kwargs)  # type: ignore[arg-type]
        one = replay(data_dir, config=CONFIG, **kwargs)  # type: ignore[arg-type]
        assert rendered(two, "json") == rendered(one, "json")


def test_a_corrupt_line_falls_back_to_one_pass(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(data_dir, 3000)
    bad = b'{"type":"session_ended","loop_id":"ralph-a","session_id":"x","duration_s":-1}\n'
    with open(next((data_dir / "bus").glob("*.jsonl")), "ab") as f:
        f.write(bad)
    write(data_dir, 1000, seed=7)
    with caplog.at_level(logging.DEBUG, logger="tally.replay"):
        two = replay_parallel(data_dir, config=CONFIG, min_bytes=0)
    assert "in two parts" not in caplog.text
    assert two.corrupt_lines == 1
    assert [entry.raw for entry in Quarantine(data_dir).entries()] == [bad.rstrip(b"\n").decode()]
    one = replay(data_dir, config=CONFIG)
    assert rendered(two, "prometheus") == rendered(one, "prometheus")


def test_cli_jobs_1_and_2_print_the_same(data_dir: Path) -> None:
    write(data_dir, 70_000)  # past MIN_PARALLEL_BYTES, so --jobs 2 forks
    assert sum(p.stat().st_size for p in (data_dir / "bus").glob("*.jsonl")) > MIN_PARALLEL_BYTES
    outputs = [
        subprocess.run(
            [sys.executable, "-m", "server", "replay", "--data-dir", str(data_dir), "--jobs", jobs],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        for jobs in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    assert b"conductor_messagebus_appends_total " in outputs[0]


def test_rules_fold_in_one_pass(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A rule may read events of both halves: its family must see them all, in one fold."""
    write(data_dir, 3000)
    rule = Rule(name="runs", on="run_finished", family="runs_seen_total", kind="counter")
    config = ProjectionConfig(rules=(rule,))
    with caplog.at_level(logging.DEBUG, logger="tally.replay"):
        two = replay_parallel(data_dir, config=config, min_bytes=0)
    assert "in two parts" not in caplog.text
    assert rendered(two, "prometheus") == rendered(replay(data_dir, config=config), "prometheus")
    assert "runs_seen_total " in rendered(two, "prometheus").decode()
