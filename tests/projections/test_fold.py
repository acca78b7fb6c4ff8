"""The fold: counts checked against an independent plain-Python tally, and the edge cases."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bus.events import (
    AgentFallback,
    ApiRequest,
    BusMessage,
    ContextReboot,
    ContextUsage,
    Event,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    MetricsReset,
    MetricUpdate,
    OtelLog,
    OtelMetric,
    ResourceSample,
    RunFinished,
    RunQueued,
    RunStarted,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from bus.writer import BusConfig, BusWriter
from projections.config import ProjectionConfig
from projections.exposition.formats import FORMATS
from projections.exposition.prometheus import render_prometheus
from projections.fold import Projection
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.summary import AnyFamily, SummaryFamily
from server.replay import replay
from tests.support.families import rendered
from tests.support.workload import RESET_PREFIX, mixed_events

P = "ralph_loop"


def by_name(projection: Projection) -> dict[str, AnyFamily]:
    return {f.name: f for f in projection.families()}


def values(family: AnyFamily) -> dict[tuple[str, ...], float]:
    assert isinstance(family, CounterFamily | GaugeFamily), family.name
    return dict(family.values)


def hist(family: AnyFamily) -> dict[tuple[str, ...], tuple[int, float, list[int]]]:
    """labels -> (count, sum, cumulative bucket counts)."""
    assert isinstance(family, HistogramFamily), family.name
    out = {}
    for labels, s in family.series.items():
        cumulative, total = [], 0
        for n in s.counts:
            total += n
            cumulative.append(total)
        out[labels] = (s.count, s.sum, cumulative)
    return out


def fold(events: Iterable[Event], config: ProjectionConfig | None = None) -> Projection:
    projection = Projection(config)
    projection.fold_events(list(events))
    return projection


# -- an independent tally ------------------------------------------------------


class Expected:
    """What the fold should produce, counted the plain way (no shared code with fold.py)."""

    def __init__(self) -> None:
        self.scalars: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
        self.observations: dict[str, dict[tuple[str, ...], list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.by_type: Counter[str] = Counter()
        self.queued: set[str] = set()
        self.active: set[str] = set()
        self.active_loops: set[str] = set()
        self.open_sessions: dict[str, set[str]] = defaultdict(set)
        self.scores: dict[str, list[float]] = defaultdict(list)

    def add(self, name: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        series = self.scalars[name]
        series[labels] = series.get(labels, 0.0) + amount

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self.scalars[name][labels] = value

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self.observations[name][labels].append(value)

    def clear(self, prefix: str) -> None:
        for name in list(self.scalars):
            if name.startswith(prefix):
                del self.scalars[name]
        for name in list(self.observations):
            if name.startswith(prefix):
                del self.observations[name]

    def feed(self, ev: Event) -> None:
        self.by_type[ev.__struct_config__.tag] += 1  # type: ignore[index]
        if isinstance(ev, RunQueued):
            self.queued.add(ev.run_id)
        elif isinstance(ev, RunStarted):
            self.queued.discard(ev.run_id)
            self.active.add(ev.run_id)
            self.add("conductor_agent_runs_total", (ev.agent or "unknown",))
        elif isinstance(ev, RunFinished):
            self.queued.discard(ev.run_id)
            self.active.discard(ev.run_id)
            self.add(f"conductor_{ev.status}_runs_total", ())
            assert ev.duration_s is not None
            self.observe("conductor_run_duration_seconds", (ev.agent, ev.status), ev.duration_s)
        elif isinstance(ev, BusMessage):
            self.add("conductor_messagebus_appends_total", ())
        elif isinstance(ev, ApiRequest):
            self.add("conductor_api_requests_total", (ev.method, str(ev.status)))
        elif isinstance(ev, AgentFallback):
            self.add("conductor_agent_fallbacks_total", (ev.from_type, ev.to_type))
        elif isinstance(ev, LoopStarted):
            self.active_loops.add(ev.loop_id)
        elif isinstance(ev, LoopStopped):
            self.active_loops.discard(ev.loop_id)
        elif isinstance(ev, IterationCompleted):
            loop = (ev.loop_id,)
            result = "success" if ev.success else "failure"
            other = "failure" if ev.success else "success"
            self.add(f"{P}_iterations_total", (ev.loop_id, result))
            self.add(f"{P}_iterations_total", (ev.loop_id, other), 0.0)
            self.observe(f"{P}_iteration_duration_seconds", loop, ev.duration_s)
            self.add(f"{P}_iterations_with_progress_total", loop, 1.0 if ev.made_progress else 0.0)
            streak = self.scalars[f"{P}_no_progress_streak"].get(loop, 0.0)
            self.set(f"{P}_no_progress_streak", loop, 0.0 if ev.made_progress else streak + 1)
            self.add(f"{P}_files_changed_total", loop, ev.files_changed)
            if ev.progress_score is not None:
                self.set(f"{P}_progress_score", loop, ev.progress_score)
                self.scores[ev.loop_id].append(ev.progress_score)
                last = self.scores[ev.loop_id][-10:]
                self.set(f"{P}_progress_velocity", loop, sum(last) / len(last))
        elif isinstance(ev, SessionStarted):
            self.add(f"{P}_sessions_created_total", (ev.loop_id,))
            self.open_sessions[ev.loop_id].add(ev.session_id)
            self.set(f"{P}_active_sessions", (ev.loop_id,), len(self.open_sessions[ev.loop_id]))
        elif isinstance(ev, SessionEnded):
            self.open_sessions[ev.loop_id].discard(ev.session_id)
            self.set(f"{P}_active_sessions", (ev.loop_id,), len(self.open_sessions[ev.loop_id]))
            assert ev.duration_s is not None
            self.observe(f"{P}_session_duration_seconds", (ev.loop_id,), ev.duration_s)
        elif isinstance(ev, ContextUsage):
            self.set(f"{P}_context_usage_ratio", (ev.loop_id,), ev.percent / 100)
        elif isinstance(ev, ContextReboot):
            self.add(f"{P}_context_reboots_total", (ev.loop_id,))
            self.observe(f"{P}_context_at_reboot_ratio", (ev.loop_id,), ev.percent / 100)
        elif isinstance(ev, TestsReported):
            loop = (ev.loop_id,)
            self.set(f"{P}_tests", (ev.loop_id, "passing"), ev.passed)
            self.set(f"{P}_tests", (ev.loop_id, "failing"), ev.failed)
            self.set(f"{P}_flaky_tests", loop, ev.flaky)
            self.set(f"{P}_test_pass_ratio", loop, ev.passed / ev.total)
            streak = self.scalars[f"{P}_test_failure_streak"].get(loop, 0.0)
            self.set(f"{P}_test_failure_streak", loop, streak + 1 if ev.failed else 0.0)
        elif isinstance(ev, ResourceSample):
            self.set(f"{P}_resident_memory_bytes", (ev.loop_id,), ev.rss_bytes)
            self.set(f"{P}_cpu_usage_ratio", (ev.loop_id,), ev.cpu_percent / 100)
        elif isinstance(ev, MetricUpdate):
            labels = tuple(ev.labels[k] for k in sorted(ev.labels))
            if ev.kind in ("counter", "gauge"):
                if ev.op in (None, "set") and ev.kind == "gauge":
                    self.set(ev.name, labels, ev.value)
                else:
                    self.add(ev.name, labels, -ev.value if ev.op == "dec" else ev.value)
            else:
                self.observe(ev.name, labels, ev.value)
        elif isinstance(ev, MetricsReset):
            self.clear(ev.prefix)
        elif isinstance(ev, OtelMetric):  # extra_events: delta sums with one attribute
            assert ev.value is not None
            self.add(f"{ev.name.replace('.', '_')}_total", (str(ev.attributes["route"]),), ev.value)
        elif isinstance(ev, OtelLog):
            pass  # counted by type only
        else:  # pragma: no cover - every type is handled above
            raise AssertionError(ev)

    def finish(self) -> None:
        self.set("conductor_active_runs_total", (), len(self.active))
        self.set("conductor_queued_runs_total", (), len(self.queued))
        self.set(f"{P}_active_loops", (), len(self.active_loops))
        for name in ("conductor_completed_runs_total", "conductor_failed_runs_total"):
            self.add(name, (), 0.0)
        self.add("conductor_messagebus_appends_total", (), 0.0)


def extra_events() -> list[Event]:
    """Events the workload never writes: a reset of everything but tally_, then a new start."""
    ts = 1_800_000_000.0
    return [
        AgentFallback(ts=ts, from_type="a", to_type="b"),
        MetricUpdate(ts=ts, name="extra_temperature", kind="gauge", value=21.5),
        MetricUpdate(ts=ts, name="extra_temperature", kind="gauge", value=2, op="inc"),
        MetricUpdate(ts=ts, name="extra_temperature", kind="gauge", value=0.5, op="dec"),
        *(
            OtelMetric(
                ts=ts,
                name="extra.requests",
                kind="sum",
                monotonic=True,
                temporality="delta",
                value=n,
                attributes={"route": route},
            )
            for n, route in ((2, "/a"), (3, "/b"), (4, "/a"))
        ),
        OtelLog(ts=ts, event_name="extra.event"),
    ]


def test_every_family_matches_an_independent_count(data_dir: Path) -> None:
    events = [*mixed_events(30_000, seed=7), *extra_events()]
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        for i in range(0, len(events), 1000):
            writer.append(events[i : i + 1000])
    projection = replay(data_dir, config=ProjectionConfig())
    expected = Expected()
    for ev in events:
        expected.feed(ev)
    expected.finish()
    families = by_name(projection)

    assert projection.events_by_type == {t: expected.by_type[t] for t in projection.events_by_type}
    assert set(expected.by_type) == set(projection.events_by_type)  # the mix has every type
    checked = set()
    for name, series in expected.scalars.items():
        assert values(families[name]) == pytest.approx(series), name
        checked.add(name)
    for name, observed in expected.observations.items():
        family = families[name]
        if isinstance(family, SummaryFamily):
            got = {k: (s.count, s.sum) for k, s in family.series.items()}
            assert got == {k: (len(v), pytest.approx(sum(v))) for k, v in observed.items()}, name
        else:
            assert isinstance(family, HistogramFamily)
            want = {}
            for labels, vs in observed.items():
                cumulative = [sum(1 for v in vs if v <= b) for b in family.bounds] + [len(vs)]
                want[labels] = (len(vs), pytest.approx(sum(vs)), cumulative)
            assert hist(family) == want, name
        checked.add(name)
    catalogue = {n for n in families if n.startswith(("conductor_", P + "_"))}
    assert catalogue <= checked, catalogue - checked
    assert values(families["tally_events_folded_total"]) == {
        (t,): float(n) for t, n in projection.events_by_type.items()
    }
    assert values(families["tally_folded_offset_bytes"]) == {(): float(projection.offset)}
    assert (
        projection.offset
        == (data_dir / "bus").joinpath("00000000000000000000.jsonl").stat().st_size
    )
    assert projection.clock.now == max(ev.ts for ev in events if ev.ts is not None)


def folded(projection: Projection) -> tuple[bytes, list[bytes]]:
    """Everything a projection holds (its state record) and shows (every format)."""
    state = msgspec.msgpack.encode(projection.export_state())  # bytes: NaN equals NaN
    return state, [rendered(projection, fmt) for fmt in FORMATS]


@settings(max_examples=60, deadline=None)
@example(n=60, seed=3, resets=[(20, RESET_PREFIX), (21, "")], cuts=list(range(63)))  # 1 each
@example(n=60, seed=3, resets=[(30, RESET_PREFIX)], cuts=[0, 0, 30, 30, 31, 61, 61])  # empties
@given(
    n=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
    resets=st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from([RESET_PREFIX, "", "conductor_", f"{P}_"])),
        max_size=4,
    ),
    cuts=st.lists(st.integers(0, 400), max_size=40),
)
def test_batching_does_not_change_the_state(
    n: int, seed: int, resets: list[tuple[int, str]], cuts: list[int]
) -> None:
    """Any split of a log into batches (empty ones, one-event ones, resets anywhere in them)
    folds to the same state and output as the whole log in one batch."""
    events = list(mixed_events(n, seed=seed))
    for position, prefix in resets:  # the workload holds one reset per 2,000 events: add some
        at = position % (len(events) + 1)
        events.insert(at, MetricsReset(ts=events[at - 1].ts if at else None, prefix=prefix))
    bounds = sorted(cut % (len(events) + 1) for cut in cuts)
    split = Projection()
    for start, end in zip([0, *bounds], [*bounds, len(events)], strict=True):
        split.fold_events(events[start:end])
    assert folded(split) == folded(fold(events))


# -- edge cases ------------------------------------------------------------------


def test_a_log_starting_mid_run_never_goes_negative() -> None:
    events: list[Event] = [
        RunFinished(ts=1, run_id="r0", project="p", status="failed"),  # never started
        RunStarted(ts=2, run_id="r1", project="p"),
        RunFinished(ts=3, run_id="r1", project="p"),
        RunFinished(ts=4, run_id="r1", project="p"),  # finished twice
        RunQueued(ts=5, run_id="r2", project="p"),
        RunFinished(ts=6, run_id="r2", project="p"),  # finished from the queue
        SessionEnded(ts=7, loop_id="L", session_id="s0"),  # never started
        LoopStopped(ts=8, loop_id="L"),  # never started
    ]
    f = by_name(fold(events))
    assert values(f["conductor_active_runs_total"]) == {(): 0.0}
    assert values(f["conductor_queued_runs_total"]) == {(): 0.0}
    assert values(f["conductor_completed_runs_total"]) == {(): 3.0}
    assert values(f["conductor_failed_runs_total"]) == {(): 1.0}
    assert values(f[f"{P}_active_sessions"]) == {("L",): 0.0}
    assert values(f[f"{P}_active_loops"]) == {(): 0.0}
    # a duration comes from the start's ts when the event has none, and only then
    assert hist(f["conductor_run_duration_seconds"]) == {
        ("unknown", "completed"): (1, 1.0, [1] * 12)
    }
    assert hist(f[f"{P}_session_duration_seconds"]) == {}


def test_queued_started_finished_gauges() -> None:
    events: list[Event] = [RunQueued(ts=i, run_id=f"r{i}", project="p") for i in range(5)]
    events += [RunStarted(ts=10 + i, run_id=f"r{i}", project="p", agent="claude") for i in (0, 1)]
    events += [RunStarted(ts=20, run_id="x", project="p")]  # started, never queued
    events += [RunFinished(ts=25, run_id="r0", project="p", agent="claude", duration_s=42)]
    f = by_name(fold(events))
    assert values(f["conductor_queued_runs_total"]) == {(): 3.0}
    assert values(f["conductor_active_runs_total"]) == {(): 2.0}
    assert values(f["conductor_agent_runs_total"]) == {("claude",): 2.0, ("unknown",): 1.0}
    ((count, total, _),) = hist(f["conductor_run_duration_seconds"]).values()
    assert (count, total) == (1, 42.0)


def test_events_without_ts_happen_at_the_clock() -> None:
    projection = fold(
        [
            ApiRequest(ts=100.0, method="GET", status=200),
            SessionStarted(loop_id="L", session_id="s"),  # ts None: at 100
            ApiRequest(ts=50.0, method="GET", status=200),  # behind the clock
            SessionEnded(ts=160.0, loop_id="L", session_id="s"),
        ]
    )
    assert projection.clock.now == 160.0
    ((count, total, _),) = hist(by_name(projection)[f"{P}_session_duration_seconds"]).values()
    assert (count, total) == (1, 60.0)


def test_metric_events_that_disagree_are_counted_not_applied() -> None:
    events: list[Event] = [
        MetricUpdate(ts=1, name="jobs_total", kind="counter", value=2, labels={"q": "a"}),
        MetricUpdate(ts=2, name="jobs_total", kind="gauge", value=9, labels={"q": "a"}),
        MetricUpdate(ts=3, name="jobs_total", kind="counter", value=1, labels={"r": "a"}),
        MetricUpdate(ts=4, name="jobs_total", kind="counter", value=1),
        MetricUpdate(ts=4, name="jobs_total", kind="counter", value=1, labels={"q": "a", "r": "b"}),
        MetricUpdate(ts=5, name="jobs_total", kind="counter", value=3, labels={"q": "b"}),
        MetricUpdate(ts=6, name="conductor_fake_total", kind="counter", value=1),
        MetricUpdate(ts=6, name="ralph_loop_iterations_total", kind="counter", value=1),
        MetricUpdate(ts=6, name="tally_events_folded_total", kind="counter", value=1),
        MetricUpdate(ts=7, name="lat", kind="histogram", value=1, labels={"le": "x"}),
        MetricUpdate(ts=8, name="sz", kind="summary", value=1, labels={"quantile": "x"}),
    ]
    projection = fold(events)
    f = by_name(projection)
    assert values(f["jobs_total"]) == {("a",): 2.0, ("b",): 3.0}
    assert projection.rejected == {
        "kind_conflict": 1,
        "label_mismatch": 3,
        "reserved_name": 3,
        "invalid_family": 2,
        "name_conflict": 0,
        "bounds_conflict": 0,
        "invalid_point": 0,
    }
    assert values(f["tally_rejected_events_total"]) == {
        ("kind_conflict",): 1.0,
        ("label_mismatch",): 3.0,
        ("reserved_name",): 3.0,
        ("invalid_family",): 2.0,
        ("name_conflict",): 0.0,
        ("bounds_conflict",): 0.0,
        ("invalid_point",): 0.0,
    }
    assert "conductor_fake_total" not in f and "lat" not in f and "sz" not in f
    assert values(f["tally_events_folded_total"])[("metric",)] == len(events)


def test_metric_event_help_and_ops() -> None:
    f = by_name(
        fold(
            [
                MetricUpdate(ts=1, name="depth", kind="gauge", value=5),
                MetricUpdate(ts=2, name="depth", kind="gauge", value=2, op="dec", help="Depth."),
                MetricUpdate(ts=3, name="depth", kind="gauge", value=10, op="inc", help="Other."),
                MetricUpdate(ts=4, name="fresh", kind="gauge", value=4, op="dec"),
                MetricUpdate(ts=5, name="lat_seconds", kind="histogram", value=0.3),
                MetricUpdate(ts=6, name="size_bytes", kind="summary", value=7.0),
            ]
        )
    )
    assert values(f["depth"]) == {(): 13.0}
    assert f["depth"].help == "Depth."
    assert values(f["fresh"]) == {(): -4.0}
    lat = f["lat_seconds"]
    assert isinstance(lat, HistogramFamily)
    assert lat.bounds == ProjectionConfig().default_buckets
    size = f["size_bytes"]
    assert isinstance(size, SummaryFamily)
    assert size.quantile((), 0.5) == pytest.approx(7.0, rel=0.01)


def test_reset_clears_matching_families_and_keeps_self_metrics() -> None:
    before: list[Event] = [
        RunStarted(ts=1, run_id="r1", project="p"),
        BusMessage(ts=1, project="p", msg_type="x"),
        ApiRequest(ts=1, method="GET", status=200),
        IterationCompleted(ts=2, loop_id="L", iteration=1, duration_s=1.0, success=True),
        TestsReported(ts=2, loop_id="L", passed=1, failed=1, total=2),
        LoopStarted(ts=2, loop_id="L"),
        MetricUpdate(ts=3, name="app_total", kind="counter", value=5),
        MetricUpdate(ts=3, name="app_items_total", kind="counter", value=5, labels={"k": "v"}),
        MetricUpdate(ts=3, name="other_total", kind="counter", value=5),
    ]
    after: list[Event] = [
        BusMessage(ts=5, project="p", msg_type="x"),
        IterationCompleted(ts=6, loop_id="L", iteration=2, duration_s=2.0, success=False),
    ]
    projection = fold([*before, MetricsReset(ts=4, prefix=""), *after])
    f = by_name(projection)
    fresh = by_name(fold(after))
    for name in (
        "conductor_active_runs_total",
        "conductor_messagebus_appends_total",
        "conductor_api_requests_total",
        f"{P}_iterations_total",
        f"{P}_iteration_duration_seconds",
        f"{P}_tests",
        f"{P}_active_loops",
    ):
        got, want = f[name], fresh[name]
        if isinstance(got, HistogramFamily):
            assert hist(got) == hist(want), name
        else:
            assert values(got) == values(want), name
    assert values(f["app_total"]) == {(): 0.0}  # unlabelled: back to 0, still there
    assert values(f["app_items_total"]) == {}
    assert values(f["other_total"]) == {(): 0.0}
    assert values(f["tally_events_folded_total"])[("bus_message",)] == 2.0  # never reset
    assert projection.rollups()["L"].total_iterations == 1


def test_reset_by_prefix_only_touches_that_prefix() -> None:
    events: list[Event] = [
        IterationCompleted(ts=1, loop_id="L", iteration=1, duration_s=1.0, success=True),
        IterationCompleted(
            ts=2, loop_id="L", iteration=2, duration_s=3.0, success=True, made_progress=True
        ),
        ContextReboot(ts=2, loop_id="L", percent=90),
        MetricUpdate(ts=3, name="app_batch_total", kind="counter", value=5),
        MetricUpdate(ts=3, name="app_jobs_total", kind="counter", value=5),
        MetricsReset(ts=4, prefix=f"{P}_iteration_"),
        MetricsReset(ts=4, prefix="app_batch"),
    ]
    projection = fold(events)
    f = by_name(projection)
    assert values(f[f"{P}_iterations_total"]) == {("L", "success"): 2.0, ("L", "failure"): 0.0}
    assert hist(f[f"{P}_iteration_duration_seconds"]) == {}
    assert values(f[f"{P}_iterations_with_progress_total"]) == {("L",): 1.0}
    assert values(f[f"{P}_context_reboots_total"]) == {("L",): 1.0}
    assert values(f["app_batch_total"]) == {(): 0.0}
    assert values(f["app_jobs_total"]) == {(): 5.0}
    loop = projection.rollups()["L"]
    assert loop.total_iterations == 2
    assert loop.total_execution_time_s == 0.0
    assert loop.avg_iteration_duration_s is None


def test_a_replay_reproduces_a_reset(data_dir: Path) -> None:
    events = list(mixed_events(6_000, seed=11))  # holds resets of app_batch_
    assert any(isinstance(ev, MetricsReset) for ev in events)
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        writer.append(events)
    replayed = replay(data_dir, config=ProjectionConfig())
    live = Projection()
    for ev in events:
        live.fold_events([ev])
    live.offset = replayed.offset
    assert render_prometheus(replayed.families()) == render_prometheus(live.families())


def test_the_overflow_guard_caps_series_per_family() -> None:
    config = ProjectionConfig(max_series_per_family=2)
    events: list[Event] = [ApiRequest(ts=1, method="GET", status=s) for s in (200, 201, 202, 203)]
    events += [ApiRequest(ts=1, method="GET", status=200)]
    events += [ContextUsage(ts=2, loop_id=f"L{i}", percent=10 * i) for i in range(4)]
    events += [ContextUsage(ts=2, loop_id="L3", percent=50)]
    events += [
        MetricUpdate(ts=3, name="app_total", kind="counter", value=1, labels={"k": str(i)})
        for i in range(3)
    ]
    projection = fold(events, config)
    f = by_name(projection)
    assert values(f["conductor_api_requests_total"]) == {
        ("GET", "200"): 2.0,
        ("GET", "201"): 1.0,
        ("__overflow__", "__overflow__"): 2.0,
    }
    assert values(f[f"{P}_context_usage_ratio"]) == {
        ("L0",): 0.0,
        ("L1",): 0.1,
        ("__overflow__",): 0.5,
    }
    assert values(f["app_total"]) == {("0",): 1.0, ("1",): 1.0, ("__overflow__",): 1.0}
    assert values(f["tally_series_overflow_total"]) == {
        ("conductor_api_requests_total",): 2.0,
        (f"{P}_context_usage_ratio",): 3.0,
        ("app_total",): 1.0,
    }
    assert set(projection.rollups()) == {"L0", "L1", "__overflow__"}


def test_loop_gauges_follow_the_last_report() -> None:
    events: list[Event] = [
        LoopStarted(ts=1, loop_id="L"),
        LoopStarted(ts=1, loop_id="M"),
        LoopStopped(ts=2, loop_id="M"),
        TestsReported(ts=3, loop_id="L", passed=0, failed=0, total=0),
        ResourceSample(ts=4, loop_id="L", rss_bytes=1024, cpu_percent=150.0),
        ContextUsage(ts=5, loop_id="L", percent=42.0),
    ]
    f = by_name(fold(events))
    assert values(f[f"{P}_active_loops"]) == {(): 1.0}
    assert values(f[f"{P}_test_pass_ratio"]) == {}  # total 0: undefined, left out
    assert values(f[f"{P}_tests"]) == {("L", "passing"): 0.0, ("L", "failing"): 0.0}
    assert values(f[f"{P}_resident_memory_bytes"]) == {("L",): 1024.0}
    assert values(f[f"{P}_cpu_usage_ratio"]) == {("L",): 1.5}
    assert values(f[f"{P}_context_usage_ratio"]) == {("L",): 0.42}


def test_fold_batch_counts_corrupt_and_unknown_lines(data_dir: Path) -> None:
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        writer.append([BusMessage(ts=1, project="p", msg_type="x")])
    segment = data_dir / "bus" / "00000000000000000000.jsonl"
    with segment.open("ab") as f:
        f.write(b'{"type":"from_the_future","ts":2}\n{not json\n')
        f.write(b'{"type":"bus_message","ts":3,"project":"p","msg_type":"y"}\n')
    projection = replay(data_dir, config=ProjectionConfig())
    f = by_name(projection)
    assert values(f["tally_corrupt_lines_total"]) == {(): 1.0}
    assert values(f["tally_unknown_events_total"]) == {(): 1.0}
    assert projection.unknown_types == {"from_the_future": 1}
    assert values(f["conductor_messagebus_appends_total"]) == {(): 2.0}
    assert projection.offset == segment.stat().st_size


def test_families_are_sorted_and_cover_the_catalogue() -> None:
    names = [f.name for f in Projection().families()]
    assert names == sorted(names)
    assert not any(math.isnan(v) for f in Projection().families() for v in _scalars(f))


def _scalars(family: AnyFamily) -> list[float]:
    if isinstance(family, CounterFamily | GaugeFamily):
        return list(family.values.values())
    return []


def test_the_server_adds_its_own_requests_at_render_time() -> None:
    projection = fold([ApiRequest(ts=1, method="GET", status=200)])
    own = {("GET", "200"): 2.0, ("POST", "201"): 1.0}
    api = by_name(projection)["conductor_api_requests_total"]
    assert values(api) == {("GET", "200"): 1.0}
    api = {f.name: f for f in projection.families(api_requests=own)}["conductor_api_requests_total"]
    assert values(api) == {("GET", "200"): 3.0, ("POST", "201"): 1.0}
    assert values(by_name(projection)["conductor_api_requests_total"]) == {("GET", "200"): 1.0}


def iteration(loop_id: str, i: int, **fields: object) -> IterationCompleted:
    args: dict[str, object] = {"duration_s": 1.0, "success": True, "ts": float(i), **fields}
    return IterationCompleted(loop_id=loop_id, iteration=i, **args)  # type: ignore[arg-type]


def test_iterations_before_a_reset_are_folded_before_it_clears_them() -> None:
    """Iterations wait in their loop's list (folded in bulk): a reset must not lose its place."""
    events: list[Event] = [
        iteration("L", 1, files_changed=2),
        iteration("L", 2, made_progress=True, progress_score=0.5),
        iteration("L", 3, success=False),
        MetricsReset(ts=4, prefix=f"{P}_iterations_total"),
        iteration("L", 5, files_changed=1),
        iteration("L", 6, success=False, progress_score=0.25),
    ]
    for cut in range(len(events) + 1):  # a read (families) between any two events
        projection = Projection()
        projection.fold_events(events[:cut])
        projection.families()
        projection.fold_events(events[cut:])
        f = by_name(projection)
        assert values(f[f"{P}_iterations_total"]) == {("L", "success"): 1.0, ("L", "failure"): 1.0}
        assert values(f[f"{P}_files_changed_total"]) == {("L",): 3.0}
        assert values(f[f"{P}_no_progress_streak"]) == {("L",): 3.0}
        assert values(f[f"{P}_progress_score"]) == {("L",): 0.25}
        assert values(f[f"{P}_progress_velocity"]) == {("L",): 0.375}
        assert hist(f[f"{P}_iteration_duration_seconds"])[("L",)][:2] == (5, 5.0)


def test_waiting_iterations_stay_bounded_without_reads() -> None:
    projection = Projection()
    for start in range(0, 10_000, 500):
        projection.fold_events([iteration(f"L{i % 7}", i) for i in range(start, start + 500)])
        waiting = sum(len(s.iterations) for s in projection._loops.loops.values())
        assert waiting < 4096
    rollups = projection.rollups()
    assert sum(r.total_iterations for r in rollups.values()) == 10_000


def test_refused_loops_feed_the_overflow_loops_quantiles() -> None:
    """Every loop past the limit lands in ``__overflow__``, its durations too."""
    config = ProjectionConfig(max_series_per_family=1)
    events: list[Event] = [iteration("A", 1, duration_s=1.0)]
    events += [iteration("B", 2 + i, duration_s=10.0) for i in range(60)]
    events += [iteration("C", 70 + i, duration_s=20.0) for i in range(40)]
    overflow = fold(events, config).rollups()["__overflow__"]
    assert overflow.total_iterations == 100
    quantiles = overflow.iteration_duration_quantiles_s
    assert quantiles.p50 == pytest.approx(10.0, rel=0.01)
    assert quantiles.p99 == pytest.approx(20.0, rel=0.01)


def test_metric_events_with_three_labels_match_by_name() -> None:
    labels = {"a": "1", "b": "2", "c": "3"}
    events: list[Event] = [
        MetricUpdate(ts=1, name="app_three_total", kind="counter", value=1, labels=labels),
        MetricUpdate(ts=2, name="app_three_total", kind="counter", value=2, labels=labels),
        MetricUpdate(
            ts=3,
            name="app_three_total",
            kind="counter",
            value=5,
            labels={"a": "1", "b": "2", "d": "3"},
        ),
    ]
    projection = fold(events)
    assert values(by_name(projection)["app_three_total"]) == {("1", "2", "3"): 3.0}
    assert projection.rejected["label_mismatch"] == 1
