"""Quarantine: one entry per offset, across instances and processes, tolerant of torn entries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bus.quarantine import MAX_RAW_BYTES, Quarantine, QuarantineEntry


def test_add_is_idempotent_across_instances(data_dir: Path) -> None:
    first, second = Quarantine(data_dir), Quarantine(data_dir)
    first.add(10, "bad", b"abc")
    first.add(10, "bad again", b"abc")
    second.add(10, "seen by another reader", b"abc")
    second.add(20, "other", b"\xff\x00")
    first.add(20, "other", b"\xff\x00")  # learns about 20 from the file
    assert first.offsets() == second.offsets() == {10, 20}
    assert first.entries() == [
        QuarantineEntry(10, "bad", "abc"),
        QuarantineEntry(20, "other", "\ufffd\x00"),
    ]


def test_raw_is_truncated(data_dir: Path) -> None:
    quarantine = Quarantine(data_dir)
    quarantine.add(0, "long", b"x" * (MAX_RAW_BYTES * 2))
    (entry,) = quarantine.entries()
    assert len(entry.raw) == MAX_RAW_BYTES


def test_torn_entry_is_skipped_and_ended(data_dir: Path) -> None:
    (data_dir / "quarantine.jsonl").write_bytes(
        b'{"offset":5,"reason":"x","raw":"y"}\n{"offset":7,"rea'
    )
    quarantine = Quarantine(data_dir)
    assert quarantine.offsets() == {5}
    quarantine.add(7, "bad", b"z")
    assert quarantine.offsets() == {5, 7}
    assert [entry.offset for entry in quarantine.entries()] == [5, 7]


def test_processes_add_each_offset_once(data_dir: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from bus.quarantine import Quarantine\n"
        "q = Quarantine(Path(sys.argv[1]))\n"
        "for offset in range(0, 400, 2): q.add(offset, 'bad', b'x')\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(data_dir)], cwd=Path(__file__).parents[2]
        )
        for _ in range(4)
    ]
    assert all(proc.wait(timeout=60) == 0 for proc in procs)
    offsets = [entry.offset for entry in Quarantine(data_dir).entries()]
    assert sorted(offsets) == list(range(0, 400, 2))


def test_add_many_writes_new_offsets_once(data_dir: Path) -> None:
    quarantine = Quarantine(data_dir)
    quarantine.add(1, "a", b"x")
    quarantine.add_many([(1, "a", b"x"), (2, "b", b"y"), (2, "b", b"y"), (3, "c", b"z")])
    assert [entry.offset for entry in Quarantine(data_dir).entries()] == [1, 2, 3]
