"""Many writer processes at once, rotation under contention, and writers killed mid-write."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from bus.events import BusMessage
from bus.quarantine import Quarantine
from bus.reader import BusReader
from bus.segments import bus_dir, list_segments
from bus.writer import BusWriter

ROOT = Path(__file__).parents[2]
WRITERS = 8
PER_WRITER = 5_000
BATCH = 100


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.append_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _expect(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == line


def _sequences(data_dir: Path) -> tuple[dict[str, list[int]], list[str], BusReader]:
    """Sequence numbers per writer, the writer of each event in log order, and the reader."""
    reader = BusReader(data_dir)
    seen: dict[str, list[int]] = {}
    order: list[str] = []
    for batch in reader.read_from(0):
        for event in batch.events:
            assert isinstance(event, BusMessage)
            seen.setdefault(event.project, []).append(int(event.msg_id))
            order.append(event.project)
    return seen, order, reader


def _run_writers(data_dir: Path, segment_bytes: int) -> None:
    go = data_dir / "go"
    procs = [
        _worker(
            "append",
            str(data_dir),
            f"w{i}",
            str(PER_WRITER),
            str(BATCH),
            str(segment_bytes),
            str(go),
        )
        for i in range(WRITERS)
    ]
    for proc in procs:
        _expect(proc, "ready")
    go.touch()  # all start appending at once
    for proc in procs:
        _expect(proc, "done")
        assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("segment_bytes", [256 << 20, 16 << 10], ids=["one-segment", "rotating"])
def test_concurrent_writers_never_interleave_or_lose(data_dir: Path, segment_bytes: int) -> None:
    _run_writers(data_dir, segment_bytes)
    seen, order, reader = _sequences(data_dir)
    assert seen == {f"w{i}": list(range(PER_WRITER)) for i in range(WRITERS)}
    assert reader.stats.corrupt == reader.stats.unknown == 0
    assert not reader.torn_tail()
    switches = sum(a != b for a, b in pairwise(order))
    assert switches >= WRITERS  # the batches really were interleaved
    segments = list_segments(bus_dir(data_dir))
    if segment_bytes < 1 << 20:
        assert len(segments) > 20
    base = 0
    for seg in segments:  # contiguous, and every non-last segment ends a line
        assert seg.base == base
        base += seg.size
        assert seg.path.read_bytes().endswith(b"\n")


def test_writer_killed_holding_the_lock_leaves_one_torn_line(data_dir: Path) -> None:
    go = data_dir / "go"
    torn = _worker("torn", str(data_dir))
    _expect(torn, "holding")
    procs = [
        _worker("append", str(data_dir), f"w{i}", "1000", "50", str(16 << 10), str(go))
        for i in range(3)
    ]
    for proc in procs:
        _expect(proc, "ready")
    go.touch()
    time.sleep(0.2)  # the others are now blocked on the lock the torn writer holds
    torn.send_signal(signal.SIGKILL)
    torn.wait(timeout=10)
    for proc in procs:
        _expect(proc, "done")
        assert proc.wait(timeout=60) == 0
    seen, _, reader = _sequences(data_dir)
    assert seen == {f"w{i}": list(range(1000)) for i in range(3)}
    assert reader.stats.corrupt == 1
    (entry,) = Quarantine(data_dir).entries()
    assert entry.offset == 0 and entry.raw.startswith('{"type":"bus_message","project":"torn"')


def test_writer_killed_at_a_random_time_mid_append(data_dir: Path) -> None:
    go = data_dir / "go"
    batch = 20_000  # about 1.5 MB per os.write: a SIGKILL usually lands inside one
    victim = _worker("loop", str(data_dir), "victim", str(batch))
    _expect(victim, "ready")
    others = [
        _worker("append", str(data_dir), f"w{i}", "2000", "100", str(4 << 20), str(go))
        for i in range(2)
    ]
    for proc in others:
        _expect(proc, "ready")
    go.touch()
    time.sleep(random.uniform(0.03, 0.08))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    for proc in others:
        _expect(proc, "done")
        assert proc.wait(timeout=60) == 0
    with BusWriter(data_dir) as writer:  # whatever the victim left, the next append ends it
        writer.append([BusMessage(ts=1.0, project="last", msg_type="seq", msg_id="0")])
    seen, order, reader = _sequences(data_dir)
    assert order[-1] == "last" and not reader.torn_tail()
    victim_seq = seen.pop("victim", [])
    assert seen == {f"w{i}": list(range(2000)) for i in range(2)} | {"last": [0]}
    whole, torn = divmod(len(victim_seq), batch)  # whole batches, then a prefix of one
    assert victim_seq == list(range(batch)) * whole + list(range(torn))
    assert reader.stats.corrupt <= 1
    assert len(Quarantine(data_dir).entries()) == reader.stats.corrupt
