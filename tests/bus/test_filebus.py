"""FileBus beyond the contract: read-only use creates nothing; the de-duplication window."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from bus.config import BusConfig
from bus.contract import open_bus
from bus.dedup import MSGIDS_NAME, IdRecord, RecentIds
from bus.events import LoopStarted
from bus.filebus import FileBus
from bus.segments import bus_dir

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_reading_creates_no_directory_and_no_lock(data_dir: Path) -> None:
    async with open_bus(None, data_dir, BusConfig()) as bus:
        assert [batch async for batch in bus.read(0)] == []
        assert await bus.end() == await bus.first() == 0
        await bus.identity(0)
        await bus.sync()
    assert list(data_dir.iterdir()) == []


async def test_file_url_puts_the_segments_there_and_the_quarantine_in_the_data_dir(
    data_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    async with open_bus(f"file:{elsewhere}", data_dir, BusConfig()) as bus:
        assert isinstance(bus, FileBus)
        await bus.append([LoopStarted(loop_id="a", ts=1.0)])
    assert (elsewhere / "LOCK").exists()
    assert not bus_dir(data_dir).exists()


async def test_an_id_past_the_window_appends_again(data_dir: Path) -> None:
    async with open_bus(None, data_dir, BusConfig(dedup_window_s=0.05)) as bus:
        first = await bus.append([LoopStarted(loop_id="a", ts=1.0)], msg_id="k")
        await anyio.sleep(0.1)
        second = await bus.append([LoopStarted(loop_id="a", ts=1.0)], msg_id="k")
        assert second[0] > first[0]


async def test_an_id_whose_batch_is_not_in_the_log_appends(data_dir: Path) -> None:
    bus = bus_dir(data_dir)
    bus.mkdir()
    ids = RecentIds(bus, 120.0)
    ids.add(IdRecord("k", 0, 50, 1234, time.time()), sync=False)  # a crash before the batch
    ids.close()
    async with open_bus(None, data_dir, BusConfig()) as log:
        first = await log.append([LoopStarted(loop_id="a", ts=1.0)], msg_id="k")
        again = await log.append([LoopStarted(loop_id="a", ts=1.0)], msg_id="k")
    assert first == again == [0]


def test_old_ids_are_dropped_when_the_file_is_rewritten(tmp_path: Path) -> None:
    ids = RecentIds(tmp_path, 10.0)
    for i in range(3000):
        ids.add(IdRecord(f"id{i}", i, i + 1, 0, float(i)), sync=False)
    lines = (tmp_path / MSGIDS_NAME).read_bytes().count(b"\n")
    assert lines < 3000
    assert ids.lookup("id2999", 2999.0) is not None
    assert ids.lookup("id5", 2999.0) is None
    other = RecentIds(tmp_path, 10.0)  # another writer process sees the same ids
    assert other.lookup("id2999", 2999.0) is not None
