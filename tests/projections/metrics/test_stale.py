"""Stale series: ``series_ttl_s`` hides (state kept), ``forget_after_s`` frees (a reset).

Both are measured in event time, so replay, snapshots and any batching agree.
"""

from __future__ import annotations

import functools
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.events import (
    AgentFallback,
    ApiRequest,
    Event,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    MetricUpdate,
    ResourceSample,
    RunFinished,
    RunStarted,
)
from bus.writer import BusConfig, BusWriter
from projections.config import ProjectionConfig
from projections.exposition.prometheus import render_prometheus
from projections.fold import Projection
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.stale import forget_series, hide_series, stale_before
from projections.metrics.state import CounterState
from projections.snapshot import decode_snapshot, encode_snapshot
from server.parallel import replay_parallel
from server.replay import replay, replay_steps
from tests.support.families import rendered
from tests.support.workload import mixed_events

FORMATS = ("prometheus", "openmetrics", "json", "statsd")
HIDE = ProjectionConfig(series_ttl_s=60.0)
FORGET = ProjectionConfig(series_ttl_s=60.0, forget_after_s=100.0)


def jobs(ts: float, job: str, value: float = 1.0) -> MetricUpdate:
    return MetricUpdate(ts=ts, name="jobs_total", kind="counter", value=value, labels={"job": job})


def text(projection: Projection) -> str:
    return render_prometheus(projection.families()).decode()


def samples(projection: Projection, prefix: str) -> dict[str, str]:
    """Sample lines starting with ``prefix``: series (name and labels) -> value."""
    out = {}
    for line in text(projection).splitlines():
        if line.startswith(prefix):
            series, value = line.rsplit(" ", 1)
            out[series] = value
    return out


def folded(config: ProjectionConfig, events: list[Event]) -> Projection:
    projection = Projection(config)
    projection.fold_events(events)
    return projection


# -- hiding -------------------------------------------------------------------------------


def test_a_counter_that_goes_stale_is_hidden_then_continues_where_it_was() -> None:
    p = folded(HIDE, [jobs(0, "a", 5), jobs(10, "b")])
    assert samples(p, "jobs_total{") == {'jobs_total{job="a"}': "5", 'jobs_total{job="b"}': "1"}
    p.fold_events([jobs(61, "b")])  # the clock passes a's ttl (60 s after its update at 0)
    assert samples(p, "jobs_total{") == {'jobs_total{job="b"}': "2"}
    assert samples(p, "tally_stale_series") == {'tally_stale_series{family="jobs_total"}': "1"}
    p.fold_events([jobs(62, "a", 2)])  # back: no reset, Prometheus sees 5 -> 7
    assert samples(p, "jobs_total{") == {'jobs_total{job="a"}': "7", 'jobs_total{job="b"}': "2"}
    assert samples(p, "tally_stale_series") == {}


def test_a_series_is_hidden_only_once_older_than_the_ttl() -> None:
    p = folded(HIDE, [jobs(0, "a"), jobs(60, "b")])
    assert 'jobs_total{job="a"}' in samples(p, "jobs_total{")  # exactly ttl old: shown
    p.fold_events([jobs(60.5, "b")])
    assert 'jobs_total{job="a"}' not in samples(p, "jobs_total{")


def test_without_a_ttl_nothing_is_hidden() -> None:
    p = folded(ProjectionConfig(), [jobs(0, "a"), jobs(10_000, "b")])
    assert len(samples(p, "jobs_total{")) == 2


def test_hiding_keeps_the_state_and_renders_every_format_without_the_series() -> None:
    events: list[Event] = [jobs(0, "a", 5), jobs(100, "b")]
    hidden, shown = folded(HIDE, events), folded(ProjectionConfig(), events)
    assert msgspec.msgpack.encode(hidden.export_state()) == msgspec.msgpack.encode(
        shown.export_state()
    )
    for fmt in FORMATS:
        body = rendered(hidden, fmt)
        assert b"jobs_total" in body and body != rendered(shown, fmt), fmt
        assert rendered(hidden, fmt) == body  # rendering changes nothing


def test_catalogue_families_hide_labelled_series_but_never_singletons() -> None:
    p = folded(
        HIDE,
        [
            RunStarted(ts=0, run_id="r1", project="p", agent="claude"),
            RunFinished(ts=1, run_id="r1", project="p", agent="claude", duration_s=1.0),
            AgentFallback(ts=1, from_type="claude", to_type="codex"),
            ApiRequest(ts=1, method="GET", status=200),
            RunStarted(ts=100, run_id="r2", project="p", agent="codex"),
        ],
    )
    body = text(p)
    assert 'conductor_agent_runs_total{agent_type="codex"} 1' in body
    assert 'agent_type="claude"' not in body
    assert "conductor_agent_fallbacks_total{" not in body
    assert 'conductor_run_duration_seconds_count{agent="claude"' not in body
    assert "conductor_api_requests_total{" not in body
    assert "conductor_completed_runs_total 1" in body
    assert "conductor_active_runs_total 1" in body
    stale = samples(p, "tally_stale_series")
    assert stale == {
        'tally_stale_series{family="conductor_agent_fallbacks_total"}': "1",
        'tally_stale_series{family="conductor_agent_runs_total"}': "1",
        'tally_stale_series{family="conductor_api_requests_total"}': "1",
        'tally_stale_series{family="conductor_run_duration_seconds"}': "1",
    }
    # a series the server's own requests also count is never stale
    own = render_prometheus(p.families(api_requests={("GET", "200"): 3.0})).decode()
    assert 'conductor_api_requests_total{method="GET",status="200"} 4' in own


def test_api_requests_bumped_by_the_dispatch_loop_hide_but_are_never_forgotten() -> None:
    p = folded(FORGET, [ApiRequest(ts=t, method="GET", status=200) for t in (0, 1, 2)])
    p.fold_events([ApiRequest(ts=150, method="POST", status=201)])  # GET: 148 s quiet
    assert samples(p, "conductor_api_requests_total{") == {
        'conductor_api_requests_total{method="POST",status="201"}': "1",
    }
    state = p.export_state()
    assert state.api_requests == [("GET", 200, 3), ("POST", 201, 1)]
    assert state.api_requests_touched == [("GET", 200, 2.0), ("POST", 201, 150.0)]
    p.fold_events([ApiRequest(ts=t, method="GET", status=200) for t in (151, 152)])
    assert samples(p, "conductor_api_requests_total{") == {
        'conductor_api_requests_total{method="GET",status="200"}': "5",
        'conductor_api_requests_total{method="POST",status="201"}': "1",
    }


def loop_events() -> list[Event]:
    return [
        LoopStarted(ts=0, loop_id="done"),
        IterationCompleted(ts=1, loop_id="done", iteration=1, duration_s=1.0, success=True),
        LoopStopped(ts=10, loop_id="done"),
        LoopStarted(ts=0, loop_id="busy"),
        IterationCompleted(ts=2, loop_id="busy", iteration=1, duration_s=1.0, success=True),
        ResourceSample(ts=5, loop_id="orphan", rss_bytes=1, cpu_percent=1.0),  # never started
    ]


def test_a_stopped_loop_hides_ttl_after_it_stopped_a_running_one_never() -> None:
    p = folded(HIDE, loop_events())
    p.fold_events([jobs(70, "x")])  # 60 s after the stop: still shown
    assert 'ralph_loop_iterations_total{loop="done",result="success"}' in samples(p, "ralph_loop")
    p.fold_events([jobs(71, "x")])
    series = samples(p, "ralph_loop")
    assert not [s for s in series if 'loop="done"' in s or 'loop="orphan"' in s]
    assert series['ralph_loop_iterations_total{loop="busy",result="success"}'] == "1"
    assert series["ralph_loop_active_loops"] == "1"  # counts running loops, as before
    assert set(p.loops()) == {"busy"}  # the JSON roll-ups too
    stale = samples(p, "tally_stale_series")
    assert stale['tally_stale_series{family="ralph_loop_iterations_total"}'] == "2"
    # started again: back, its counters where they were
    p.fold_events([LoopStarted(ts=500, loop_id="done")])
    series = samples(p, "ralph_loop_iterations_total")
    assert series['ralph_loop_iterations_total{loop="done",result="success"}'] == "1"


# -- forgetting ---------------------------------------------------------------------------


def test_forgetting_frees_the_state_and_a_returning_series_starts_from_zero() -> None:
    p = folded(FORGET, [jobs(0, "a", 5), jobs(10, "b")])
    p.fold_events([jobs(150, "b")])  # a: 150 s quiet, past forget_after_s; b: 140 s
    (custom,) = p.export_state().custom
    assert isinstance(custom, CounterState)
    assert [v.labels for v in custom.values] == [("b",)]  # b was freed before its update
    p.fold_events([jobs(151, "a", 2)])
    assert samples(p, "jobs_total{") == {'jobs_total{job="a"}': "2", 'jobs_total{job="b"}': "1"}


def test_forgetting_frees_stopped_loops_and_catalogue_series() -> None:
    events = [
        *loop_events(),
        RunStarted(ts=0, run_id="r1", project="p", agent="claude"),
        AgentFallback(ts=1, from_type="claude", to_type="codex"),
        LoopStarted(ts=300, loop_id="late"),
    ]
    state = folded(FORGET, events).export_state()
    assert set(state.loops.loops) == {"busy", "late"}
    assert state.agent_runs == {} and state.fallbacks == []
    assert state.queued == [] and list(state.active) == ["r1"]  # not series: kept


def test_a_series_is_forgotten_at_the_first_sweep_boundary_past_forget_after() -> None:
    """Sweeps run every forget_after_s / 4 of event time: at 125 (boundary 125, cutoff 25)
    a series last changed at 20 is gone; one last changed at 30 is not."""
    p = folded(FORGET, [jobs(20, "a"), jobs(30, "b"), jobs(124.9, "c")])
    (custom,) = p.export_state().custom
    assert isinstance(custom, CounterState) and len(custom.values) == 3
    p.fold_events([jobs(125, "c")])
    (custom,) = p.export_state().custom
    assert isinstance(custom, CounterState)
    assert [v.labels for v in custom.values] == [("b",), ("c",)]


# -- determinism --------------------------------------------------------------------------


STALE = ProjectionConfig(series_ttl_s=2.0, forget_after_s=3.0, max_series_per_family=4)


@functools.cache
def workload() -> tuple[Event, ...]:
    return tuple(mixed_events(2_500, seed=11))  # about 25 s of event time


def everything(p: Projection) -> bytes:
    state = msgspec.msgpack.encode(p.export_state())
    return state + b"".join(rendered(p, fmt) for fmt in FORMATS)


@functools.cache
def one_pass() -> bytes:
    return everything(folded(STALE, list(workload())))


def test_the_workload_does_hide_and_forget() -> None:
    events = list(workload())
    assert one_pass() != everything(folded(ProjectionConfig(max_series_per_family=4), events))
    assert "tally_stale_series{" in text(folded(STALE, events[:1500]))


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=len(workload())), max_size=4),
    snapshot=st.booleans(),
)
def test_any_split_and_any_snapshot_gives_the_same_bytes(cuts: list[int], snapshot: bool) -> None:
    events = list(workload())
    p = Projection(STALE)
    start = 0
    for cut in sorted(cuts):
        p.fold_events(events[start:cut])
        p.offset = cut
        if cut % 2:  # rendering in between must not matter
            rendered(p, "prometheus")
        if snapshot:
            p, _ = decode_snapshot(encode_snapshot(p, bus_identity="b"), STALE)
        start = cut
    p.fold_events(events[start:])
    p.offset = 0
    assert everything(p) == one_pass()


def test_replays_until_a_time_hide_as_the_live_fold_did_at_that_clock(data_dir: Path) -> None:
    events = list(workload())
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        writer.append(events)
    until = events[1800].ts
    assert until is not None
    live = folded(STALE, [ev for ev in events if ev.ts is None or ev.ts <= until])
    replayed = replay(data_dir, config=STALE, until_ts=until)
    live.offset = replayed.offset
    assert "tally_stale_series{" in text(live)  # something is hidden at that clock
    two_cores = replay_parallel(data_dir, config=STALE, until_ts=until, min_bytes=0)
    for fmt in FORMATS:
        assert rendered(two_cores, fmt) == rendered(replayed, fmt), fmt
    for fmt in ("prometheus", "statsd"):  # no exemplars (they need the events' positions)
        assert rendered(replayed, fmt) == rendered(live, fmt), fmt


def test_replay_steps_hide_a_series_once_the_clock_leaves_it_behind(data_dir: Path) -> None:
    events: list[Event] = [jobs(0, "a", 5), *(jobs(t, "b") for t in range(0, 201, 10))]
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        writer.append(events)
    body = replay_steps(data_dir, config=HIDE, step_s=50.0).decode()

    def stamps(series: str) -> list[str]:
        return [line.rsplit(" ", 1)[1] for line in body.splitlines() if line.startswith(series)]

    # at 100 the clock is 100: a, updated at 0, is 100 s old; b is on every step
    assert stamps('jobs_total{job="a"}') == ["0.0", "50.0"]
    assert stamps('jobs_total{job="b"}') == ["0.0", "50.0", "100.0", "150.0", "200.0"]


# -- the helpers --------------------------------------------------------------------------


def test_hide_series_leaves_the_family_alone_and_skips_unlabelled_families() -> None:
    family = CounterFamily("x_total", "X.", ("k",))
    family.inc(("old",), now=1.0)
    family.inc(("new",), now=9.0)
    family.inc(("never",))  # not stamped: never stale
    view, hidden = hide_series(family, stale_before(family, 5.0))
    assert hidden == 1 and set(view.values) == {("new",), ("never",)}  # type: ignore[union-attr]
    assert len(family.values) == 3
    single = GaugeFamily("y", "Y.")
    single.set((), 1.0, now=0.0)
    assert hide_series(single, stale_before(single, 5.0)) == (single, 0)


def test_forget_series_frees_values_and_stamps() -> None:
    family = HistogramFamily("h_seconds", "H.", ("k",), bounds=(1.0,))
    family.observe(("old",), 0.5, now=1.0)
    family.observe(("new",), 0.5, now=9.0)
    assert forget_series(family, 5.0) == 1
    assert set(family.series) == set(family.touched) == {("new",)}


def test_an_overflowed_series_is_stamped_under_the_overflow_labels() -> None:
    family = CounterFamily("x_total", "X.", ("k",), max_series=1)
    family.inc(("a",), now=1.0)
    family.inc(("b",), now=2.0)
    assert family.touched == {("a",): 1.0, ("__overflow__",): 2.0}


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"series_ttl_s": -1.0}, "series_ttl_s: must be a number of seconds >= 0"),
        ({"forget_after_s": float("inf")}, "forget_after_s: must be a number of seconds >= 0"),
        ({"series_ttl_s": 60.0, "forget_after_s": 30.0}, "forget_after_s: 30.0 is less than"),
    ],
)
def test_bad_settings_are_errors_naming_the_key(settings_: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProjectionConfig(**settings_)  # type: ignore[arg-type]


def test_a_snapshot_restores_under_another_ttl_and_hides_by_the_new_one() -> None:
    p = folded(HIDE, [jobs(0, "a"), jobs(100, "b")])
    assert len(samples(p, "jobs_total{")) == 1
    again, _ = decode_snapshot(encode_snapshot(p), ProjectionConfig())
    assert len(samples(again, "jobs_total{")) == 2


def test_the_ttl_is_not_in_the_fingerprint_but_forgetting_is() -> None:
    base = ProjectionConfig().fingerprint()
    assert ProjectionConfig(series_ttl_s=30.0).fingerprint() == base
    assert ProjectionConfig(forget_after_s=30.0).fingerprint() != base
    assert ProjectionConfig(forget_after_s=0.0).fingerprint() == base
