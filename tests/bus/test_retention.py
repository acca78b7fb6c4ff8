"""Retention on the file bus: cut points, segments removed or archived, identities that survive."""

from __future__ import annotations

from pathlib import Path

import anyio.lowlevel
import msgspec
import pytest

from bus.config import BusConfig
from bus.errors import NotRetained
from bus.events import Event, LoopStarted
from bus.filebus import FileBus, file_identity
from bus.reader import BusReader
from bus.retention import CUT_NAME, bytes_cut, cut_point, drop_before
from bus.segments import bus_dir, list_segments
from bus.writer import BusWriter

pytestmark = pytest.mark.anyio

SMALL = BusConfig(durability="never", segment_bytes=1000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _events(tag: str, n: int) -> list[Event]:
    return [LoopStarted(loop_id=f"{tag}-{i}", ts=1000.0 + i) for i in range(n)]


def _write(data_dir: Path, batches: int, tag: str = "a") -> list[int]:
    """``batches`` appends of 10 events (about 700 bytes each): a segment every two."""
    offsets: list[int] = []
    with BusWriter(data_dir, SMALL) as writer:
        for b in range(batches):
            offsets += writer.append(_events(f"{tag}{b}", 10))
    return offsets


def test_cut_point_is_the_highest_segment_base_at_or_before() -> None:
    bases = [0, 100, 250, 400]
    assert cut_point(bases, 0) == 0
    assert cut_point(bases, 99) == 0
    assert cut_point(bases, 100) == 100
    assert cut_point(bases, 399) == 250
    assert cut_point(bases, 10_000) == 400
    assert cut_point([], 50) == 0
    assert cut_point([100, 200], 50) == 100  # before the first: the first


def test_bytes_cut_keeps_at_least_the_bytes_asked_for() -> None:
    bases = [0, 100, 250, 400]
    assert bytes_cut(bases, 500, 100) == 400
    assert bytes_cut(bases, 500, 101) == 250
    assert bytes_cut(bases, 500, 250) == 250
    assert bytes_cut(bases, 500, 10_000) == 0
    assert bytes_cut([], 0, 10) == 0


def test_drop_before_removes_whole_segments_before_the_cut_never_the_last(
    data_dir: Path,
) -> None:
    _write(data_dir, 8)
    bus = bus_dir(data_dir)
    segments = list_segments(bus)
    assert len(segments) >= 4
    cut = segments[2].base
    removed = drop_before(bus, cut + 1)  # inside segment 2: it stays
    assert [seg.base for seg in removed] == [segments[0].base, segments[1].base]
    assert [seg.base for seg in list_segments(bus)] == [seg.base for seg in segments[2:]]
    last = list_segments(bus)[-1]
    assert [seg.base for seg in drop_before(bus, 10**12)] != []
    assert [seg.base for seg in list_segments(bus)] == [last.base]  # the active one stays
    assert drop_before(bus, 10**12) == []


def test_archive_dir_receives_the_removed_segments(data_dir: Path, tmp_path: Path) -> None:
    _write(data_dir, 6)
    bus = bus_dir(data_dir)
    segments = list_segments(bus)
    contents = segments[0].path.read_bytes()
    archive = tmp_path / "archive"
    drop_before(bus, segments[1].base, archive=archive)
    assert (archive / segments[0].path.name).read_bytes() == contents
    assert not segments[0].path.exists()


def test_identity_survives_a_cut_but_not_a_replaced_log(data_dir: Path) -> None:
    offsets = _write(data_dir, 12)
    bus = bus_dir(data_dir)
    segments = list_segments(bus)
    end = segments[-1].end
    cut = segments[3].base
    positions = [cut, offsets[-5], end, segments[4].base + 3]
    before = {p: file_identity(bus, p) for p in positions}
    drop_before(bus, cut)
    assert (bus / CUT_NAME).exists()
    assert {p: file_identity(bus, p) for p in positions} == before
    drop_before(bus, segments[5].base)  # a second cut keeps what the first kept
    assert file_identity(bus, end) == before[end]
    for seg in list_segments(bus):  # the log replaced by another of the same shape
        seg.path.unlink()
    _write(data_dir, 12, tag="b")
    assert file_identity(bus, end) != before[end]


async def test_a_reader_with_a_removed_segment_open_reads_it_to_its_end(
    data_dir: Path,
) -> None:
    offsets = _write(data_dir, 8)
    bus = bus_dir(data_dir)
    reader = BusReader(data_dir, chunk_bytes=64)
    batches = reader.read_from(0)
    first = next(batches)  # segment 0 is open now
    drop_before(bus, list_segments(bus)[1].base)
    rest = [pos for batch in batches for pos, _ in batch]
    assert [pos for pos, _ in first] + rest == offsets


async def test_filebus_cut_point_and_drop_before(data_dir: Path, tmp_path: Path) -> None:
    _write(data_dir, 6)
    config = BusConfig(durability="never", segment_bytes=1000, archive_dir=str(tmp_path / "old"))
    async with FileBus(bus_dir(data_dir), data_dir, config) as bus:
        segments = list_segments(bus.bus)
        cut = await bus.cut_point(segments[1].base + 5)
        assert cut == segments[1].base
        assert await bus.drop_before(cut) == [segments[0].path.name]
        assert await bus.first() == cut
        assert (tmp_path / "old" / segments[0].path.name).exists()
        await anyio.lowlevel.checkpoint()


async def test_a_reader_that_finds_its_next_segment_removed_says_so(data_dir: Path) -> None:
    _write(data_dir, 8)
    bus = bus_dir(data_dir)
    reader = BusReader(data_dir, chunk_bytes=64)
    batches = reader.read_from(0)
    next(batches)
    drop_before(bus, list_segments(bus)[2].base)  # segment 1 goes before it is opened
    with pytest.raises(NotRetained, match="earliest this log can serve is position"):
        list(batches)


def test_retain_age_is_a_duration_or_seconds() -> None:
    def decode(text: str) -> BusConfig:
        return msgspec.toml.decode(text.encode(), type=BusConfig)

    assert decode('retain_age = "7d"').retain_age_s == 7 * 86400
    assert decode("retain_age = 90").retain_age_s == 90
    assert decode("retain_bytes = 1000").retain_bytes == 1000
    assert BusConfig().retain_age_s is None
    with pytest.raises(msgspec.ValidationError, match="retain_age: 'soon' is not a positive"):
        decode('retain_age = "soon"')
    with pytest.raises(msgspec.ValidationError, match="Expected `int` >= 1"):
        decode("retain_bytes = 0")
