"""mtail's peer program (benchmarks/mtail/tally.mtail) agrees with `tally replay` on the same log.

Both read one real bus segment written by tally's writer: mtail in one-shot mode, tally
through its command line. Counters and histogram buckets must agree exactly; float sums
and gauges to 1e-12 (the same IEEE operations in the same order, but not promised so).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_mtail import PROGRAM_DIR, compile_program, run_mtail, single_log_file
from bus.events import (
    ContextReboot,
    Event,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    RunFinished,
    RunQueued,
    RunStarted,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from bus.writer import BusConfig, BusWriter
from tests.support.workload import write_log

MTAIL_PRESENT = Path("/usr/bin/mtail").exists() or shutil.which("mtail") is not None
pytestmark = pytest.mark.skipif(
    not MTAIL_PRESENT,
    reason="mtail is not installed (/usr/bin/mtail absent; CI installs Debian's mtail package)",
)

#: Counters that must be equal series by series (the issue's core families first).
EXACT_COUNTERS = (
    "conductor_messagebus_appends_total",
    "conductor_completed_runs_total",
    "conductor_failed_runs_total",
    "conductor_api_requests_total",
    "ralph_loop_iterations_total",
    "conductor_agent_runs_total",
    "conductor_agent_fallbacks_total",
    "ralph_loop_iterations_with_progress_total",
    "ralph_loop_files_changed_total",
    "ralph_loop_sessions_created_total",
    "ralph_loop_context_reboots_total",
    "tally_events_folded_total",
    "app_jobs_total",
)
HISTOGRAMS = (
    "conductor_run_duration_seconds",
    "ralph_loop_iteration_duration_seconds",
    "ralph_loop_session_duration_seconds",
    "ralph_loop_context_at_reboot_ratio",
)
GAUGES = (
    "conductor_active_runs_total",
    "conductor_queued_runs_total",
    "ralph_loop_active_loops",
    "ralph_loop_active_sessions",
    "ralph_loop_no_progress_streak",
    "ralph_loop_progress_score",
    "ralph_loop_progress_velocity",
    "ralph_loop_context_usage_ratio",
    "ralph_loop_tests",
    "ralph_loop_flaky_tests",
    "ralph_loop_test_pass_ratio",
    "ralph_loop_test_failure_streak",
    "ralph_loop_resident_memory_bytes",
    "ralph_loop_cpu_usage_ratio",
    "app_queue_depth",
)
#: Event types the seeded workload never writes: tally counts them at 0, mtail not at all.
NOT_IN_WORKLOAD = ("otel_metric", "otel_log")
#: In the program, but not equal by design: metrics_reset clears app_batch_* in tally only.
RESET_BY_TALLY_ONLY = ("app_batch_items_total", "app_batch_latency_seconds")

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> dict[str, Series]:
    """Samples by metric name (histograms under their base name), from Prometheus text."""
    out: dict[str, Series] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            base = s.name
            for suffix in ("_bucket", "_sum", "_count"):
                if family.type == "histogram" and s.name.endswith(suffix):
                    base = s.name.removesuffix(suffix)
            out[base][(s.name, tuple(sorted(s.labels.items())))] = s.value
    return dict(out)


def tally_replay(data_dir: Path) -> dict[str, Series]:
    proc = subprocess.run(
        [sys.executable, "-m", "server", "replay", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return parse(proc.stdout)


def mtail_replay(data_dir: Path, scratch: Path) -> dict[str, Series]:
    log, _ = single_log_file(data_dir, scratch)
    return parse(run_mtail(log).decode())


def assert_same(tally: dict[str, Series], mtail: dict[str, Series], name: str) -> None:
    assert name in tally, f"{name} not in tally's output"
    assert name in mtail, f"{name} not in mtail's output"
    assert mtail[name].keys() == tally[name].keys(), name
    for key, value in tally[name].items():
        if key[0].endswith("_sum") or name in GAUGES:
            assert mtail[name][key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        else:
            assert mtail[name][key] == value, key


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Series], dict[str, Series]]:
    """tally's and mtail's metrics for ``mixed_events(5000, seed=42)``."""
    root = tmp_path_factory.mktemp("mtail-peer")
    data_dir = root / "data"
    write_log(data_dir, 5_000, seed=42)
    return tally_replay(data_dir), mtail_replay(data_dir, root)


def test_program_compiles() -> None:
    assert (PROGRAM_DIR / "tally.mtail").is_file()
    compile_program()


@pytest.mark.parametrize("name", EXACT_COUNTERS)
def test_counters_agree_exactly(
    seeded: tuple[dict[str, Series], dict[str, Series]], name: str
) -> None:
    tally, mtail = seeded
    if name == "tally_events_folded_total":  # tally lists every type, mtail those it saw:
        absent = {("type", t) for t in NOT_IN_WORKLOAD}  # the OTLP types, which the
        tally = {  # seeded workload never writes (the receiver writes them)
            **tally,
            name: {k: v for k, v in tally[name].items() if not (set(k[1]) & absent)},
        }
    assert_same(tally, mtail, name)


def test_core_counters_have_the_expected_shape(
    seeded: tuple[dict[str, Series], dict[str, Series]],
) -> None:
    """The comparison is not vacuous: every method/status and loop/result series is there."""
    tally, mtail = seeded
    api = mtail["conductor_api_requests_total"]
    assert {dict(labels)["method"] for _, labels in api} == {"GET", "POST", "DELETE"}
    assert len(api) >= 12
    loops = {
        tuple(sorted(dict(labels).items())) for _, labels in mtail["ralph_loop_iterations_total"]
    }
    assert len(loops) == 6  # 3 loops x (success, failure)
    assert (
        mtail["conductor_messagebus_appends_total"][("conductor_messagebus_appends_total", ())] > 0
    )
    assert tally["conductor_failed_runs_total"][("conductor_failed_runs_total", ())] > 0


@pytest.mark.parametrize("name", HISTOGRAMS)
def test_histograms_agree(seeded: tuple[dict[str, Series], dict[str, Series]], name: str) -> None:
    tally, mtail = seeded
    assert_same(tally, mtail, name)


@pytest.mark.parametrize("name", GAUGES)
def test_gauges_agree(seeded: tuple[dict[str, Series], dict[str, Series]], name: str) -> None:
    tally, mtail = seeded
    assert_same(tally, mtail, name)


def test_every_family_of_the_program_is_compared(
    seeded: tuple[dict[str, Series], dict[str, Series]],
) -> None:
    _, mtail = seeded
    compared = {*EXACT_COUNTERS, *HISTOGRAMS, *GAUGES, *RESET_BY_TALLY_ONLY}
    assert set(mtail) <= compared


def test_resets_are_beyond_mtail(seeded: tuple[dict[str, Series], dict[str, Series]]) -> None:
    """metrics_reset(app_batch_) every 2,000 events: tally clears, mtail keeps counting."""
    tally, mtail = seeded
    name = "app_batch_items_total"
    assert sum(mtail[name].values()) > sum(tally[name].values()) > 0


def write_events(data_dir: Path, events: list[Event]) -> None:
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        writer.append(events)


def test_edge_cases_agree(tmp_path: Path) -> None:
    """Missing durations, empty agents, finishes without starts, tests with total 0."""
    t = 1_700_000_000.0
    events: list[Event] = [
        RunQueued(ts=t + 1, run_id="r1", project="p", agent="claude"),
        RunQueued(ts=t + 2, run_id="r1", project="p", agent="claude"),  # queued twice
        RunStarted(ts=t + 3, run_id="r1", project="p", agent="claude"),
        RunStarted(ts=t + 4, run_id="r2", project="p"),  # empty agent: "unknown"
        RunFinished(ts=t + 40.5, run_id="r1", project="p", agent="claude", status="completed"),
        RunFinished(ts=t + 50, run_id="r2", project="p", status="failed", exit_code=2),
        RunFinished(ts=t + 60, run_id="r3", project="p", agent="codex"),  # never started
        RunQueued(ts=t + 61, run_id="r4", project="p"),
        RunFinished(ts=t + 62, run_id="r4", project="p", duration_s=7.0),  # queued, finished
        RunStarted(ts=t + 63, run_id="r5", project="p", agent="gemini"),  # still active
        LoopStopped(ts=t + 64, loop_id="l0"),  # never started
        LoopStarted(ts=t + 65, loop_id="l1"),
        LoopStarted(ts=t + 66, loop_id="l1"),
        SessionStarted(ts=t + 70, loop_id="l1", session_id="s1"),
        SessionStarted(ts=t + 71, loop_id="l1", session_id="s2"),
        SessionEnded(ts=t + 700, loop_id="l1", session_id="s1"),  # duration from its start
        SessionEnded(ts=t + 701, loop_id="l1", session_id="s9"),  # never started
        IterationCompleted(ts=t + 80, loop_id="l1", iteration=1, duration_s=5.0, success=True),
        IterationCompleted(
            ts=t + 81,
            loop_id="l1",
            iteration=2,
            duration_s=0.25,
            success=False,
            made_progress=True,
            progress_score=0.5,
            files_changed=3,
        ),
        TestsReported(ts=t + 90, loop_id="l1", passed=9, failed=1, total=10),
        TestsReported(ts=t + 91, loop_id="l1", passed=0, failed=0, total=0),  # no pass ratio
        ContextReboot(ts=t + 92, loop_id="l1", percent=85.0),
        LoopStopped(ts=t + 93, loop_id="l1"),
    ]
    data_dir = tmp_path / "data"
    write_events(data_dir, events)
    tally = tally_replay(data_dir)
    mtail = mtail_replay(data_dir, tmp_path)
    # tally lists every event type, 0 included; mtail has no way to declare series up front.
    folded = tally["tally_events_folded_total"]
    tally["tally_events_folded_total"] = {k: v for k, v in folded.items() if v}
    for name in (*EXACT_COUNTERS, *HISTOGRAMS, *GAUGES):
        if name in tally or name in mtail:
            assert_same(tally, mtail, name)
    assert "ralph_loop_test_pass_ratio" not in mtail or not mtail["ralph_loop_test_pass_ratio"]
