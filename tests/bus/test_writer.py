"""BusWriter: offsets, stamping, torn-tail repair, rotation, durability policies."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bus import writer as writer_module
from bus.errors import BusError, BusFull
from bus.events import BusMessage, Event, LoopStarted, decode_event, encode_events
from bus.reader import BusReader
from bus.segments import bus_dir, list_segments, segment_name
from bus.writer import BusConfig, BusWriter, line_offsets
from tests.support.serverproc import tally
from tests.support.tmpfs import fill, small_tmpfs
from tests.support.workload import mixed_events


def _log_bytes(data_dir: Path) -> bytes:
    return b"".join(seg.path.read_bytes() for seg in list_segments(bus_dir(data_dir)))


def _read_all(data_dir: Path) -> list[tuple[int, Event]]:
    return [pair for batch in BusReader(data_dir).read_from(0) for pair in batch]


def test_offsets_are_line_positions(data_dir: Path) -> None:
    events = list(mixed_events(300))
    with BusWriter(data_dir) as writer:
        first = writer.append(events[:100])
        rest = writer.append(events[100:])
    offsets = first + rest
    log = _log_bytes(data_dir)
    assert offsets[0] == 0
    for offset, event in zip(offsets, events, strict=True):
        assert offset == 0 or log[offset - 1 : offset] == b"\n"
        assert decode_event(log[offset : log.index(b"\n", offset)]) == event
    assert _read_all(data_dir) == list(zip(offsets, events, strict=True))


def test_line_offsets_helper() -> None:
    assert line_offsets(b'{"a":1}\n{}\n', 10) == [10, 18]


def test_missing_ts_is_stamped(data_dir: Path) -> None:
    before = time.time()
    with BusWriter(data_dir) as writer:
        writer.append([LoopStarted(loop_id="a"), LoopStarted(loop_id="b", ts=3.0)])
    after = time.time()
    (_, a), (_, b) = _read_all(data_dir)
    assert a.ts is not None and before <= a.ts <= after
    assert b.ts == 3.0


def test_empty_batch_is_a_no_op(data_dir: Path) -> None:
    with BusWriter(data_dir) as writer:
        assert writer.append([]) == []
        assert writer.append_encoded(b"", 0) == []
    assert _log_bytes(data_dir) == b""


@pytest.mark.parametrize(
    ("data", "count"),
    [(b'{"type":"loop_started","loop_id":"a"}', 1), (b"{}\n{}\n", 1), (b"{}\n", 2)],
)
def test_append_encoded_rejects_bad_framing(data_dir: Path, data: bytes, count: int) -> None:
    with BusWriter(data_dir) as writer, pytest.raises(ValueError):
        writer.append_encoded(data, count)
    assert _log_bytes(data_dir) == b""


def test_torn_tail_is_ended_with_one_newline(data_dir: Path) -> None:
    bus = bus_dir(data_dir)
    bus.mkdir()
    whole = encode_events([LoopStarted(loop_id="a", ts=1.0)])
    fragment = b'{"type":"loop_started","lo'
    (bus / segment_name(0)).write_bytes(whole + fragment)
    with BusWriter(data_dir) as writer:
        offsets = writer.append([LoopStarted(loop_id="b", ts=2.0)])
        writer.append([LoopStarted(loop_id="c", ts=3.0)])
    assert offsets == [len(whole) + len(fragment) + 1]
    log = _log_bytes(data_dir)
    assert log.startswith(whole + fragment + b"\n{")
    reader = BusReader(data_dir)
    events = [ev for batch in reader.read_from(0) for ev in batch.events]
    assert [ev.loop_id for ev in events if isinstance(ev, LoopStarted)] == ["a", "b", "c"]
    assert reader.stats.corrupt == 1


def test_rotation_names_segments_by_base_and_readers_cross_them(data_dir: Path) -> None:
    events = list(mixed_events(2000))
    config = BusConfig(segment_bytes=4096, durability="never")
    offsets: list[int] = []
    with BusWriter(data_dir, config) as writer:
        for i in range(0, len(events), 37):
            offsets += writer.append(events[i : i + 37])
        big = writer.append(events[:200])  # larger than segment_bytes: one big segment
    segments = list_segments(bus_dir(data_dir))
    assert len(segments) > 10
    expected_base = 0
    for seg in segments:
        assert seg.path.name == segment_name(seg.base)
        assert seg.base == expected_base
        expected_base += seg.size
    for seg in segments[:-1]:
        assert seg.path.read_bytes().endswith(b"\n")
        assert seg.size >= 4096
    last = segments[-1]  # the big batch is never split across segments
    assert last.base <= big[0] < big[-1] < last.end
    assert last.size > 4096
    pairs = _read_all(data_dir)
    assert pairs == list(zip(offsets + big, events + events[:200], strict=True))


def test_writer_follows_rotation_by_another_writer(data_dir: Path) -> None:
    small = BusWriter(data_dir, BusConfig(segment_bytes=100, durability="never"))
    large = BusWriter(data_dir, BusConfig(durability="never"))
    events = [BusMessage(ts=1.0, project="p", msg_type="m", msg_id=str(i)) for i in range(30)]
    offsets = large.append(events[:10])  # caches segment 0
    offsets += small.append(events[10:20])  # segment 0 is full: rotates
    offsets += large.append(events[20:])  # must notice and use the new segment
    small.close()
    large.close()
    segments = list_segments(bus_dir(data_dir))
    assert [seg.base for seg in segments] == [0, segments[0].size]
    assert segments[1].base == offsets[10]  # the small writer rotated...
    assert segments[0].size == offsets[10]  # ...and the large one never touched segment 0 again
    assert offsets[20] > offsets[19]
    assert _read_all(data_dir) == list(zip(offsets, events, strict=True))


@pytest.mark.parametrize("durability", ["never", "interval", "always"])
def test_every_durability_policy_appends(data_dir: Path, durability: str) -> None:
    config = msgspec.convert(
        {"durability": durability, "fsync_interval_s": 0.001, "segment_bytes": 2048}, BusConfig
    )
    events = list(mixed_events(200))
    with BusWriter(data_dir, config) as writer:
        offsets: list[int] = []
        for i in range(0, 200, 20):
            offsets += writer.append(events[i : i + 20])
            time.sleep(0.002)
        writer.sync()
    assert _read_all(data_dir) == list(zip(offsets, events, strict=True))


@pytest.mark.parametrize(
    "table",
    [
        {"segment_bytes": 0},
        {"fsync_interval_s": 0},
        {"fsync_interval_s": -1.0},
        {"durability": "x"},
    ],
)
def test_config_is_validated(table: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(table, BusConfig)


def test_config_defaults() -> None:
    config = msgspec.convert({}, BusConfig)
    assert config == BusConfig(segment_bytes=256 << 20, durability="interval", fsync_interval_s=1.0)


def test_closed_writer_refuses_to_append(data_dir: Path) -> None:
    writer = BusWriter(data_dir)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(BusError):
        writer.append([LoopStarted(loop_id="a")])


def test_threads_share_one_writer(data_dir: Path) -> None:
    writer = BusWriter(data_dir, BusConfig(segment_bytes=8192, durability="never"))

    def work(name: str) -> None:
        for first in range(0, 500, 25):
            writer.append(
                [
                    BusMessage(ts=1.0, project=name, msg_type="m", msg_id=str(i))
                    for i in range(first, first + 25)
                ]
            )

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    reader = BusReader(data_dir)
    seen: dict[str, list[int]] = {}
    for batch in reader.read_from(0):
        for event in batch.events:
            assert isinstance(event, BusMessage)
            seen.setdefault(event.project, []).append(int(event.msg_id))
    assert seen == {f"t{i}": list(range(500)) for i in range(4)}
    assert reader.stats.corrupt == 0


def test_a_full_disk_is_bus_full_and_nothing_is_acknowledged(data_dir: Path) -> None:
    bus = bus_dir(data_dir)
    bus.mkdir()
    (bus / segment_name(0)).symlink_to("/dev/full")  # every write: ENOSPC
    with BusWriter(data_dir) as writer, pytest.raises(BusFull, match="No space left") as caught:
        writer.append([LoopStarted(loop_id="a")])
    assert isinstance(caught.value, BusError)
    assert (caught.value.exit_code, caught.value.http_status) == (1, 507)


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `segmnt_bytes`"):
        msgspec.convert({"segmnt_bytes": 5}, BusConfig)


# -- a full disk ------------------------------------------------------------------------


@pytest.fixture
def full_disk_dir(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tmpfs") as mnt:
        yield mnt


def _segment_sizes(data_dir: Path) -> dict[str, int]:
    return {seg.path.name: seg.path.stat().st_size for seg in list_segments(bus_dir(data_dir))}


def test_full_disk_leaves_no_byte_of_the_batch_and_recovers(full_disk_dir: Path) -> None:
    data_dir = full_disk_dir / "data"
    events = list(mixed_events(400))
    with BusWriter(data_dir) as writer:
        first = writer.append(events[:100])
        filler = full_disk_dir / "filler"
        fill(filler)
        before = _segment_sizes(data_dir)
        with pytest.raises(BusFull):
            writer.append(events[100:300], msg_id="batch-2")
        assert _segment_sizes(data_dir) == before
        checked = tally(data_dir, "check", check=False)
        assert checked.returncode == 0, checked.stderr.decode()
        filler.unlink()
        # the same id again: its record names bytes that are not there, so it appends
        second = writer.append(events[100:300], msg_id="batch-2")
        third = writer.append(events[300:])
    assert second[0] == before[segment_name(0)]
    assert _read_all(data_dir) == list(zip(first + second + third, events, strict=True))
    assert tally(data_dir, "check", check=False).returncode == 0


def test_a_failed_short_write_is_cut_off(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = list(mixed_events(200))
    with BusWriter(data_dir) as writer:
        first = writer.append(events[:100])
        size = _segment_sizes(data_dir)
        real_write = writer_module._write_all

        def half_then_eio(fd: int, data: bytes) -> None:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(writer_module, "_write_all", half_then_eio)
        with pytest.raises(BusError) as failed:
            writer.append(events[100:], msg_id="x")
        assert not isinstance(failed.value, BusFull)
        assert _segment_sizes(data_dir) == size
        monkeypatch.setattr(writer_module, "_write_all", real_write)
        retried = writer.append(events[100:], msg_id="x")
        assert writer.append(events[100:], msg_id="x") == retried  # now a real duplicate
    assert _read_all(data_dir) == list(zip(first + retried, events, strict=True))
