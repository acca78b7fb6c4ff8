"""Checkpoints of a real `tally serve`: restored when valid, ignored (and reported) when corrupt
or taken from another log, written periodically and pruned to the newest two.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.buses import bus_url
from tests.support.nats import NatsServer, nats_server
from tests.support.serverproc import (
    API_REQUESTS,
    SERVER_ONLY,
    TallyServer,
    samples,
    start_server,
    tally,
    tally_server,
    without,
)

SNAPSHOTS = "snapshots"

__all__ = ["bus_url", "nats_server"]  # the fixtures, used by name


def events(n: int, seed: int) -> list[dict[str, Any]]:
    import msgspec

    from tests.support.workload import mixed_events

    return [msgspec.to_builtins(ev) for ev in mixed_events(n, seed)]


def snapshot_files(data_dir: Path) -> list[Path]:
    snaps = data_dir / SNAPSHOTS
    return sorted(snaps.iterdir()) if snaps.is_dir() else []


def fill(server: TallyServer, items: list[dict[str, Any]], batch: int = 500) -> int:
    """POST `items` in batches; the end offset once all are folded."""
    last = 0
    for start in range(0, len(items), batch):
        last = server.post_events(items[start : start + batch])["last_offset"]
    end: int = server.wait_folded(last + 1)["end_offset"]
    return end


def assert_equals_fresh_replay(data_dir: Path, text: str, *bus: str) -> None:
    """The scrape equals `tally replay` of the log, bar server-only lines and own requests."""
    replayed = tally(data_dir, "replay", *bus).stdout.decode()
    assert without(text, (*SERVER_ONLY, API_REQUESTS)) == without(replayed, (API_REQUESTS,))


def make_log_with_checkpoint(data_dir: Path, n: int, seed: int) -> int:
    """A log of `n` events and the final checkpoint a clean shutdown writes; its offset."""
    with tally_server(data_dir) as server:
        end = fill(server, events(n, seed))
        assert server.stop() == 0
    assert [p.name for p in snapshot_files(data_dir)] == [f"{end:020d}.snap"]
    return end


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "old version"])
def test_a_corrupt_snapshot_is_reported_and_ignored(data_dir: Path, damage: str) -> None:
    """An old version (2: before exemplars) is refused the same way: the log is refolded."""
    end = make_log_with_checkpoint(data_dir, 1500, seed=5)
    [snap] = snapshot_files(data_dir)
    good = snap.read_bytes()
    match damage:
        case "garbage":
            snap.write_bytes(b"\x00not a snapshot\xff" * 64)
        case "truncated":
            snap.write_bytes(good[: len(good) // 2])
        case "empty":
            snap.write_bytes(b"")
        case "old version":
            import msgspec

            doc = msgspec.msgpack.decode(good)
            doc["meta"]["version"] = 2
            snap.write_bytes(msgspec.msgpack.encode(doc))

    with tally_server(data_dir) as server:
        status = server.status()
        text = server.metrics()
        assert server.stop() == 0
        stderr = server.stderr
    assert "ignoring checkpoint" in stderr
    assert snap.name in stderr
    if damage == "old version":
        assert "snapshot version 2 is not supported" in stderr
    assert status["restored_from_offset"] is None  # a full replay
    assert status["folded_offset"] == end
    assert_equals_fresh_replay(data_dir, text)

    # The clean shutdown replaced the damaged file with a good checkpoint of the same state,
    # which the next start restores.
    assert snap.read_bytes() != b"" and snap.read_bytes()[:16] == good[:16]
    with tally_server(data_dir) as server:
        assert server.status()["restored_from_offset"] == end
        assert_equals_fresh_replay(data_dir, server.metrics())
    assert "ignoring checkpoint" not in server.stderr


def test_a_snapshot_from_another_log_is_ignored(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first_end = make_log_with_checkpoint(first, 1000, seed=1)
    [foreign] = snapshot_files(first)

    # A different log that is longer than the first, so the snapshot's offset lies inside it.
    with tally_server(second) as server:
        second_end = fill(server, events(3000, seed=2))
    assert second_end > first_end
    for snap in snapshot_files(second):
        snap.unlink()
    (second / SNAPSHOTS / foreign.name).write_bytes(foreign.read_bytes())

    with tally_server(second) as server:
        status = server.status()
        text = server.metrics()
    assert "another log" in server.stderr
    assert foreign.name in server.stderr
    assert status["restored_from_offset"] is None
    assert status["folded_offset"] == second_end
    assert_equals_fresh_replay(second, text)


def test_periodic_checkpoints_keep_the_newest_two(data_dir: Path, bus_url: str | None) -> None:
    (data_dir / "tally.toml").write_text("[server]\ncheckpoint_every_events = 1000\n")
    items = events(6000, seed=9)
    seen: set[str] = set()
    server = start_server(data_dir)
    try:
        server.wait_ready()
        offsets: list[int] = []
        for start in range(0, len(items), 250):
            reply = server.post_events(items[start : start + 250])
            offsets.append(reply["last_offset"])
            names = [p.name for p in snapshot_files(data_dir) if p.suffix == ".snap"]
            # A new checkpoint is renamed into place before the oldest is pruned, so a
            # listing racing a checkpoint may see three files for a moment.
            assert len(names) <= 3, names
            seen.update(names)
        status = server.wait_folded(offsets[-1] + 1)
        # Checkpoints come every 1000 folded events, without a shutdown: the newest covers
        # all but at most the last 999 events.
        # One may still be in flight when the fold is done: wait until two looks agree.
        deadline = time.monotonic() + 10
        previous = -1
        while True:
            checkpoint = (status["last_checkpoint"] or {}).get("offset", -1)
            exported = samples(server.metrics())["tally_checkpoint_offset_bytes"]
            if checkpoint > offsets[-5] and checkpoint == previous == exported:
                break
            assert time.monotonic() < deadline, status
            previous = checkpoint
            time.sleep(0.25)
            status = server.status()
        assert checkpoint <= status["end_offset"]
        # Every checkpoint is logged; the two on disk are the newest two written.
        written = [
            int(m) for m in re.findall(r"tally\.worker: checkpoint at offset (\d+)", server.stderr)
        ]
        assert len(written) >= 3, written
        assert written == sorted(set(written)) and written[-1] == checkpoint
        assert {f"{o:020d}.snap" for o in written} >= seen
        files = snapshot_files(data_dir)
        assert [p.name for p in files] == [f"{o:020d}.snap" for o in written[-2:]]  # no tmp left
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL  # no final checkpoint
    finally:
        server.stop()

    # After a crash the newest periodic checkpoint is restored and the rest replayed.
    with tally_server(data_dir) as again:
        status = again.status()
        assert status["restored_from_offset"] == checkpoint
        assert status["folded_offset"] == status["end_offset"]
        assert_equals_fresh_replay(data_dir, again.metrics())


# -- JetStream: a re-created stream, retention ------------------------------------------


def delete_stream(server: NatsServer, stream: str) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect(server.url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    anyio.run(run)


def emit_jsonl(data_dir: Path, url: str, items: list[dict[str, Any]]) -> None:
    import json

    body = "".join(json.dumps(item) + "\n" for item in items).encode()
    tally(data_dir, "emit", "--bus", url, "-", stdin=body)


def test_a_recreated_stream_refuses_the_old_snapshot_and_refolds(
    data_dir: Path, nats_server: NatsServer
) -> None:
    url = f"{nats_server.url}/recreated"
    with tally_server(data_dir, "--bus", url) as server:
        fill(server, events(1000, seed=1))
        assert server.stop() == 0
    [old] = snapshot_files(data_dir)
    delete_stream(nats_server, "recreated")
    for start in range(0, 1500, 300):  # another log, with the old snapshot's position inside
        emit_jsonl(data_dir, url, events(1500, seed=2)[start : start + 300])

    with tally_server(data_dir, "--bus", url) as server:
        status = server.wait_caught_up()
        text = server.metrics()
    assert "another log" in server.stderr and old.name in server.stderr
    assert status["restored_from_offset"] is None
    assert status["folded_offset"] == status["end_offset"]
    assert_equals_fresh_replay(data_dir, text, "--bus", url)


def test_retention_past_the_checkpoint_is_reported_and_the_rest_folded(
    data_dir: Path, nats_server: NatsServer
) -> None:
    url = f"{nats_server.url}/limited"
    (data_dir / "tally.toml").write_text("[bus.nats]\nmax_bytes = 200000\n")
    with tally_server(data_dir, "--bus", url) as server:
        checkpoint = fill(server, events(500, seed=3), batch=100)
        assert server.stop() == 0
    for start in range(0, 6000, 300):  # far more than the stream keeps: the oldest go
        emit_jsonl(data_dir, url, events(6000, seed=4)[start : start + 300])

    with tally_server(data_dir, "--bus", url) as server:
        status = server.wait_caught_up()
    assert status["restored_from_offset"] == checkpoint
    assert status["skipped_from"] == checkpoint
    assert status["first_position"] == status["skipped_to"] > checkpoint
    assert status["folded_offset"] == status["end_offset"]
    assert "retention removed them" in server.stderr
