"""The spool on disk: order, acknowledgement, reopening, torn tails, one holder."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.events import LoopStarted, LoopStopped
from server.loop.spool import Spool, SpoolBusy, SpoolStats, new_batch


def test_batches_come_out_in_order_and_leave_only_when_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "s" / "loop.jsonl"
    spool = Spool(path)
    first = new_batch([LoopStarted(loop_id="l", ts=1.0)])
    second = new_batch([LoopStopped(loop_id="l", ts=2.0), LoopStarted(loop_id="l", ts=3.0)])
    spool.append(first)
    spool.append(second)
    assert spool.stats() == SpoolStats(batches=2, events=3)
    assert spool.peek() == first
    assert spool.peek() == first  # peeking takes nothing
    with pytest.raises(ValueError, match="not at the head"):
        spool.ack(second)
    spool.ack(first)
    spool.close()

    reopened = Spool(path)  # a later process: same batches, same keys
    assert reopened.peek() == second
    reopened.ack(second)
    assert reopened.stats() == SpoolStats(batches=0, events=0)
    assert path.read_bytes() == b""
    reopened.close()


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    spool = Spool(path)
    batch = new_batch([LoopStarted(loop_id="l", ts=1.0)])
    spool.append(batch)
    spool.close()
    with path.open("ab") as f:
        f.write(b'{"id":"torn","events":[{"type":"loop_')
    reopened = Spool(path)
    assert reopened.stats() == SpoolStats(batches=1, events=1)
    assert reopened.peek() == batch
    reopened.close()


def test_one_process_holds_a_spool(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    spool = Spool(path)
    with pytest.raises(SpoolBusy, match="another process"):
        Spool(path)
    spool.close()
    Spool(path).close()
