"""The fold's hot loop: the compiled loop (``_dispatch.c``) keeps the reference's contract,
event for event, and a projection folded by either renders the same bytes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.events import (
    ApiRequest,
    BusMessage,
    ContextUsage,
    Event,
    EventBase,
    IterationCompleted,
    MetricsReset,
    MetricUpdate,
    RunFinished,
    RunStarted,
    SessionEnded,
)
from projections import dispatch
from projections.config import ProjectionConfig
from projections.dispatch import FoldRun, FoldSpec, fold_run_python
from projections.fold import Projection
from projections.replay import listed
from tests.support.families import rendered
from tests.support.workload import mixed_events

FORMATS = ("prometheus", "openmetrics", "json", "statsd")


def test_the_compiled_loop_is_built() -> None:
    """``pip install`` builds it wherever a C compiler is (CI has one): replay speed needs it."""
    assert dispatch.COMPILED, "projections/_dispatch.c was not built: reinstall with a compiler"
    assert dispatch.fold_run is not fold_run_python


def test_an_install_without_the_compiled_loop_replays_the_same(data_dir: Path) -> None:
    """Where ``_dispatch`` cannot be imported, the fold runs the reference loop, same output."""
    from bus.writer import BusConfig, BusWriter

    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        writer.append(list(mixed_events(4000, seed=5)))
    script = (
        "import sys\n"
        "if sys.argv[1] == 'without':\n"
        "    sys.modules['projections._dispatch'] = None  # what a failed build leaves\n"
        "from projections import dispatch\n"
        "from server.cli import main\n"
        "print(dispatch.COMPILED, flush=True)\n"
        "main(['replay', '--data-dir', sys.argv[2], '--format', 'openmetrics', '--jobs', '1'])\n"
    )
    out = {}
    for mode in ("with", "without"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode, str(data_dir)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        out[mode] = done.stdout
    assert out["with"].startswith(b"True\n")
    assert out["without"].startswith(b"False\n")
    assert out["with"][5:] == out["without"][6:]
    assert out["with"].endswith(b"# EOF\n")


def compiled() -> FoldRun:
    from projections._dispatch import fold_run

    return fold_run


RUNS = {"reference": lambda: fold_run_python, "compiled": compiled}


@pytest.fixture(params=sorted(RUNS))
def run(request: pytest.FixtureRequest) -> FoldRun:
    make = RUNS[request.param]
    return make()


class Recorder:
    """A spec whose handlers write down what they were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.cursor = [-1]  # the index of the event an indexed handler is called for
        self.indices: list[int] = []
        self.api: dict[str, dict[int, int]] = {"GET": {200: 5}}
        self.api_touched: dict[str, dict[int, Any]] = {"GET": {200: 0.0}}
        self.types: tuple[type, ...] = (
            ApiRequest,
            BusMessage,
            RunStarted,
            ContextUsage,
            MetricsReset,
        )
        self.spec = FoldSpec(
            types=self.types,
            handlers=(None, None, self.handler("run"), None, None),
            api=self.api,
            api_miss=self.handler("api_miss"),
            api_type=ApiRequest,
            bus_type=BusMessage,
            stop_type=MetricsReset,
            ts_field=EventBase.ts,
            method_field=ApiRequest.method,
            status_field=ApiRequest.status,
            indexed=(RunStarted,),
            cursor=self.cursor,
            api_touched=self.api_touched,
        )

    def handler(self, name: str) -> Any:
        def record(ev: Any, now: Any) -> None:
            self.calls.append((name, ev, now))
            if type(ev) in self.spec.indexed:
                self.indices.append(self.cursor[0])

        return record


def test_dispatch_counts_and_the_clock(run: FoldRun) -> None:
    r = Recorder()
    started = RunStarted(run_id="r", project="p", ts=12.0)
    new_api = ApiRequest(method="POST", status=201, ts=9.0)  # behind the clock
    events: list[Any] = [
        ApiRequest(method="GET", status=200, ts=10.0),  # a known series: bumped in place
        BusMessage(project="p", msg_type="FACT", ts=math.nan),  # never moves the clock
        new_api,
        started,
        ContextUsage(loop_id="l", percent=1.0, ts=math.inf),  # a tick: its ts is not finite
        BusMessage(project="p", msg_type="FACT"),  # unstamped
    ]
    now, stop, counts = run(events, 0, 1.0, r.spec)
    assert (now, stop, counts) == (12.0, 6, (2, 2, 1, 1, 0))
    assert r.api == {"GET": {200: 6}}
    assert r.api_touched == {"GET": {200: 10.0}}  # stamped with the clock of the bump
    assert r.calls == [("api_miss", new_api, 10.0), ("run", started, 12.0)]


def test_a_method_without_stamps_goes_to_the_handler(run: FoldRun) -> None:
    r = Recorder()
    r.api_touched.clear()
    event = ApiRequest(method="GET", status=200, ts=3.0)
    run([event], 0, 1.0, r.spec)
    assert r.api == {"GET": {200: 5}}
    assert r.calls == [("api_miss", event, 3.0)]


def test_stops_at_a_reset_counted_with_its_ts_read(run: FoldRun) -> None:
    r = Recorder()
    late = RunStarted(run_id="r", project="p", ts=30.0)
    events: list[Any] = [
        BusMessage(project="p", msg_type="FACT", ts=5.0),
        MetricsReset(prefix="", ts=20.0),
        late,
    ]
    assert run(events, 0, 0.0, r.spec) == (20.0, 1, (0, 1, 0, 0, 1))
    assert r.calls == []
    assert run(events, 2, 20.0, r.spec) == (30.0, 3, (0, 0, 1, 0, 0))
    assert r.calls == [("run", late, 30.0)]
    assert run(events, 9, 30.0, r.spec) == (30.0, 3, (0, 0, 0, 0, 0))  # past the end


def test_an_indexed_handler_is_told_its_events_index(run: FoldRun) -> None:
    """Exemplars record where their event is: its index in the list, from ``start`` on."""
    r = Recorder()
    events: list[Any] = [
        RunStarted(run_id="a", project="p", ts=1.0),
        BusMessage(project="p", msg_type="FACT", ts=2.0),
        RunStarted(run_id="b", project="p", ts=3.0),
        ContextUsage(loop_id="l", percent=1.0, ts=4.0),
        RunStarted(run_id="c", project="p", ts=5.0),
    ]
    run(events, 0, 0.0, r.spec)
    run(events, 3, 0.0, r.spec)
    assert r.indices == [0, 2, 4, 4]
    run(events, 0, 0.0, r.spec._replace(indexed=()))  # not indexed: the cursor is left alone
    assert r.indices == [0, 2, 4, 4, 4, 4, 4]


def test_integer_and_missing_timestamps_compare_as_python_does(run: FoldRun) -> None:
    r = Recorder()
    started = RunStarted(run_id="r", project="p", ts=7)  # an int: Structs built in code
    events: list[Any] = [started, RunStarted(run_id="s", project="p")]
    now, _, _ = run(events, 0, 3, r.spec)
    assert now == 7 and type(now) is int
    assert [call[2] for call in r.calls] == [7, 7]


def test_an_unknown_class_raises_after_folding_what_precedes_it(run: FoldRun) -> None:
    r = Recorder()
    started = RunStarted(run_id="r", project="p", ts=1.0)
    events: list[Any] = [started, RunFinished(run_id="r", project="p", ts=2.0)]
    with pytest.raises(KeyError):
        run(events, 0, 0.0, r.spec)
    assert r.calls == [("run", started, 1.0)]


def test_a_handler_error_propagates(run: FoldRun) -> None:
    r = Recorder()

    def fail(ev: Any, now: Any) -> None:
        raise RuntimeError("handler failed")

    spec = r.spec._replace(handlers=(None, None, fail, None, None))
    with pytest.raises(RuntimeError, match="handler failed"):
        run([RunStarted(run_id="r", project="p")], 0, 0.0, spec)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"types": (ApiRequest, BusMessage, int, ContextUsage, MetricsReset)}, "event type"),
        ({"handlers": (None,)}, "differ"),
        ({"ts_field": "ts"}, "member descriptor"),
        ({"method_field": MetricUpdate.name}, "no method"),
        ({"cursor": []}, "cursor"),
        ({"api_touched": []}, "api_touched must be a dict"),
    ],
)
def test_the_compiled_loop_refuses_a_spec_it_cannot_read_safely(
    change: dict[str, Any], message: str
) -> None:
    spec = Recorder().spec._replace(**change)
    with pytest.raises(TypeError, match=message):
        compiled()([ApiRequest(method="GET", status=200)], 0, 0.0, spec)
    with pytest.raises(TypeError, match="FoldSpec"):
        compiled()([], 0, 0.0, tuple(spec)[:3])  # type: ignore[arg-type]


# -- whole projections ------------------------------------------------------------

ODD_TS = st.sampled_from([None, math.nan, math.inf, -math.inf, 0, 1.5, 1_700_000_000.0, 2e9])


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    """A mixed log with resets, unstamped, non-finite, integer and out-of-order times."""
    events: list[Event] = list(
        mixed_events(draw(st.integers(0, 3000)), seed=draw(st.integers(0, 10**6)))
    )
    odd: list[Event] = [
        ApiRequest(method="PATCH", status=draw(st.integers(100, 599)), ts=draw(ODD_TS)),
        BusMessage(project="p", msg_type="FACT", ts=draw(ODD_TS)),
        MetricsReset(prefix=draw(st.sampled_from(["", "conductor_", "app_", "ralph_loop_"]))),
        RunStarted(run_id="odd", project="p", ts=draw(ODD_TS)),
        RunFinished(run_id="odd", project="p", status="failed", ts=draw(ODD_TS)),
        SessionEnded(loop_id="ralph-a", session_id="s", ts=draw(ODD_TS)),
        IterationCompleted(
            loop_id="ralph-z", iteration=1, duration_s=2.0, success=False, ts=draw(ODD_TS)
        ),
        MetricUpdate(name="app_odd_seconds", kind="summary", value=1.0, ts=draw(ODD_TS)),
    ]
    for ev in draw(st.lists(st.sampled_from(odd), max_size=40)):
        events.insert(draw(st.integers(0, len(events))), ev)
    return events


def fold(events: list[Event], run: FoldRun, cuts: list[int], config: ProjectionConfig) -> bytes:
    p = Projection(config, run=run)
    for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True):
        p.fold_events(events[a:b], listed([7 + 10 * i for i in range(a, b)]))  # exemplars too
    state = msgspec.msgpack.encode(p.export_state())
    return state + b"".join(rendered(p, fmt) for fmt in FORMATS)


@settings(max_examples=60, deadline=None)
@given(
    events=logs(),
    data=st.data(),
    max_series=st.sampled_from([2, 10_000]),
    stale=st.sampled_from([(0.0, 0.0), (2.0, 0.0), (1.0, 3.0)]),
)
def test_both_loops_leave_the_same_projection(
    events: list[Event], data: st.DataObject, max_series: int, stale: tuple[float, float]
) -> None:
    """Also with stale series hidden (series_ttl_s) and forgotten (forget_after_s)."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=5)))
    ttl, forget = stale
    config = ProjectionConfig(
        max_series_per_family=max_series, series_ttl_s=ttl, forget_after_s=forget
    )
    reference = fold(events, fold_run_python, cuts, config)
    assert fold(events, compiled(), cuts, config) == reference
    assert fold(events, compiled(), [], config) == fold(events, fold_run_python, [], config)
