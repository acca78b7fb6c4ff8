"""BusReader: corrupt and unknown lines, torn tails, ``until``, checkpoints, chunk edges."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.errors import OffsetError
from bus.events import Event, LoopStarted, encode_events
from bus.quarantine import Quarantine
from bus.reader import Batch, BusReader
from bus.segments import bus_dir, segment_name
from bus.writer import BusConfig, BusWriter
from tests.support.workload import mixed_events


def _event(name: str) -> bytes:
    return encode_events([LoopStarted(loop_id=name, ts=1.0)])


def _write_segments(data_dir: Path, *contents: bytes) -> None:
    bus = bus_dir(data_dir)
    bus.mkdir(exist_ok=True)
    base = 0
    for content in contents:
        (bus / segment_name(base)).write_bytes(content)
        base += len(content)


def _names(batches: list[Batch]) -> list[str]:
    return [ev.loop_id for batch in batches for ev in batch.events if isinstance(ev, LoopStarted)]


GOOD = _event("good")
CORRUPT = [
    b'{"type":"loop_started","loop_id":',  # torn JSON
    b'{"type":"loop_started","loop_id":""}',  # invalid field (empty id)
    b'{"type":"api_request","method":"GET","status":99}',  # status out of range
    b"\x00\x01\xff\xfe garbage \x80",  # binary, invalid UTF-8
    b"[1, 2, 3]",  # JSON, not an object
    b'{"loop_id":"no-type"}',  # no tag
    b'{"type":7}',  # tag of the wrong type
    b'{"type":"loop_started","loop_id":"a"}{"type":"loop_started","loop_id":"b"}',  # two on a line
    b'{"type":"loop_started","loop_id":"a","x":' + b"[" * 5000 + b"]" * 5000 + b"}",  # too deep
]
UNKNOWN = [b'{"type":"loop_paused","loop_id":"a"}', b'{"type":"from_the_future","v":2}']


@pytest.mark.parametrize("chunk_bytes", [16, 200, 64 << 10])
def test_corrupt_lines_are_counted_and_quarantined_once(data_dir: Path, chunk_bytes: int) -> None:
    lines = [GOOD]
    for bad in CORRUPT:
        lines += [bad + b"\n", GOOD]
    _write_segments(data_dir, b"".join(lines))
    offsets = [sum(map(len, lines[:i])) for i in range(len(lines))]
    bad_offsets = set(offsets[1::2])
    for _ in range(3):  # re-reading never adds entries
        reader = BusReader(data_dir, chunk_bytes=chunk_bytes)
        batches = list(reader.read_from(0))
        assert _names(batches) == ["good"] * (len(CORRUPT) + 1)
        assert [off for batch in batches for off, _ in batch] == offsets[0::2]
        assert reader.stats.corrupt == sum(b.corrupt for b in batches) == len(CORRUPT)
        assert reader.stats.unknown == 0
        entries = Quarantine(data_dir).entries()
        assert len(entries) == len(CORRUPT)
        assert {entry.offset for entry in entries} == bad_offsets
    text = (data_dir / "quarantine.jsonl").read_bytes()
    assert text.count(b"\n") == len(CORRUPT)
    by_offset = {entry.offset: entry for entry in Quarantine(data_dir).entries()}
    assert by_offset[offsets[1]].raw == CORRUPT[0].decode()
    assert "invalid event" in by_offset[offsets[3]].reason
    assert "\ufffd" in by_offset[offsets[7]].raw


def test_quarantine_can_be_turned_off(data_dir: Path) -> None:
    _write_segments(data_dir, GOOD + b"nope\n" + GOOD)
    reader = BusReader(data_dir, quarantine=False)
    assert len(_names(list(reader.read_from(0)))) == 2
    assert reader.stats.corrupt == 1
    assert not (data_dir / "quarantine.jsonl").exists()


def test_unknown_types_are_counted_not_quarantined(data_dir: Path) -> None:
    _write_segments(data_dir, GOOD + UNKNOWN[0] + b"\n" + UNKNOWN[1] + b"\n" + UNKNOWN[0] + b"\n")
    reader = BusReader(data_dir)
    batches = list(reader.read_from(0))
    assert _names(batches) == ["good"]
    assert sum(b.unknown for b in batches) == reader.stats.unknown == 3
    assert batches[0].unknown_types == {"loop_paused": 2, "from_the_future": 1}
    assert reader.stats.corrupt == 0
    assert not (data_dir / "quarantine.jsonl").exists()


def test_blank_lines_are_skipped_silently(data_dir: Path) -> None:
    _write_segments(data_dir, GOOD + b"\n   \n\t\r\n" + GOOD)
    reader = BusReader(data_dir)
    pairs = [pair for batch in reader.read_from(0) for pair in batch]
    assert [off for off, _ in pairs] == [0, len(GOOD) + 8]
    assert reader.stats.corrupt == reader.stats.unknown == 0


def test_an_object_spanning_lines_is_not_merged(data_dir: Path) -> None:
    # A torn line ending at an unknown key, then a whole line: decode_lines alone would
    # read them as one valid event; the reader must see a corrupt line and a good one.
    torn = b'{"type":"loop_started","loop_id":"torn","x":\n'
    _write_segments(data_dir, GOOD + torn + _event("after"))
    reader = BusReader(data_dir)
    assert _names(list(reader.read_from(0))) == ["good", "after"]
    assert reader.stats.corrupt == 1


def test_trailing_partial_line_waits_for_its_newline(data_dir: Path) -> None:
    whole = _event("a")
    partial = _event("b")[:-5]
    _write_segments(data_dir, whole + partial)
    reader = BusReader(data_dir)
    batches = list(reader.read_from(0))
    assert _names(batches) == ["a"] and batches[-1].end == len(whole)
    assert reader.torn_tail() and reader.end_offset() == len(whole)
    assert reader.stats.corrupt == 0
    with open(bus_dir(data_dir) / segment_name(0), "ab") as f:
        f.write(_event("b")[-5:])
    rest = list(reader.read_from(batches[-1].end))
    assert _names(rest) == ["b"]
    assert not reader.torn_tail() and reader.end_offset() == len(whole) * 2


def test_non_last_segment_without_newline_ends_in_a_corrupt_line(data_dir: Path) -> None:
    fragment = b'{"type":"loop_st'
    _write_segments(data_dir, GOOD + fragment, _event("next"))
    reader = BusReader(data_dir)
    batches = list(reader.read_from(0))
    assert _names(batches) == ["good", "next"]
    assert reader.stats.corrupt == 1
    assert Quarantine(data_dir).offsets() == {len(GOOD)}
    assert batches[-1].end == reader.end_offset() == len(GOOD + fragment + _event("next"))


def test_until_includes_lines_that_start_before_it(data_dir: Path) -> None:
    events = list(mixed_events(500))
    with BusWriter(data_dir, BusConfig(segment_bytes=4096, durability="never")) as writer:
        offsets = writer.append(events)
    reader = BusReader(data_dir, chunk_bytes=512)
    for until in (1, offsets[100], offsets[100] + 1, offsets[-1], offsets[-1] + 1):
        got = [off for batch in reader.read_from(0, until=until) for off, _ in batch]
        assert got == [off for off in offsets if off < until]
    assert list(reader.read_from(offsets[5], until=offsets[5])) == []


def test_reading_resumes_from_a_checkpoint_or_an_event(data_dir: Path) -> None:
    events = list(mixed_events(3000))
    with BusWriter(data_dir, BusConfig(segment_bytes=50_000, durability="never")) as writer:
        offsets = writer.append(events[:1000]) + writer.append(events[1000:])
    reader = BusReader(data_dir, chunk_bytes=4096)
    batches = list(reader.read_from(0))
    assert [off for b in batches for off, _ in b] == offsets
    assert batches[-1].end == reader.end_offset()
    checkpoint = batches[len(batches) // 2].end
    resumed = [pair for batch in reader.read_from(checkpoint) for pair in batch]
    assert resumed == [(o, e) for o, e in zip(offsets, events, strict=True) if o >= checkpoint]
    from_event = [pair for batch in reader.read_from(offsets[1234]) for pair in batch]
    assert from_event == list(zip(offsets[1234:], events[1234:], strict=True))
    assert list(reader.read_from(reader.end_offset())) == []


@pytest.mark.parametrize(
    ("offset", "why"),
    [(1, "is not the start of a line"), (-1, "is negative"), (10**12, "is beyond the end")],
)
def test_bad_offsets_are_refused_before_any_batch(data_dir: Path, offset: int, why: str) -> None:
    _write_segments(data_dir, GOOD + GOOD)
    with pytest.raises(OffsetError, match=f"offset {offset} {why}"):
        BusReader(data_dir).read_from(offset)  # raised by the call, not by the first batch


def test_empty_log(data_dir: Path) -> None:
    reader = BusReader(data_dir)
    assert list(reader.read_from(0)) == []
    assert reader.end_offset() == 0 and not reader.torn_tail()


def test_lines_longer_than_the_chunk(data_dir: Path) -> None:
    big = encode_events([LoopStarted(loop_id="x" * 50_000, ts=1.0)])
    _write_segments(data_dir, GOOD + big + GOOD)
    reader = BusReader(data_dir, chunk_bytes=1000)
    pairs = [pair for batch in reader.read_from(0) for pair in batch]
    assert [off for off, _ in pairs] == [0, len(GOOD), len(GOOD) + len(big)]
    assert reader.stats.corrupt == 0


def test_giant_lines_are_skipped_not_held(data_dir: Path) -> None:
    giant = b'{"type":"loop_started","loop_id":"' + b"y" * 300_000 + b'"}\n'
    _write_segments(data_dir, GOOD + giant + GOOD + giant[:-1])
    reader = BusReader(data_dir, chunk_bytes=1000, max_line_bytes=100_000)
    batches = list(reader.read_from(0))
    assert _names(batches) == ["good", "good"]
    assert reader.stats.corrupt == 1
    assert batches[-1].end == len(GOOD) * 2 + len(giant)  # the unterminated giant waits
    (entry,) = Quarantine(data_dir).entries()
    assert entry.offset == len(GOOD) and "longer than" in entry.reason
    assert len(entry.raw) == 64 * 1024


def test_offsets_of_fast_and_slow_paths_agree(data_dir: Path) -> None:
    events = list(mixed_events(2000))
    with BusWriter(data_dir) as writer:
        offsets = writer.append(events)
    clean = [pair for batch in BusReader(data_dir).read_from(0) for pair in batch]
    assert clean == list(zip(offsets, events, strict=True))
    with open(bus_dir(data_dir) / segment_name(0), "ab") as f:
        f.write(b"oops\n")
    slow = [pair for batch in BusReader(data_dir).read_from(0) for pair in batch]
    assert slow == clean


def test_stats_count_events_and_bytes(data_dir: Path) -> None:
    events = list(mixed_events(3000))
    with BusWriter(data_dir) as writer:
        writer.append(events)
    reader = BusReader(data_dir, chunk_bytes=10_000)
    batches = list(reader.read_from(0))
    assert reader.stats.events == 3000 == sum(len(b) for b in batches)
    assert reader.stats.bytes == reader.end_offset()


_garbage = st.binary(min_size=0, max_size=60).map(lambda raw: raw.replace(b"\n", b" "))
_line = st.one_of(
    st.builds(lambda n: ("event", LoopStarted(loop_id=f"l{n}", ts=float(n))), st.integers(0, 99)),
    st.builds(lambda raw: ("garbage", raw), _garbage),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_line, max_size=40), chunk_bytes=st.integers(1, 300))
def test_nothing_in_the_log_stops_a_reader(
    tmp_path: Path, lines: list[tuple[str, object]], chunk_bytes: int
) -> None:
    data_dir = tmp_path / f"d{abs(hash((tuple(map(repr, lines)), chunk_bytes)))}"
    data = b""
    expected: list[tuple[int, Event]] = []
    garbage = 0
    for kind, value in lines:
        if kind == "event":
            assert isinstance(value, LoopStarted)
            expected.append((len(data), value))
            data += encode_events([value])
        else:
            assert isinstance(value, bytes)
            garbage += bool(value.strip())
            data += value + b"\n"
    data_dir.mkdir()
    _write_segments(data_dir, data)
    reader = BusReader(data_dir, chunk_bytes=chunk_bytes, quarantine=False)
    got = [pair for batch in reader.read_from(0) for pair in batch]
    assert got == expected
    assert reader.stats.corrupt + reader.stats.unknown == garbage
    assert reader.stats.bytes == len(data)
