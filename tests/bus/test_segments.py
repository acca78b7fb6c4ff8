"""Segment layout: names, listing order, sizes read on demand."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.segments import Segment, bus_dir, list_segments, lock_path, segment_name


def test_names_are_twenty_digit_offsets() -> None:
    assert segment_name(0) == "00000000000000000000.jsonl"
    assert segment_name(1234) == "00000000000000001234.jsonl"
    with pytest.raises(ValueError):
        segment_name(-1)


def test_layout(data_dir: Path) -> None:
    assert bus_dir(data_dir) == data_dir / "bus"
    assert lock_path(bus_dir(data_dir)) == data_dir / "bus" / "LOCK"


def test_listing_sorts_by_base_and_ignores_other_files(data_dir: Path) -> None:
    bus = bus_dir(data_dir)
    assert list_segments(bus) == []
    bus.mkdir()
    for name in (
        segment_name(300),
        segment_name(0),
        segment_name(100),
        "LOCK",
        "x.jsonl",
        "1.jsonl",
    ):
        (bus / name).write_bytes(b"")
    (bus / (segment_name(5) + ".tmp")).write_bytes(b"")
    segments = list_segments(bus)
    assert [seg.base for seg in segments] == [0, 100, 300]
    assert segments[1] == Segment(100, bus / segment_name(100))


def test_size_is_read_on_demand(data_dir: Path) -> None:
    path = data_dir / segment_name(10)
    seg = Segment(10, path)
    assert seg.size == 0 and seg.end == 10
    path.write_bytes(b"abc\n")
    assert seg.size == 4 and seg.end == 14
