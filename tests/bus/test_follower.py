"""follow(): new lines from other processes arrive in order and once, across rotation, never
partial."""

from __future__ import annotations

import sys
from itertools import pairwise
from pathlib import Path

import anyio
import pytest

from bus.events import BusMessage, LoopStarted, encode_events
from bus.follower import follow
from bus.reader import Batch, BusReader
from bus.segments import bus_dir, list_segments, segment_name
from bus.writer import BusConfig, BusWriter

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parents[2]

APPEND_ONE = """
import sys
from pathlib import Path
from bus.events import LoopStarted
from bus.writer import BusConfig, BusWriter
with BusWriter(Path(sys.argv[1]), BusConfig(durability="never")) as writer:
    [offset] = writer.append([LoopStarted(loop_id="from-child", ts=1.0)])
print(offset, flush=True)
"""


async def _collect(data_dir: Path, offset: int, count: int, out: list[Batch]) -> None:
    async for batch in follow(data_dir, offset, poll_interval=0.005):
        out.append(batch)
        if sum(len(b) for b in out) >= count:
            return


async def test_event_from_another_process_arrives_once_in_order(data_dir: Path) -> None:
    with BusWriter(data_dir) as writer:
        [before] = writer.append([LoopStarted(loop_id="before", ts=1.0)])
    out: list[Batch] = []
    following = anyio.Event()

    async def watch() -> None:
        async for batch in follow(data_dir, 0, poll_interval=0.01):
            out.append(batch)
            if len(batch):
                following.set()  # the backlog is out: what the child appends comes live
            if any(isinstance(ev, LoopStarted) and ev.loop_id == "after" for ev in batch.events):
                return

    with anyio.fail_after(30):  # a guard against a hang, not a speed target
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await following.wait()
            child = await anyio.run_process(
                [sys.executable, "-c", APPEND_ONE, str(data_dir)], cwd=ROOT
            )
            # A sentinel appended after the child's event: following up to it shows that the
            # child's event was yielded once, and nothing else came in between.
            with BusWriter(data_dir) as writer:
                [after] = writer.append([LoopStarted(loop_id="after", ts=1.0)])
    from_child = int(child.stdout.decode())
    assert before < from_child < after
    assert [pair for batch in out for pair in batch] == [
        (before, LoopStarted(loop_id="before", ts=1.0)),
        (from_child, LoopStarted(loop_id="from-child", ts=1.0)),
        (after, LoopStarted(loop_id="after", ts=1.0)),
    ]
    assert out[0].start == 0
    assert all(a.end == b.start for a, b in pairwise(out))  # no gap, no overlap


async def test_follows_rotation_without_loss(data_dir: Path) -> None:
    events = [BusMessage(ts=1.0, project="p", msg_type="m", msg_id=str(i)) for i in range(600)]
    config = BusConfig(segment_bytes=2048, durability="never")
    out: list[Batch] = []
    offsets: list[int] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, data_dir, 0, len(events), out)
            with BusWriter(data_dir, config) as writer:
                for i in range(0, len(events), 30):
                    offsets += writer.append(events[i : i + 30])
                    await anyio.sleep(0.002)
    assert len(list_segments(bus_dir(data_dir))) > 10
    assert [pair for batch in out for pair in batch] == list(zip(offsets, events, strict=True))
    assert all(a.end == b.start for a, b in pairwise(out))


async def test_starts_at_an_offset_and_skips_the_backlog(data_dir: Path) -> None:
    with BusWriter(data_dir) as writer:
        writer.append([LoopStarted(loop_id=f"old{i}", ts=1.0) for i in range(5)])
        checkpoint = BusReader(data_dir).end_offset()
        writer.append([LoopStarted(loop_id="new", ts=1.0)])
    out: list[Batch] = []
    with anyio.fail_after(10):
        await _collect(data_dir, checkpoint, 1, out)
    assert [ev.loop_id for b in out for ev in b.events if isinstance(ev, LoopStarted)] == ["new"]


async def test_never_yields_a_partial_line(data_dir: Path) -> None:
    line = encode_events([LoopStarted(loop_id="slow", ts=1.0)])
    bus = bus_dir(data_dir)
    bus.mkdir()
    path = bus / segment_name(0)
    path.write_bytes(line[:10])
    out: list[Batch] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, data_dir, 0, 1, out)
            await anyio.sleep(0.1)
            assert all(len(batch) == 0 for batch in out)
            with open(path, "ab") as f:
                f.write(line[10:])
    assert [len(batch) for batch in out if len(batch)] == [1]
    assert out[-1].end == len(line)


async def test_poll_interval_must_be_positive(data_dir: Path) -> None:
    with pytest.raises(ValueError):
        async for _ in follow(data_dir, poll_interval=0):
            pass
