"""``GET /api/v1/history`` in process over real parts: a real file bus on a real data
directory, the live worker folding it, the app's routing. Judged against ``StepFold`` (what
``tally replay --step`` says) on the same log read back, and against ``/api/v1/log``."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from bus.config import BusConfig
from bus.contract import Bus, open_bus
from bus.events import LoopStarted, MetricUpdate, encode_events
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.metrics.summary import AnyFamily
from projections.replay import StepFold
from projections.snapshot import decode_snapshot, encode_snapshot, read_snapshot_meta
from server import history
from server.app import App
from server.history import HistoryService, Keyframe, Keyframes, keyframe_dir
from server.http.routing import Request, Response
from server.live.compact import compact
from server.live.group_commit import GroupCommitter
from server.live.sse import SseHub, series_payload
from server.live.worker import ProjectionWorker
from tests.support.workload import mixed_events

pytestmark = pytest.mark.anyio

START = 1_700_000_000.0


@asynccontextmanager
async def live_app(
    data_dir: Path, config: BusConfig | None = None
) -> AsyncIterator[tuple[App, Bus]]:
    """The app over the file bus of ``data_dir``, its worker caught up."""
    async with open_bus(None, data_dir, config or BusConfig()) as bus:
        worker = ProjectionWorker(data_dir, bus, ProjectionConfig())
        hub = SseHub(worker.projection.families, lambda: worker.projection.offset)
        committer = GroupCommitter(bus)
        async with anyio.create_task_group() as services:
            await services.start(committer.run)
            await services.start(worker.run)
            await worker.ready.wait()
            yield App(worker, committer, hub), bus
            services.cancel_scope.cancel()


async def append_mixed(bus: Bus, n: int) -> None:
    first = LoopStarted(ts=START, loop_id="first")  # StepFold's t0: a whole second
    events = [first, *mixed_events(n, seed=5, start_ts=START)]
    for i in range(0, len(events), 500):
        chunk = events[i : i + 500]
        await bus.append_encoded(encode_events(chunk), len(chunk))


async def caught_up(app: App, bus: Bus) -> None:
    end = await bus.end()
    with anyio.fail_after(10):
        while app.worker.projection.offset < end:
            await anyio.sleep(0.01)


async def get(app: App | HistoryService, target: str) -> Response:
    path = target.partition("?")[0]
    request = Request("GET", target, path, {}, [], b"", "t")
    if isinstance(app, HistoryService):
        return await app.handle(request)
    return await app(request)


async def get_json(app: App | HistoryService, target: str) -> dict[str, Any]:
    response = await get(app, target)
    assert response.status == 200, response.body
    doc: dict[str, Any] = json.loads(response.body)
    return doc


class _Recorder:
    """Stands in for StepFold's OpenMetrics history: each sample set as JSON payloads."""

    def __init__(self) -> None:
        self.points: dict[float, dict[tuple[str, str], Any]] = {}

    def add(self, timestamp: float, families: list[AnyFamily]) -> None:
        state = {}
        for family in families:
            holder = family.values if hasattr(family, "values") else family.series
            for labels in holder:
                payload = json.loads(msgspec.json.encode(series_payload(family, labels)))
                key = (payload.pop("name"), json.dumps(payload.pop("labels"), sort_keys=True))
                del payload["type"]
                state[key] = payload
        self.points[timestamp] = state


async def step_fold_points(bus: Bus, step_s: float) -> dict[float, dict[tuple[str, str], Any]]:
    """What ``tally replay --step`` says of the whole log at each boundary, as payloads."""
    steps = StepFold(config=ProjectionConfig(), step_s=step_s)
    recorder = _Recorder()
    steps.history = recorder  # type: ignore[assignment]
    async for batch in bus.read(0):
        steps.add(batch)
    return recorder.points


def points_at(doc: dict[str, Any], k: int) -> dict[tuple[str, str], Any]:
    """A history answer's point ``k`` of every series that has one, keyed as ``_Recorder``'s."""
    return {
        (s["name"], json.dumps(s["labels"], sort_keys=True)): s["points"][k]
        for s in doc["series"]
        if s["points"][k] is not None
    }


async def test_history_says_what_replay_step_says_and_its_positions_lead_to_the_events(
    data_dir: Path,
) -> None:
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, 4000)
        await caught_up(app, bus)
        doc = await get_json(app, "/api/v1/history?since=2m&step=2s")
        expected = await step_fold_points(bus, 2.0)

        clock = app.worker.projection.clock.now
        assert doc["to"] == clock and doc["from"] == clock - 120 and doc["step"] == 2.0
        assert doc["timestamps"][0] >= doc["from"] and doc["timestamps"][-1] < doc["to"]
        assert all(t % 2 == 0 for t in doc["timestamps"])
        assert len(doc["positions"]) == len(doc["timestamps"])
        for series in doc["series"]:
            assert len(series["points"]) == len(doc["timestamps"])
        # every boundary's state is StepFold's (boundaries t0 + 2k: aligned, t0 a whole second)
        compared = 0
        for k, t in enumerate(doc["timestamps"]):
            if t < START:
                continue
            assert points_at(doc, k) == expected[t], t
            compared += 1
        assert compared > 10
        # the events behind a point: those between the positions of two boundaries
        inside = [k for k, t in enumerate(doc["timestamps"]) if t > START + 2]
        k = inside[len(inside) // 2]
        lo, hi = doc["positions"][k - 1], doc["positions"][k]
        log = await get_json(app, f"/api/v1/log?from={lo}&to={hi}&limit=1000")
        assert log["events"] and log["events"][0]["position"] == lo
        for item in log["events"]:
            assert lo <= item["position"] < hi
        clock_at = max(e["event"]["ts"] for e in log["events"])
        assert doc["timestamps"][k - 1] < clock_at <= doc["timestamps"][k]


async def test_match_keeps_families_by_prefix_and_default_step_keeps_240_points(
    data_dir: Path,
) -> None:
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, 2000)
        await caught_up(app, bus)
        doc = await get_json(
            app, "/api/v1/history?match=conductor_completed&match=ralph_loop_iterations&since=4m"
        )
        assert doc["step"] == 1.0 and len(doc["timestamps"]) == 240
        names = {s["name"] for s in doc["series"]}
        assert names == {
            "conductor_completed_runs_total",
            "ralph_loop_iterations_total",
            "ralph_loop_iterations_with_progress_total",
        }
        kinds = {s["name"]: s["type"] for s in doc["series"]}
        assert kinds["conductor_completed_runs_total"] == "counter"
        everything = await get_json(app, "/api/v1/history?since=4m")
        assert len(everything["series"]) > len(doc["series"])


async def test_a_second_query_folds_only_the_new_tail(data_dir: Path) -> None:
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, 3000)
        await caught_up(app, bus)
        first = await get_json(app, "/api/v1/history?since=1m&step=1s")
        assert first["folded_events"] > 2000  # from the log's start: no keyframe yet
        again = await get_json(app, "/api/v1/history?since=1m&step=1s")
        assert again["folded_events"] == 0
        assert again["series"] == first["series"]
        later = [
            MetricUpdate(ts=first["to"] + 1 + i, name="tail_total", kind="counter", value=1.0)
            for i in range(5)
        ]
        await bus.append_encoded(encode_events(later), len(later))
        await caught_up(app, bus)
        tail = await get_json(app, "/api/v1/history?since=1m&step=1s")
        assert tail["folded_events"] == 5
        assert tail["timestamps"][-1] == math.ceil(first["to"]) + 4
        ours = next(s for s in tail["series"] if s["name"] == "tail_total")
        assert [p and p["value"] for p in ours["points"][-5:]] == [None, 1.0, 2.0, 3.0, 4.0]
        assert app.history.stats.runs_started == 1
        status = json.loads((await get(app, "/api/v1/status")).body)["history"]
        assert status["queries"] == 3 and status["events_folded"] == first["folded_events"] + 5


async def test_a_new_query_starts_from_a_keyframe_not_the_log_start(data_dir: Path) -> None:
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, 6000)
        await caught_up(app, bus)
        app.history.keyframes = Keyframes(spacing_s=10.0)
        whole = await get_json(app, "/api/v1/history?since=2m&step=1s")
        assert whole["folded_events"] > 5000
        assert len(app.history.keyframes.frames) >= 4
        recent = await get_json(app, "/api/v1/history?since=20s&step=1s&match=ralph")
        assert recent["folded_events"] < 3000  # from a keyframe at most 10 s before `from`
        assert app.history.stats.runs_started == 2
        assert recent["timestamps"] == whole["timestamps"][-len(recent["timestamps"]) :]
        for series in recent["series"]:
            same = next(
                s
                for s in whole["series"]
                if (s["name"], s["labels"]) == (series["name"], series["labels"])
            )
            assert series["points"] == same["points"][-len(series["points"]) :]


async def kept_keyframes(
    data_dir: Path, n: int, query: str
) -> tuple[dict[str, Any], list[Keyframe]]:
    """A server over ``n`` events answers ``query``, keeping keyframes 10 s apart on disk."""
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, n)
        await caught_up(app, bus)
        app.history.keyframes = Keyframes(directory=keyframe_dir(data_dir), spacing_s=10.0)
        return await get_json(app, query), app.history.keyframes.frames


async def test_keyframes_kept_on_disk_let_a_restarted_server_start_near_the_query(
    data_dir: Path,
) -> None:
    frames = keyframe_dir(data_dir)
    query = "/api/v1/history?since=20s&step=1s&match=ralph"
    before, held = await kept_keyframes(data_dir, 6000, query)
    assert before["folded_events"] > 5000  # no keyframe yet: from the log's start
    kept = sorted(p.name for p in frames.iterdir())
    assert len(kept) >= 4 and kept == [f"{f.position:020d}.snap" for f in held]
    async with live_app(data_dir) as (app, bus):
        app.history.keyframes = Keyframes(directory=frames, spacing_s=10.0)
        assert await app.history.keyframes.load(bus, ProjectionConfig()) == len(kept)
        after = await get_json(app, query)
        assert after["folded_events"] < 3000  # from a keyframe at most 10 s before `from`
        assert {k: v for k, v in after.items() if k != "folded_events"} == {
            k: v for k, v in before.items() if k != "folded_events"
        }


async def test_keyframes_of_another_log_or_config_or_cut_short_are_not_taken_back(
    data_dir: Path,
) -> None:
    frames = keyframe_dir(data_dir)
    _, held = await kept_keyframes(data_dir, 3000, "/api/v1/history?since=30m&step=1s")
    assert len(held) >= 3
    good, other_config, other_log = (frames / f"{f.position:020d}.snap" for f in held[:3])
    data = other_config.read_bytes()
    projection, _ = decode_snapshot(data, ProjectionConfig())
    meta = read_snapshot_meta(data)
    elsewhere = Projection(ProjectionConfig(max_series_per_family=7))
    elsewhere.offset = meta.offset
    other_config.write_bytes(encode_snapshot(elsewhere, bus_identity=meta.bus_identity))
    other_log.write_bytes(encode_snapshot(projection, bus_identity="another log"))
    (frames / "00000000000000000123.snap").write_bytes(b"\x00 torn")
    (frames / f".{good.name}.77.tmp").write_bytes(b"cut short")
    async with open_bus(None, data_dir, BusConfig()) as bus:
        again = Keyframes(directory=frames, spacing_s=10.0)
        assert await again.load(bus, ProjectionConfig()) == len(held) - 2
    assert good.exists() and not other_config.exists() and not other_log.exists()
    assert sorted(p.name for p in frames.iterdir()) == [
        f"{f.position:020d}.snap" for f in again.frames
    ]


async def test_a_query_past_its_fold_budget_is_503_and_goes_on_when_asked_again(
    data_dir: Path,
) -> None:
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, 3000)
        await caught_up(app, bus)
        unbounded = await get_json(app, "/api/v1/history?since=40s&step=1s")
        service = HistoryService(app.worker, max_fold_events=1)  # one batch per query
        answers = []
        while True:
            response = await get(service, "/api/v1/history?since=40s&step=1s")
            answers.append(response.status)
            if response.status == 200:
                break
            assert response.status == 503
            assert ("retry-after", "1") in response.headers
            assert "still folding the log" in json.loads(response.body)["error"]
            assert len(answers) < 100
        assert answers[-1] == 200 and answers.count(503) >= 2
        doc = json.loads(response.body)
        assert doc["series"] == unbounded["series"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("since=0", "since"),
        ("since=-5m", "since"),
        ("since=abc", "since"),
        ("step=0s", "step"),
        ("step=1y", "step"),
        ("since=1h&step=1s", "step"),  # 3600 boundaries
        ("step=1s&step=2s", "step"),
    ],
)
async def test_bad_parameters_are_400_naming_them(data_dir: Path, query: str, param: str) -> None:
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, 200)
        await caught_up(app, bus)
        response = await get(app, f"/api/v1/history?{query}")
    assert response.status == 400
    assert json.loads(response.body)["error"].startswith(f"{param}: ")


async def test_an_empty_log_has_no_history(data_dir: Path) -> None:
    async with live_app(data_dir) as (app, _):
        doc = await get_json(app, "/api/v1/history")
    assert doc == {
        "from": -3600.0,
        "to": 0.0,
        "step": 15.0,
        "timestamps": [],
        "positions": [],
        "series": [],
        "series_left_out": False,
        "folded_events": 0,
    }


def test_keyframes_are_spaced_and_bounded() -> None:
    frames = Keyframes(spacing_s=10.0, max_count=3)
    projection = Projection(ProjectionConfig())
    for ts in (100.0, 105.0, 110.0, 130.0, 150.0, 170.0):
        projection.fold_events([LoopStarted(ts=ts, loop_id="a")])
        frames.add(projection)
    assert [f.clock for f in frames.frames] == [130.0, 150.0, 170.0]  # 105: too close
    assert frames.nbytes == sum(len(f.data) for f in frames.frames)
    at = frames.at_or_before(160.0)
    assert at is not None and at.clock == 150.0
    assert frames.at_or_before(129.0) is None
    small = Keyframes(spacing_s=1.0, max_bytes=len(frames.frames[0].data) * 2)
    for ts in (200.0, 300.0, 400.0):
        projection.fold_events([LoopStarted(ts=ts, loop_id="a")])
        small.add(projection)
    assert [f.clock for f in small.frames] == [300.0, 400.0]


async def test_a_history_holds_a_bounded_number_of_series(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "MAX_SERIES", 5)
    async with live_app(data_dir) as (app, bus):
        await append_mixed(bus, 500)
        await caught_up(app, bus)
        doc = await get_json(app, "/api/v1/history?since=10s&step=1s")
    assert len(doc["series"]) == 5 and doc["series_left_out"] is True


async def test_after_a_compaction_history_starts_at_the_base_and_agrees_with_the_whole_log(
    data_dir: Path,
) -> None:
    small = BusConfig(segment_bytes=64 * 1024)
    async with live_app(data_dir, small) as (app, bus):
        await append_mixed(bus, 6000)
        await caught_up(app, bus)
        expected = await step_fold_points(bus, 2.0)
        end = await bus.end()
        done = await compact(data_dir, bus, ProjectionConfig(), before=end // 2)
        assert done.base is not None and done.removed and await bus.first() > 0
        base_clock, base_position = done.base.clock, done.base.offset
    async with live_app(data_dir, small) as (app, bus):  # a restart: no keyframe before the base
        doc = await get_json(app, "/api/v1/history?since=10m&step=2s")
        assert doc["timestamps"][0] == (math.floor(base_clock / 2.0) + 1) * 2.0
        for k, t in enumerate(doc["timestamps"]):
            assert points_at(doc, k) == expected[t], t
        again = await get_json(app, "/api/v1/history?since=10m&step=2s")
        assert again["folded_events"] == 0  # the run that starts at the base is reused
        assert again["timestamps"] == doc["timestamps"]
        status = await get_json(app, "/api/v1/status")
        assert status["base_position"] == base_position
