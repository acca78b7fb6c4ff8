"""Replays from the log: as of now, of an offset, of a time; and stepped OpenMetrics history."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from bus.contract import open_bus
from bus.events import ApiRequest, BusMessage, Event, RunFinished
from bus.writer import BusConfig, BusWriter
from projections.config import ProjectionConfig
from projections.exposition.formats import FORMATS
from projections.exposition.jsonformat import render_json
from projections.exposition.prometheus import render_prometheus
from projections.fold import Projection
from projections.replay import DurationError, listed
from server.parallel import replay_parallel
from server.replay import replay, replay_steps
from tests.support.families import rendered
from tests.support.nats import NatsServer, nats_server
from tests.support.serverproc import tally
from tests.support.workload import mixed_events

__all__ = ["nats_server"]  # the fixture, used by name

CONFIG = ProjectionConfig()


def write(data_dir: Path, events: list[Event], batch: int = 500) -> list[int]:
    offsets: list[int] = []
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        for i in range(0, len(events), batch):
            offsets += writer.append(events[i : i + batch])
    return offsets


def folded(events: list[Event], offset: int, positions: list[int]) -> Projection:
    """``events`` folded in one go, at their ``positions`` in the log (exemplars point there)."""
    projection = Projection(CONFIG)
    projection.fold_events(events, listed(positions))
    projection.offset = offset
    return projection


def same(a: Projection, b: Projection) -> None:
    assert render_prometheus(a.families()) == render_prometheus(b.families())
    assert render_json(a.families(), loops=a.loops()) == render_json(b.families(), loops=b.loops())


@pytest.fixture
def log(data_dir: Path) -> tuple[list[Event], list[int], int]:
    events = list(mixed_events(4_000, seed=9))
    offsets = write(data_dir, events)
    end = (data_dir / "bus" / "00000000000000000000.jsonl").stat().st_size
    return events, offsets, end


def test_a_replay_equals_folding_the_events(
    data_dir: Path, log: tuple[list[Event], list[int], int]
) -> None:
    events, offsets, end = log
    projection = replay(data_dir, config=CONFIG)
    same(projection, folded(events, end, offsets))
    assert b' # {run_id="' in rendered(projection, "openmetrics")  # exemplars were compared


def test_until_ts_keeps_the_exemplars_of_the_events_it_keeps(data_dir: Path) -> None:
    """Exemplars as of a time: the latest observation per bucket among the events kept,
    each pointing at its own position, wherever the filter left gaps."""
    early = RunFinished(run_id="early", project="p", duration_s=4.0, ts=50.0)
    late = RunFinished(run_id="late", project="p", duration_s=4.5, ts=500.0)
    behind = RunFinished(run_id="behind", project="p", duration_s=4.2, ts=90.0)
    events: list[Event] = [early, late, behind]  # behind the clock, and kept
    offsets = write(data_dir, events, batch=3)
    projection = replay(data_dir, config=CONFIG, until_ts=100.0)
    text = rendered(projection, "openmetrics").decode()
    assert f'le="5.0"}} 2 # {{run_id="behind",offset="{offsets[2]}"}} 4.2 90.0\n' in text
    whole = rendered(replay(data_dir, config=CONFIG), "openmetrics").decode()
    assert f'le="5.0"}} 3 # {{run_id="behind",offset="{offsets[2]}"}} 4.2 90.0\n' in whole


def test_replay_of_an_empty_log(data_dir: Path) -> None:
    same(replay(data_dir, config=CONFIG), Projection(CONFIG))


@pytest.mark.parametrize("index", [0, 1, 1234, 3999])
def test_until_offset_keeps_the_events_starting_before_it(
    data_dir: Path, log: tuple[list[Event], list[int], int], index: int
) -> None:
    events, offsets, _ = log
    for until in (offsets[index], offsets[index] + 1):
        kept = [ev for ev, off in zip(events, offsets, strict=True) if off < until]
        projection = replay(data_dir, config=CONFIG, until_offset=until)
        next_start = offsets[len(kept)] if len(kept) < len(offsets) else projection.offset
        same(projection, folded(kept, next_start, offsets[: len(kept)]))


def test_until_ts_filters_every_event_even_out_of_order(data_dir: Path) -> None:
    events: list[Event] = [
        ApiRequest(ts=10.0, method="GET", status=200),
        ApiRequest(ts=30.0, method="GET", status=500),
        ApiRequest(ts=20.0, method="PUT", status=200),  # behind the clock, still before T
        BusMessage(ts=40.0, project="p", msg_type="x"),
        ApiRequest(ts=15.0, method="GET", status=201),
    ]
    offsets = write(data_dir, events, batch=2)
    projection = replay(data_dir, config=CONFIG, until_ts=20.0)
    kept = [(ev, o) for ev, o in zip(events, offsets, strict=True) if ev.ts and ev.ts <= 20.0]
    same(projection, folded([ev for ev, _ in kept], projection.offset, [o for _, o in kept]))
    assert projection.clock.now == 20.0


def test_progress_reports_bytes_up_to_the_total(
    data_dir: Path, log: tuple[list[Event], list[int], int]
) -> None:
    _, offsets, end = log
    seen: list[tuple[int, int]] = []
    replay(data_dir, config=CONFIG, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (end, end)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    seen.clear()
    replay(
        data_dir,
        config=CONFIG,
        until_offset=offsets[100],
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (offsets[100], offsets[100])


# -- stepped history -----------------------------------------------------------------


def samples(text: str, name: str) -> list[tuple[float, float]]:
    """(timestamp, value) of every sample line of an unlabelled series."""
    out = []
    for line in text.splitlines():
        match = re.fullmatch(rf"{name} (\S+) (\S+)", line)
        if match:
            out.append((float(match.group(2)), float(match.group(1))))
    return out


def test_steps_hold_the_state_at_each_boundary(
    data_dir: Path, log: tuple[list[Event], list[int], int]
) -> None:
    events, _, _ = log
    text = replay_steps(data_dir, config=CONFIG, step_s=5.0).decode()
    assert text.endswith("# EOF\n")
    points = samples(text, "conductor_messagebus_appends_total")
    t0 = events[0].ts
    last = events[-1].ts
    assert t0 is not None and last is not None
    stamps = [ts for ts, _ in points]
    assert stamps[0] == pytest.approx(t0)
    assert len(stamps) == math.ceil((last - t0) / 5.0) + 1
    assert stamps[-1] >= last
    for ts, value in points:  # the workload's ts ascend, so state at T = events with ts <= T
        want = sum(1 for ev in events if isinstance(ev, BusMessage) and ev.ts <= ts + 1e-9)  # type: ignore[operator]
        assert value == want, ts


def test_steps_of_an_empty_log(data_dir: Path) -> None:
    assert replay_steps(data_dir, config=CONFIG, step_s=60) == b"# EOF\n"


def test_steps_must_be_positive(data_dir: Path) -> None:
    with pytest.raises(DurationError):
        replay_steps(data_dir, config=CONFIG, step_s=0)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_imports_the_steps(
    data_dir: Path, log: tuple[list[Event], list[int], int], tmp_path: Path
) -> None:
    text = replay_steps(data_dir, config=CONFIG, step_s=2.0, until_offset=log[1][2000])
    source = tmp_path / "steps.om"
    source.write_bytes(text)
    result = subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(source),
            str(tmp_path / "db"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert any((tmp_path / "db").iterdir())


# -- the same events on both backends ---------------------------------------------------

FOLDED_OFFSET = "tally_folded_offset_bytes"


def positionless(output: bytes, fmt: str) -> bytes:
    """``output`` without the folded-offset gauge and the exemplars' ``offset`` labels: the
    values that are positions."""
    if fmt == "json":
        doc = json.loads(output)
        doc["families"] = [f for f in doc["families"] if f["name"] != FOLDED_OFFSET]
        for family in doc["families"]:
            for series in family["series"]:
                for exemplar in series.get("exemplars", {}).values():
                    exemplar["labels"]["offset"] = "?"
        return json.dumps(doc).encode()
    return re.sub(
        rb'offset="[0-9]+"',
        b'offset="?"',
        b"".join(
            line for line in output.splitlines(keepends=True) if FOLDED_OFFSET.encode() not in line
        ),
    )


def test_a_jetstream_replay_prints_what_a_file_replay_prints(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    events = list(mixed_events(6000, seed=4))
    file_dir, nats_dir = tmp_path / "file", tmp_path / "nats"
    url = f"{nats_server.url}/replay"

    stream_at: list[int] = []

    async def append_to_both() -> None:
        async with (
            open_bus(None, file_dir, BusConfig(durability="never")) as files,
            open_bus(url, nats_dir, BusConfig()) as stream,
        ):
            for start in range(0, len(events), 500):
                await files.append(events[start : start + 500])
                stream_at.extend(await stream.append(events[start : start + 500]))

    anyio.run(append_to_both)
    nats_dir.mkdir()  # the data directory (quarantine, tally.toml) is local on every backend
    until_ts = str(events[3000].ts)
    cases = [("--format", fmt) for fmt in FORMATS]
    cases += [("--step", "1m"), ("--format", "json", "--until-ts", until_ts)]
    for args in cases:
        fmt = args[1] if args[0] == "--format" else "openmetrics"
        from_files = tally(file_dir, "replay", *args).stdout
        from_stream = tally(nats_dir, "replay", "--bus", url, *args).stdout
        assert FOLDED_OFFSET.encode() in from_files
        assert positionless(from_stream, fmt) == positionless(from_files, fmt), args
    # exemplars point at the stream's own positions
    by_position = dict(zip(stream_at, events, strict=True))
    doc = json.loads(tally(nats_dir, "replay", "--bus", url, "--format", "json").stdout)
    pointed = [
        e["labels"]
        for f in doc["families"]
        for series in f["series"]
        for e in series.get("exemplars", {}).values()
    ]
    assert pointed
    for labels in pointed:
        event = by_position[int(labels["offset"])]
        assert labels.get("run_id", labels.get("loop_id")) in (
            getattr(event, "run_id", None),
            getattr(event, "loop_id", None),
        )
    two = replay_parallel(nats_dir, config=CONFIG, bus_url=url, min_bytes=0)
    one = replay(nats_dir, config=CONFIG, bus_url=url)
    for fmt in FORMATS:
        assert rendered(two, fmt) == rendered(one, fmt)
    assert not (nats_dir / "bus").exists()


def test_rules_apply_to_replays_as_of_a_past_time_and_to_steps(data_dir: Path) -> None:
    """A ``[[rules]]`` rule is part of the fold: ``--until-ts`` and ``--step`` apply it too."""
    (data_dir / "tally.toml").write_text(
        "[[rules]]\n"
        'name = "exits"\n'
        'on = "run_finished"\n'
        'family = "run_exit_codes_total"\n'
        'kind = "counter"\n'
        'labels = { code = "exit_code" }\n'
        'help = "Finished runs by exit code."\n'
    )
    lines = [
        {
            "type": "run_finished",
            "ts": 100.0 + i,
            "run_id": f"r{i}",
            "project": "p",
            "exit_code": i % 2,
        }
        for i in range(6)
    ]
    emitted = tally(
        data_dir, "emit", "-", stdin="".join(json.dumps(x) + "\n" for x in lines).encode()
    )
    assert emitted.returncode == 0, emitted.stderr
    everything = tally(data_dir, "replay").stdout.decode()
    assert 'run_exit_codes_total{code="0"} 3' in everything
    assert 'run_exit_codes_total{code="1"} 3' in everything
    past = tally(data_dir, "replay", "--until-ts", "102").stdout.decode()  # r0, r1, r2
    assert 'run_exit_codes_total{code="0"} 2' in past
    assert 'run_exit_codes_total{code="1"} 1' in past
    steps = tally(data_dir, "replay", "--step", "2s").stdout.decode()
    at = [
        float(m.group(1))
        for m in re.finditer(r'^run_exit_codes_total\{code="0"\} (\S+) 102(?:\.0+)?$', steps, re.M)
    ]
    assert at == [2.0]  # the step at ts 102 holds r0 and r2 (exit 0), and only those
