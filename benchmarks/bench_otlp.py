"""OTLP benchmarks ("OTLP/HTTP receiver and user rules", item 5).

Run: ``python -m benchmarks.bench_otlp [--quick] [--out FILE]``. Two parts:

- ``ingest``: a real ``tally serve`` on loopback (bench_server's ``running_server``),
  its ``tally.toml`` the default Claude Code rules (``docs/claude-code-rules.toml``).
  Protobuf ``ExportMetricsServiceRequest`` bodies of 1,000 data points each, built
  once with the opentelemetry-proto classes before any timing: 20 metrics of 50
  series each, 10 cumulative monotonic sums (integers), 6 gauges (doubles) and 4
  explicit-bucket histograms (10 bounds), each point with 3 attributes, one resource
  with 3 attributes; each body is the next 10 s of the same series (cumulative values
  grow). They are POSTed to ``/v1/metrics`` over 4 keep-alive connections
  (bench_server's ``post_concurrently``); every answer must be 200 with no rejected
  point. Points acknowledged / wall time, median of the runs after a warm-up
  (``otlp.ingest_points_per_s``), and how fast the projection folded them
  (``otlp.folded_points_per_s``). The same for ``/v1/logs``: bodies of 1,000 log
  records shaped like Claude Code's (``claude_code.api_request`` 60 %,
  ``claude_code.tool_result`` 30 %, ``claude_code.user_prompt`` 10 %), folded by
  the rules (``otlp.log_records_per_s``).
- ``rules``: in process, no I/O: a fresh ``Projection`` (the default rules loaded)
  folds N ``otel_log`` events ``claude_code.api_request`` (attributes as Claude Code
  sends them: strings; the default file maps each to 7 rules: 6 counters and one
  histogram), and the same projection type folds N ``run_finished`` events (a
  catalogue event of comparable shape: two counters and a labelled histogram).
  Also N ``claude_code.tool_result`` (one rule: a counter with two labels read), N
  ``otel_log`` that no rule matches and N ``iteration_completed``. ns per event of
  each, median of R timed folds after a warm-up. ``rules.ratio_to_catalogue``:
  tool_result / run_finished (one rule, target <= 2);
  ``rules.api_request_ratio_to_catalogue``: api_request / run_finished (seven rules);
  ``rules.ns_per_rule``: (api_request - unmatched) / 7, and its ratio to run_finished.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from benchmarks.bench_server import CONNECTIONS, Http, post_concurrently, running_server
from benchmarks.report import finish
from bus.events import Attributes, Event, IterationCompleted, OtelLog, RunFinished
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.rules import Rule

ROOT: Final = Path(__file__).resolve().parents[1]
RULES_FILE: Final = ROOT / "docs" / "claude-code-rules.toml"
DEFAULT_OUT: Final = Path(__file__).with_name("results-otlp.json")
POINTS: Final = 1_000  # data points (log records) per body
PROTOBUF: Final = {"Content-Type": "application/x-protobuf"}
T0: Final = 1_780_000_000 * 10**9  # ns
STEP_NS: Final = 10 * 10**9

#: key -> (target, op)
TARGETS: Final[dict[str, tuple[float, str]]] = {
    "otlp.ingest_points_per_s": (50_000, ">="),
    "rules.ratio_to_catalogue": (2.0, "<="),
}

# 20 metrics x 50 series = 1,000 points: 10 sums, 6 gauges, 4 histograms
_KINDS: Final = ("sum",) * 10 + ("gauge",) * 6 + ("histogram",) * 4
_SERIES: Final = 50
_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH")
_BOUNDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Rules(msgspec.Struct):
    rules: tuple[Rule, ...]


def default_rules() -> tuple[Rule, ...]:
    """The rules of ``docs/claude-code-rules.toml``."""
    return msgspec.toml.decode(RULES_FILE.read_bytes(), type=_Rules).rules


def _kv(key: str, value: str | int | float) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, str):
        kv.value.string_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.double_value = value
    return kv


# -- bodies ------------------------------------------------------------------------------


def metrics_body(step: int) -> bytes:
    """An ExportMetricsServiceRequest of ``POINTS`` points: the series at ``step`` (10 s each)."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(
        [_kv("service.name", "checkout"), _kv("host.name", "web-1"), _kv("deployment", "prod")]
    )
    sm = rm.scope_metrics.add()
    sm.scope.name = "bench.otlp"
    sm.scope.version = "1.0"
    now = T0 + (step + 1) * STEP_NS
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for m, kind in enumerate(_KINDS):
        metric = sm.metrics.add()
        metric.name = f"bench.{kind}.m{m}"
        metric.unit = "s" if kind == "histogram" else "1"
        if kind == "sum":
            metric.sum.aggregation_temporality = cumulative
            metric.sum.is_monotonic = True
            points: Any = metric.sum.data_points
        elif kind == "gauge":
            points = metric.gauge.data_points
        else:
            metric.histogram.aggregation_temporality = cumulative
            points = metric.histogram.data_points
        for j in range(_SERIES):
            p = points.add()
            p.start_time_unix_nano = T0
            p.time_unix_nano = now
            p.attributes.extend(
                [
                    _kv("http.route", f"/api/v1/r{j % 10}"),
                    _kv("http.method", _METHODS[j // 10]),
                    _kv("http.status_code", 200 if j % 7 else 500),
                ]
            )
            if kind == "sum":
                p.as_int = (step + 1) * (j + 3)
            elif kind == "gauge":
                p.as_double = (step * 7 + j * 13) % 101 / 3.0
            else:
                p.explicit_bounds.extend(_BOUNDS)
                counts = [(step + 1) * ((b + j) % 4 + 1) for b in range(len(_BOUNDS) + 1)]
                p.bucket_counts.extend(counts)
                p.count = sum(counts)
                p.sum = p.count * 0.137
    assert sum(len(_points(m)) for m in sm.metrics) == POINTS
    return request.SerializeToString()


def _points(metric: Any) -> Sequence[Any]:
    return getattr(metric, metric.WhichOneof("data")).data_points  # type: ignore[no-any-return]


_MODELS: Final = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")
_TOOLS: Final = ("Read", "Edit", "Bash", "Grep", "Write")


def claude_attributes(i: int) -> tuple[str, Attributes]:
    """The event name and attributes of Claude Code's ``i``-th log record (all strings, as
    Claude Code sends them)."""
    common: Attributes = {
        "session.id": f"s-{i // 200:05d}",
        "user.account_uuid": "0d9c7a3e-5b1f-4c2a-9e8d-7f6a5b4c3d2e",
        "organization.id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        "terminal.type": "vscode",
        "event.timestamp": f"2026-12-01T23:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
    }
    match i % 10:
        case 0 | 1 | 2 | 3 | 4 | 5:
            return "claude_code.api_request", {
                **common,
                "event.name": "api_request",
                "model": _MODELS[i % 3],
                "cost_usd": f"{0.0005 * (i % 97 + 1):.6f}",
                "duration_ms": str(400 + i * 37 % 9_000),
                "input_tokens": str(i * 11 % 4_000 + 3),
                "output_tokens": str(i * 7 % 1_500 + 1),
                "cache_read_tokens": str(i * 13 % 30_000),
                "cache_creation_tokens": str(i * 3 % 2_000),
            }
        case 6 | 7 | 8:
            return "claude_code.tool_result", {
                **common,
                "event.name": "tool_result",
                "tool_name": _TOOLS[i % 5],
                "success": "true" if i % 13 else "false",
                "duration_ms": str(5 + i * 17 % 3_000),
            }
        case _:
            return "claude_code.user_prompt", {
                **common,
                "event.name": "user_prompt",
                "prompt_length": str(20 + i % 500),
                "prompt": "<REDACTED>",
            }


_RESOURCE: Final = {
    "service.name": "claude-code",
    "service.version": "2.0.14",
    "os.type": "linux",
    "host.arch": "amd64",
}


def logs_body(step: int) -> bytes:
    """An ExportLogsServiceRequest of ``POINTS`` Claude Code log records."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(_kv(k, v) for k, v in _RESOURCE.items())
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    sl.scope.version = "2.0.14"
    for k in range(POINTS):
        i = step * POINTS + k
        name, attributes = claude_attributes(i)
        record = sl.log_records.add()
        record.time_unix_nano = T0 + i * 10**6
        record.observed_time_unix_nano = T0 + i * 10**6
        record.body.string_value = name
        record.attributes.extend(_kv(key, value) for key, value in attributes.items())
    return request.SerializeToString()


# -- 1. ingest over HTTP -----------------------------------------------------------------


def _exporter(path: str, response_type: Any, field: str) -> Callable[[Http, bytes, int], int]:
    """POST one protobuf export body to ``path``; the items acknowledged (all, or raise)."""

    def send(client: Http, body: bytes, n: int) -> int:
        status, reply = client.request("POST", path, body, PROTOBUF)
        if status != 200:
            raise RuntimeError(f"POST {path}: {status} {reply[:300]!r}")
        response = response_type.FromString(reply)
        rejected = getattr(response.partial_success, field)
        if rejected or response.partial_success.error_message:
            raise RuntimeError(f"POST {path}: {rejected} rejected: {response.partial_success}")
        return n

    return send


export_metrics: Final = _exporter(
    "/v1/metrics", ExportMetricsServiceResponse, "rejected_data_points"
)
export_logs: Final = _exporter("/v1/logs", ExportLogsServiceResponse, "rejected_log_records")


def _timed_runs(
    port: int,
    bodies: Sequence[tuple[bytes, int]],
    send: Callable[[Http, bytes, int], int],
    *,
    warm: int,
    per_run: int,
    reps: int,
) -> tuple[list[float], list[float]]:
    """Warm-up bodies, then ``reps`` runs of ``per_run`` bodies: (acked/s, folded/s) per run."""
    post_concurrently(port, bodies[:warm], CONNECTIONS, send)
    client = Http(port)
    client.wait_caught_up()
    rates, folded = [], []
    for rep in range(reps):
        chunk = bodies[warm + rep * per_run : warm + (rep + 1) * per_run]
        items = sum(n for _, n in chunk)
        t0 = time.perf_counter()
        rates.append(post_concurrently(port, chunk, CONNECTIONS, send))
        folded.append(items / (client.wait_caught_up() - t0))
    client.close()
    return rates, folded


def bench_ingest(
    root: Path, *, bodies: int, reps: int, warm: int = 2
) -> tuple[dict[str, float], list[str]]:
    """``/v1/metrics`` and ``/v1/logs`` on one ``tally serve`` (the default rules loaded)."""
    total = warm + bodies * reps
    built = time.perf_counter()
    metrics = [(metrics_body(step), POINTS) for step in range(total)]
    logs = [(logs_body(step), POINTS) for step in range(total)]
    built = time.perf_counter() - built
    with running_server(root / "otlp-ingest", toml=RULES_FILE.read_text()) as server:
        sizes = {"warm": warm, "per_run": bodies, "reps": reps}
        m_rates, m_folded = _timed_runs(server.port, metrics, export_metrics, **sizes)
        l_rates, l_folded = _timed_runs(server.port, logs, export_logs, **sizes)
    results: dict[str, float] = {
        "otlp.ingest_points_per_s": round(statistics.median(m_rates)),
        "otlp.folded_points_per_s": round(statistics.median(m_folded)),
        "otlp.log_records_per_s": round(statistics.median(l_rates)),
        "otlp.folded_log_records_per_s": round(statistics.median(l_folded)),
        "otlp.points_per_run": bodies * POINTS,
        "otlp.metrics_body_bytes": round(statistics.mean(len(b) for b, _ in metrics)),
        "otlp.logs_body_bytes": round(statistics.mean(len(b) for b, _ in logs)),
    }
    notes = [
        f"otlp ingest: {bodies} protobuf bodies of {POINTS:,} points "
        f"({results['otlp.metrics_body_bytes']:,} bytes) per run, {CONNECTIONS} keep-alive "
        f"connections, median of {reps} runs after {warm} warm-up bodies: "
        + ", ".join(f"{r:,.0f}" for r in m_rates)
        + " points/s; folded "
        + ", ".join(f"{r:,.0f}" for r in m_folded)
        + f"; logs ({results['otlp.logs_body_bytes']:,} bytes a body): "
        + ", ".join(f"{r:,.0f}" for r in l_rates)
        + " records/s; folded "
        + ", ".join(f"{r:,.0f}" for r in l_folded)
        + f" (bodies built in {built:.1f} s, untimed)"
    ]
    return results, notes


# -- 2. the fold cost of a rule beside a catalogue event ---------------------------------


def otel_logs(n: int, event_name: str, ts0: float = 1_780_000_000.0) -> list[Event]:
    """``n`` ``otel_log`` events of Claude Code's ``event_name`` (as ``/v1/logs`` makes them)."""
    out: list[Event] = []
    i = 0
    while len(out) < n:
        name, attributes = claude_attributes(i)
        if name == event_name or event_name not in _CLAUDE_NAMES:
            out.append(
                OtelLog(
                    ts=ts0 + len(out) * 0.001,
                    event_name=event_name,
                    body=event_name,
                    time_unix_nano=T0 + i * 10**6,
                    observed_time_unix_nano=T0 + i * 10**6,
                    attributes=attributes,
                    resource=dict(_RESOURCE),
                    scope="com.anthropic.claude_code.events",
                    scope_version="2.0.14",
                )
            )
        i += 1
    return out


_CLAUDE_NAMES: Final = ("claude_code.api_request", "claude_code.tool_result")


def run_finished(n: int, ts0: float = 1_780_000_000.0) -> list[Event]:
    agents = ("claude", "codex", "gemini")
    return [
        RunFinished(
            ts=ts0 + i * 0.001,
            run_id=f"run-{i:07d}",
            project="tally",
            task=f"task-{i % 50}",
            agent=agents[i % 3],
            status="failed" if i % 10 == 0 else "completed",
            exit_code=1 if i % 10 == 0 else 0,
            duration_s=5.0 + i * 37 % 900,
        )
        for i in range(n)
    ]


def iteration_completed(n: int, ts0: float = 1_780_000_000.0) -> list[Event]:
    return [
        IterationCompleted(
            ts=ts0 + i * 0.001,
            loop_id=f"loop-{i % 8}",
            iteration=i // 8 + 1,
            duration_s=1.0 + i * 13 % 300,
            success=i % 9 != 0,
            made_progress=i % 3 != 0,
            progress_score=(i % 10) / 10,
            files_changed=i % 5,
        )
        for i in range(n)
    ]


def fold_ns_per_event(config: ProjectionConfig, events: list[Event], repeat: int) -> float:
    """ns per event of folding ``events`` into a fresh projection (and settling it): the
    median of ``repeat`` timed folds after one untimed one."""
    times = []
    for rep in range(repeat + 1):
        projection = Projection(config)
        t0 = time.perf_counter()
        projection.fold_events(events)
        projection.families()  # anything deferred (the lazy iteration fold) is settled
        elapsed = time.perf_counter() - t0
        if rep:
            times.append(elapsed)
    return statistics.median(times) / len(events) * 1e9


def bench_rules(n: int, repeat: int) -> tuple[dict[str, float], list[str]]:
    config = ProjectionConfig(rules=default_rules())
    rules_per_request = sum(r.on == "claude_code.api_request" for r in config.rules)
    cases = {
        "api_request": otel_logs(n, "claude_code.api_request"),
        "tool_result": otel_logs(n, "claude_code.tool_result"),
        "unmatched_log": otel_logs(n, "bench.no_rule"),
        "run_finished": run_finished(n),
        "iteration_completed": iteration_completed(n),
    }
    ns = {name: fold_ns_per_event(config, events, repeat) for name, events in cases.items()}
    # what each of api_request's rules adds to an otel_log that no rule matches
    per_rule = (ns["api_request"] - ns["unmatched_log"]) / rules_per_request
    results: dict[str, float] = {
        "rules.api_request_ns_per_event": round(ns["api_request"], 1),
        "rules.tool_result_ns_per_event": round(ns["tool_result"], 1),
        "rules.unmatched_log_ns_per_event": round(ns["unmatched_log"], 1),
        "rules.run_finished_ns_per_event": round(ns["run_finished"], 1),
        "rules.iteration_completed_ns_per_event": round(ns["iteration_completed"], 1),
        "rules.api_request_rules": rules_per_request,
        "rules.ns_per_rule": round(per_rule, 1),
        # one event that one rule maps to a counter, against a catalogue event
        "rules.ratio_to_catalogue": round(ns["tool_result"] / ns["run_finished"], 3),
        # one event that seven rules map (6 counters, a histogram), against a catalogue event
        "rules.api_request_ratio_to_catalogue": round(ns["api_request"] / ns["run_finished"], 3),
        "rules.per_rule_ratio_to_catalogue": round(per_rule / ns["run_finished"], 3),
        "rules.events": n,
    }
    notes = [
        f"rules fold: {n:,} events each into a fresh projection with the default rules, "
        f"median of {repeat} after a warm-up: "
        + ", ".join(f"{name} {value:,.0f} ns" for name, value in ns.items())
        + f"; claude_code.api_request feeds {rules_per_request} rules"
    ]
    return results, notes


# -- running and reporting ---------------------------------------------------------------


def run(
    quick: bool, *, bodies: int | None = None, events: int | None = None, repeat: int = 3
) -> dict[str, float]:
    """Both parts, as a flat ``{dotted key: number}`` dict (also prints the notes)."""
    results, notes = _run(quick, bodies=bodies, events=events, repeat=repeat)
    for note in notes:
        print(f"- {note}")
    return results


def _run(
    quick: bool, *, bodies: int | None, events: int | None, repeat: int
) -> tuple[dict[str, float], list[str]]:
    bodies = bodies if bodies is not None else (30 if quick else 100)
    events = events if events is not None else (50_000 if quick else 200_000)
    reps = 2 if quick else 3
    results: dict[str, float] = {}
    notes: list[str] = []
    figures, said = bench_rules(events, repeat)  # first: no server process beside it
    results |= figures
    notes += said
    with tempfile.TemporaryDirectory(prefix="tally-bench-otlp-") as tmp:
        figures, said = bench_ingest(Path(tmp), bodies=bodies, reps=reps if repeat > 1 else 1)
    results |= figures
    notes += said
    return results, notes


def table(results: dict[str, float]) -> str:
    rows = [f"{'key':44s} {'value':>14s}  target"]
    for key, value in results.items():
        text = f"{value:,.0f}" if value == int(value) else f"{value:,.3f}"
        verdict = ""
        if key in TARGETS:
            goal, op = TARGETS[key]
            ok = value >= goal if op == ">=" else value <= goal
            verdict = f"{op} {goal:,.6g} {'ok' if ok else 'MISSED'}"
        rows.append(f"{key:44s} {text:>14s}  {verdict}".rstrip())
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_otlp", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results, notes = _run(args.quick, bodies=None, events=None, repeat=3)
    finish(args.out, table(results), results, notes, quick=args.quick, started=started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
