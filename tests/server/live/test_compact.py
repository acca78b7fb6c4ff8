"""Compaction: fold, compact, fold again gives the same bytes; crashes; limits; both backends."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import anyio
import pytest

from bus.config import BusConfig, JetStreamConfig
from bus.contract import open_bus
from bus.events import Event
from bus.filebus import FileBus
from bus.retention import CUT_NAME, bytes_cut
from bus.segments import bus_dir, list_segments
from bus.writer import BusWriter
from projections.config import ProjectionConfig
from projections.exposition.formats import FORMATS, render
from projections.fold import Projection
from projections.snapshot import decode_snapshot, restamp_snapshot
from server.live import worker as worker_module
from server.live.compact import (
    CompactBusy,
    Compaction,
    _locked,
    base_dir,
    compact,
    list_bases,
)
from server.live.worker import ProjectionWorker
from server.parallel import replay_parallel
from server.replay import replay, replay_steps
from tests.support.nats import NatsServer, nats_server
from tests.support.serverproc import TALLY, tally
from tests.support.workload import mixed_events

__all__ = ["nats_server"]  # the fixture, used by name

CONFIG = ProjectionConfig()
BUS = BusConfig(durability="never", segment_bytes=16_000)
TOML = "[bus]\nsegment_bytes = 16000\ndurability = 'never'\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rendered(projection: Projection) -> dict[str, bytes]:
    """The projection in all four formats."""
    return {fmt: render(projection.families(), fmt, loops=projection.loops()) for fmt in FORMATS}


def write(data_dir: Path, events: list[Event], batch: int = 40) -> int:
    """Append ``events`` in small batches, a corrupt and an unknown line early on; the end."""
    with BusWriter(data_dir, BUS) as writer:
        for i in range(0, len(events), batch):
            writer.append(events[i : i + batch])
            if i == 200:  # before any cut the tests make: the base must carry their counts
                with list_segments(bus_dir(data_dir))[-1].path.open("ab") as fh:
                    fh.write(b'{"type":"loop_started","loop_id":\n{"type":"later_kind"}\n')
    return list_segments(bus_dir(data_dir))[-1].end


def fold(data_dir: Path, **kwargs: object) -> dict[str, bytes]:
    return rendered(replay(data_dir, config=CONFIG, bus_config=BUS, **kwargs))  # type: ignore[arg-type]


async def cut(data_dir: Path, **kwargs: object) -> tuple[int, list[str]]:
    async with FileBus(bus_dir(data_dir), data_dir, BUS) as bus:
        done = await compact(data_dir, bus, CONFIG, **kwargs)  # type: ignore[arg-type]
    assert done.base is not None
    return done.base.offset, done.removed


@pytest.fixture
def log(data_dir: Path) -> int:
    (data_dir / "tally.toml").write_text(TOML)
    return write(data_dir, list(mixed_events(3_000, seed=5)))


def test_fold_compact_fold_gives_the_same_bytes_in_every_format(data_dir: Path, log: int) -> None:
    before = fold(data_dir)
    assert b"tally_corrupt_lines_total 1" in before["prometheus"]
    assert b"tally_unknown_events_total 1" in before["prometheus"]
    segments = list_segments(bus_dir(data_dir))
    asked = segments[len(segments) // 2].base + 10
    base, removed = anyio.run(lambda: cut(data_dir, before=asked))
    assert base == segments[len(segments) // 2].base  # the highest cut point at or before
    assert removed == [seg.path.name for seg in segments[: len(segments) // 2]]
    assert list_segments(bus_dir(data_dir))[0].base == base
    assert fold(data_dir) == before
    assert rendered(replay_parallel(data_dir, config=CONFIG, bus_config=BUS, min_bytes=0)) == (
        before
    )
    # a second cut goes on from the first base; the older base goes once the new one is in
    second, _ = anyio.run(lambda: cut(data_dir, before=segments[-2].base))
    assert second > base
    assert [offset for offset, _ in list_bases(data_dir)] == [second]
    assert fold(data_dir) == before


def test_replays_as_of_a_point_after_the_base_are_unchanged(data_dir: Path, log: int) -> None:
    segments = list_segments(bus_dir(data_dir))
    until_offset = segments[-3].base + 1
    projection = replay(data_dir, config=CONFIG, bus_config=BUS)
    until_ts = projection.clock.now - 5
    at_offset = fold(data_dir, until_offset=until_offset)
    at_ts = fold(data_dir, until_ts=until_ts)
    anyio.run(lambda: cut(data_dir, before=segments[4].base))
    assert fold(data_dir, until_offset=until_offset) == at_offset
    assert fold(data_dir, until_ts=until_ts) == at_ts


def test_before_the_base_exits_2_naming_the_earliest_position_and_time(
    data_dir: Path, log: int
) -> None:
    segments = list_segments(bus_dir(data_dir))
    base, _ = anyio.run(lambda: cut(data_dir, before=segments[3].base))
    out = tally(data_dir, "compact", "--before", str(segments[3].base)).stdout.decode()
    assert f"base (unchanged) at position {base}, event time" in out  # nothing more to cut
    for args in (("--until-offset", "0"), ("--until-ts", "1700000000.5")):
        proc = tally(data_dir, "replay", *args, check=False)
        assert proc.returncode == 2
        err = proc.stderr.decode()
        assert f"the earliest this log can serve is position {base} (event time 17" in err


def _samples(text: bytes) -> dict[tuple[str, float], str]:
    """A ``--step`` history's samples: (series, timestamp) to value."""
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            series, value, ts = line.rsplit(" ", 2)
            out[(series, float(ts))] = value
    return out


def test_step_history_after_a_cut_is_the_whole_logs_from_the_base_on(
    data_dir: Path, log: int
) -> None:
    whole = _samples(replay_steps(data_dir, config=CONFIG, bus_config=BUS, step_s=5.0))
    segments = list_segments(bus_dir(data_dir))
    for at in (segments[3].base, segments[9].base):  # the second cut keeps the first's grid
        base, _ = anyio.run(lambda at=at: cut(data_dir, before=at))  # type: ignore[misc]
        clock = replay(data_dir, config=CONFIG, bus_config=BUS, until_offset=base).clock.now
        after = _samples(replay_steps(data_dir, config=CONFIG, bus_config=BUS, step_s=5.0))
        assert after == {key: v for key, v in whole.items() if key[1] >= clock}
        assert len({ts for _, ts in after}) < len({ts for _, ts in whole})


def test_step_history_of_a_base_without_the_logs_start_starts_at_its_clock(
    data_dir: Path, log: int
) -> None:
    segments = list_segments(bus_dir(data_dir))
    base, _ = anyio.run(lambda: cut(data_dir, before=segments[3].base))
    path = list_bases(data_dir)[0][1]  # as a base written before log_start was recorded
    path.write_bytes(restamp_snapshot(path.read_bytes(), log_start=None))
    clock = replay(data_dir, config=CONFIG, bus_config=BUS, until_offset=base).clock.now
    text = replay_steps(data_dir, config=CONFIG, bus_config=BUS, step_s=5.0).decode()
    first = next(line for line in text.splitlines() if line.startswith("tally_folded_offset"))
    assert first == f"tally_folded_offset_bytes {base} {clock}"


def test_older_than_cuts_by_event_time(data_dir: Path, log: int) -> None:
    before = fold(data_dir)
    out = tally(data_dir, "compact", "--older-than", "10s").stdout.decode()
    assert "new base at position" in out and "removed 00000000000000000000.jsonl" in out
    kept = list_segments(bus_dir(data_dir))[0]
    projection = replay(data_dir, config=CONFIG, bus_config=BUS)
    base = list_bases(data_dir)[0][0]
    assert base == kept.base
    older = replay(data_dir, config=CONFIG, bus_config=BUS, until_offset=base)
    assert older.clock.now <= projection.clock.now - 10  # what went is 10 s older than the newest
    with kept.path.open("rb") as fh:  # and the segment after the cut holds a younger event
        stamps = [float(line.rsplit(b'"ts":', 1)[1].rstrip(b"}\n")) for line in fh]
    assert max(stamps) > projection.clock.now - 10
    assert rendered(projection) == before
    proc = tally(data_dir, "compact", "--older-than", "soon", check=False)
    assert proc.returncode == 2 and "--older-than: invalid duration" in proc.stderr.decode()


def test_a_crash_at_any_step_leaves_a_log_that_replays_the_same(
    data_dir: Path, log: int, tmp_path: Path
) -> None:
    before = fold(data_dir)
    whole = tmp_path / "whole"
    shutil.copytree(data_dir, whole)
    segments = list_segments(bus_dir(data_dir))
    base, removed = anyio.run(lambda: cut(data_dir, before=segments[5].base))
    assert len(removed) == 5
    # the base written, no segment removed yet (no CUT either)
    state = tmp_path / "state-1"
    shutil.copytree(whole, state)
    shutil.copytree(base_dir(data_dir), base_dir(state), dirs_exist_ok=True)
    assert fold(state) == before
    # CUT written, some segments removed
    for k in range(1, 5):
        state = tmp_path / f"state-2-{k}"
        shutil.copytree(whole, state)
        shutil.copytree(base_dir(data_dir), base_dir(state), dirs_exist_ok=True)
        shutil.copy(bus_dir(data_dir) / CUT_NAME, bus_dir(state) / CUT_NAME)
        for seg in list_segments(bus_dir(state))[:k]:
            seg.path.unlink()
        assert fold(state) == before, k
        # and compacting it again finishes the cut
        again, _ = anyio.run(lambda state=state: cut(state, before=segments[5].base))  # type: ignore[misc]
        assert again == base
        assert list_segments(bus_dir(state))[0].base == base


def test_a_killed_tally_compact_leaves_a_log_that_replays_the_same(
    data_dir: Path, log: int, tmp_path: Path
) -> None:
    before = fold(data_dir)
    segments = list_segments(bus_dir(data_dir))
    command = [*TALLY, "compact", "--before", str(segments[-2].base), "--data-dir"]
    trial = tmp_path / "trial"  # how long a whole run takes here, to kill runs part way
    shutil.copytree(data_dir, trial)
    started = time.monotonic()
    subprocess.run([*command, str(trial)], check=True, capture_output=True)
    whole = time.monotonic() - started
    for fraction in (0.5, 0.8, 0.9, 0.97):
        proc = subprocess.Popen(
            [*command, str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(whole * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert fold(data_dir) == before, fraction
    tally(data_dir, "compact", "--before", str(segments[-2].base))
    assert list_segments(bus_dir(data_dir))[0].base == segments[-2].base
    assert fold(data_dir) == before


def test_a_base_folded_under_another_config_exits_2(data_dir: Path, log: int) -> None:
    segments = list_segments(bus_dir(data_dir))
    anyio.run(lambda: cut(data_dir, before=segments[3].base))
    (data_dir / "tally.toml").write_text(TOML + "[projections]\nloop_prefix = 'other'\n")
    proc = tally(data_dir, "replay", check=False)
    assert proc.returncode == 2
    assert "cannot be folded again under this config" in proc.stderr.decode()


def test_compaction_while_a_writer_appends_loses_nothing(data_dir: Path) -> None:
    events = list(mixed_events(4_000, seed=6))
    first, rest = events[:2_000], events[2_000:]
    with BusWriter(data_dir, BUS) as writer:
        for i in range(0, len(first), 40):
            writer.append(first[i : i + 40])

    def append_rest() -> None:
        with BusWriter(data_dir, BUS) as writer:
            for i in range(0, len(rest), 20):
                writer.append(rest[i : i + 20])

    appender = threading.Thread(target=append_rest)
    appender.start()
    try:
        for _ in range(3):
            end = list_segments(bus_dir(data_dir))[-1].base
            anyio.run(lambda end=end: cut(data_dir, before=end))  # type: ignore[misc]
    finally:
        appender.join()
    expected = Projection(CONFIG)
    expected.fold_events(events)
    expected.offset = list_segments(bus_dir(data_dir))[-1].end
    projection = replay(data_dir, config=CONFIG, bus_config=BUS)
    got, want = rendered(projection), rendered(expected)
    # formats without exemplars: the events were folded here without their positions
    assert got["prometheus"] == want["prometheus"] and got["statsd"] == want["statsd"]


@pytest.mark.anyio
async def test_one_compaction_at_a_time(data_dir: Path, log: int) -> None:
    with _locked(data_dir), pytest.raises(CompactBusy, match="another compaction"):
        await cut(data_dir, before=10**9)


def _done_at(compaction: Compaction | None, position: int) -> bool:
    return (
        compaction is not None
        and compaction.base is not None
        and compaction.base.offset == position
    )


@pytest.mark.anyio
async def test_the_server_applies_retain_bytes_after_a_checkpoint_and_restarts_from_the_base(
    data_dir: Path, log: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tally.compact")
    expected = rendered(await _replay(data_dir, None))
    expected_cut = bytes_cut([seg.base for seg in list_segments(bus_dir(data_dir))], log, 40_000)
    config = BusConfig(durability="never", segment_bytes=16_000, retain_bytes=40_000)
    async with FileBus(bus_dir(data_dir), data_dir, config) as bus:
        worker = ProjectionWorker(
            data_dir,
            bus,
            CONFIG,
            checkpoint_every_events=500,
            retain_bytes=40_000,
            hold_every_bytes=8_000,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            with anyio.fail_after(30):
                await worker.ready.wait()
                await worker.checkpoint()  # at the end: the cut is retain_bytes' own
                # the newest base is written before the segments go: wait for the whole cut
                while not _done_at(worker.last_compaction, expected_cut):
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        bases = [r.getMessage() for r in caplog.records if r.getMessage().startswith("base ")]
        assert bases and all("held by the live fold" in m for m in bases)  # no second fold
        assert all(h.offset > expected_cut for h in worker.held)
        segments = list_segments(bus_dir(data_dir))
        assert segments[0].base == expected_cut
        held = segments[-1].end - segments[0].base
        assert 40_000 <= held < 40_000 + 2 * 16_000
        for checkpoint in (data_dir / "snapshots").glob("*.snap"):
            checkpoint.unlink()  # a restart with only the base
        again = ProjectionWorker(data_dir, bus, CONFIG)
        async with anyio.create_task_group() as tg:
            await tg.start(again.run)
            with anyio.fail_after(30):
                await again.ready.wait()
            tg.cancel_scope.cancel()
        assert again.restored_from == segments[0].base
        assert rendered(again.projection) == expected


@pytest.mark.anyio
async def test_the_live_fold_holds_at_segment_starts_the_state_a_replay_to_there_gives(
    data_dir: Path, log: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "MAX_HELD", 8)  # 25 segments: thinned twice or more
    starts = [seg.base for seg in list_segments(bus_dir(data_dir))]
    async with FileBus(bus_dir(data_dir), data_dir, BUS) as bus:
        worker = ProjectionWorker(data_dir, bus, CONFIG, retain_bytes=10**12, hold_every_bytes=1)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            with anyio.fail_after(30):
                await worker.ready.wait()
            tg.cancel_scope.cancel()
    held = [h.offset for h in worker.held]
    assert len(starts) > 16 and 4 <= len(held) <= 8
    assert held == sorted(held) and set(held) <= set(starts[1:])
    assert held[-1] == starts[-1] and held[0] < starts[len(starts) // 2]  # thinned, spread
    for state in worker.held:
        projection, meta = decode_snapshot(state.data, CONFIG)
        assert meta.offset == state.offset
        replayed = await anyio.to_thread.run_sync(
            lambda at=state.offset: fold(data_dir, until_offset=at)  # type: ignore[misc]
        )
        assert rendered(projection) == replayed


@pytest.mark.anyio
async def test_compact_on_jetstream_purges_up_to_the_cut(
    nats_server: NatsServer, data_dir: Path
) -> None:
    url = f"{nats_server.url}/compact"
    events = list(mixed_events(1_500, seed=7))
    async with open_bus(url, data_dir, BUS) as bus:
        for i in range(0, len(events), 50):
            await bus.append(events[i : i + 50])
        before = rendered(await _replay(data_dir, url))
        positions = [p async for batch in bus.read(0) for p, _ in batch]
        done = await compact(data_dir, bus, CONFIG, before=positions[700])
        assert done.base is not None and done.removed
        assert await bus.first() == done.base.offset <= positions[700]
    assert rendered(await _replay(data_dir, url)) == before


async def _replay(data_dir: Path, url: str | None) -> Projection:
    from server.replay import replay_bus

    async with open_bus(url, data_dir, BUS) as bus:
        return await replay_bus(bus, config=CONFIG, data_dir=data_dir)


@pytest.mark.anyio
async def test_on_a_stream_whose_limits_delete_the_server_keeps_a_base(
    nats_server: NatsServer, data_dir: Path
) -> None:
    url = f"{nats_server.url}/limited"
    config = BusConfig(nats=JetStreamConfig(max_bytes=40_000))
    events = list(mixed_events(2_000, seed=8))
    async with open_bus(url, data_dir, config) as bus:
        worker = ProjectionWorker(data_dir, bus, CONFIG, keep_base=True)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            with anyio.fail_after(30):
                await worker.ready.wait()
                for i in range(0, len(events), 40):
                    await bus.append(events[i : i + 40])
                    end = await bus.end()
                    while worker.projection.offset < end:
                        await anyio.sleep(0.01)
                    await worker.checkpoint()
                while not list_bases(data_dir) or list_bases(data_dir)[0][0] < await bus.first():
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        first = await bus.first()
        assert first > 1 << 20  # the stream deleted its oldest messages
        assert list_bases(data_dir)[0][0] >= first
        live = rendered(worker.projection)
    assert rendered(await _replay(data_dir, url)) == live


def test_a_bad_retain_age_names_the_table_and_key(data_dir: Path) -> None:
    (data_dir / "tally.toml").write_text('[bus]\nretain_age = "0d"\n')
    proc = tally(data_dir, "compact", check=False)
    assert proc.returncode == 2
    assert "[bus]" in proc.stderr.decode() and "retain_age" in proc.stderr.decode()
    (data_dir / "tally.toml").write_text("")
    proc = tally(data_dir, "compact", check=False)
    assert proc.returncode == 2 and "give --before POSITION or --older-than" in proc.stderr.decode()


@pytest.mark.anyio
async def test_a_fold_that_finds_the_log_cut_ahead_of_it_goes_on_from_the_base(
    data_dir: Path, log: int
) -> None:
    expected = rendered(await _replay(data_dir, None))
    segments = list_segments(bus_dir(data_dir))
    async with FileBus(bus_dir(data_dir), data_dir, BUS) as bus:
        worker = ProjectionWorker(data_dir, bus, CONFIG)
        await worker.restore()  # nothing to restore yet; then the log is cut before the fold
        await compact(data_dir, bus, CONFIG, before=segments[5].base)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker._fold_forever)
            with anyio.fail_after(30):
                await worker.ready.wait()
            tg.cancel_scope.cancel()
    assert worker.restored_from == segments[5].base
    assert worker.skipped_from is None
    assert rendered(worker.projection) == expected
