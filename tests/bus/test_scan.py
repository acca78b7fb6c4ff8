"""scan_log: one pass over the whole log, counted the way `tally check` reports it."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec

from bus.contract import open_bus
from bus.events import ApiRequest, LoopStarted, LoopStopped, encode_events
from bus.quarantine import Quarantine
from bus.scan import LogReport, missing_log, scan_log
from bus.segments import bus_dir, list_segments
from bus.writer import BusConfig, BusWriter
from tests.support.nats import NatsServer, nats_server

__all__ = ["nats_server"]  # the fixture, used by name


def scan(data_dir: Path, url: str | None = None) -> LogReport:
    async def run() -> LogReport:
        async with open_bus(url, data_dir, BusConfig()) as bus:
            return await scan_log(bus)

    return anyio.run(run)


def test_a_missing_or_empty_log_is_all_zeros(data_dir: Path) -> None:
    empty = LogReport(
        segments=0,
        bytes=0,
        events=0,
        events_by_type={},
        corrupt_lines=0,
        unknown_events=0,
        unknown_types={},
        torn_tail=False,
        end_offset=0,
    )
    assert missing_log(open_bus(None, data_dir / "nowhere", BusConfig())) is not None
    assert scan(data_dir / "nowhere") == empty
    bus_dir(data_dir).mkdir()
    assert missing_log(open_bus(None, data_dir, BusConfig())) is None
    assert scan(data_dir) == empty


def test_counts_every_kind_of_line_across_segments(data_dir: Path) -> None:
    config = BusConfig(segment_bytes=200, durability="never")
    with BusWriter(data_dir, config) as writer:
        for n in range(5):
            writer.append([LoopStarted(loop_id=f"l{n}", ts=1.0), LoopStopped(loop_id=f"l{n}")])
        writer.append([ApiRequest(method="GET", status=200, ts=2.0)])
    segments = list_segments(bus_dir(data_dir))
    assert len(segments) > 1
    last = segments[-1].path
    with last.open("ab") as segment:
        segment.write(b"not json\n")
        segment.write(b'{"type":"loop_paused","loop_id":"a"}\n')
        segment.write(b'{"type":"loop_paused","loop_id":"b"}\n')
        segment.write(b'{"type":"from_the_future"}\n')
        end = segments[-1].base + segment.tell()
        segment.write(b'{"type":"loop_started","loo')  # a writer died mid-line
    report = scan(data_dir)
    assert report == LogReport(
        segments=len(segments),
        bytes=sum(seg.size for seg in segments),
        events=11,
        events_by_type={"api_request": 1, "loop_started": 5, "loop_stopped": 5},
        corrupt_lines=1,
        unknown_events=3,
        unknown_types={"from_the_future": 1, "loop_paused": 2},
        torn_tail=True,
        end_offset=end,
    )
    assert [entry.raw for entry in Quarantine(data_dir).entries()] == ["not json"]
    assert scan(data_dir) == report  # scanning again changes nothing


def test_report_encodes_in_field_order(data_dir: Path) -> None:
    with BusWriter(data_dir) as writer:
        writer.append([LoopStarted(loop_id="a", ts=1.0)])
    doc = msgspec.json.decode(msgspec.json.encode(scan(data_dir)))
    assert list(doc) == [
        "segments",
        "bytes",
        "events",
        "events_by_type",
        "corrupt_lines",
        "unknown_events",
        "unknown_types",
        "torn_tail",
        "end_offset",
    ]


def test_a_jetstream_scan_counts_messages_events_and_trouble(
    data_dir: Path, nats_server: NatsServer
) -> None:
    url = f"{nats_server.url}/scan"

    async def fill() -> None:
        async with open_bus(url, data_dir, BusConfig()) as bus:
            await bus.append([LoopStarted(loop_id="a", ts=1.0), LoopStopped(loop_id="a", ts=2.0)])
            raw = b'not json\n{"type":"loop_paused","loop_id":"a"}\n'
            await bus.append_encoded(encode_events([ApiRequest(method="GET", status=200)]), 1)
            assert bus.stats.events == 0
            import nats

            nc = await nats.connect(nats_server.url)
            try:
                await nc.jetstream().publish("tally.scan", raw)
            finally:
                await nc.close()

    anyio.run(fill)
    report = scan(data_dir, url)
    assert report.segments is None and report.torn_tail is None
    assert report.messages == 3
    assert report.bytes > 0
    assert report.events == 3
    assert report.events_by_type == {"api_request": 1, "loop_started": 1, "loop_stopped": 1}
    assert (report.corrupt_lines, report.unknown_events) == (1, 1)
    assert report.unknown_types == {"loop_paused": 1}
    assert report.end_offset == 4 << 20
    doc = msgspec.json.decode(msgspec.json.encode(report))
    assert "segments" not in doc and "torn_tail" not in doc
