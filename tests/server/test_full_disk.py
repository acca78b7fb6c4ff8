"""`tally serve` and `tally emit` on a full disk or a full JetStream stream: 507 and exit 1,
nothing half-written, and it recovers by itself.

A real server on a 3 MiB tmpfs data directory takes batches over HTTP until the
disk is full; every acknowledged event must be in the log, the log must check
clean, the failures must be counted, and once a filler file is removed ingest
works again without a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nats import NatsServer, nats_server, update_stream
from tests.support.serverproc import (
    Reply,
    TallyServer,
    bus_files,
    samples,
    tail,
    tally,
    tally_server,
)
from tests.support.tmpfs import fill, small_tmpfs

__all__ = ["nats_server"]  # the fixture, used by name


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tmpfs", "3m") as mnt:
        yield mnt


def _batch(n: int) -> list[dict[str, Any]]:
    return [
        {"type": "bus_message", "project": "web", "msg_type": "FACT", "msg_id": f"b{n}-{i}"}
        for i in range(100)
    ]


def _post_until_refused(server: TallyServer, most: int) -> tuple[Reply, int, set[str]]:
    """Post batches until one is refused: that reply, its batch number, and every msg_id
    acknowledged before it."""
    acknowledged: set[str] = set()
    for n in range(most):
        batch = _batch(n)
        reply = server.post(
            "/api/v1/events",
            json.dumps(batch).encode(),
            headers={"Content-Type": "application/json"},
        )
        if reply.status != 200:
            return reply, n, acknowledged
        acknowledged.update(ev["msg_id"] for ev in batch)
    raise AssertionError(f"{most} batches were all acknowledged")


def test_full_disk_answers_507_and_recovers(small_data_dir: Path) -> None:
    data_dir = small_data_dir / "data"
    data_dir.mkdir()
    filler = small_data_dir / "filler"
    fill(filler, limit=1024 * 1024)
    with tally_server(data_dir) as server:
        reply, _, acknowledged = _post_until_refused(server, 10_000)
        assert reply.status == 507, reply.status
        assert acknowledged
        # /metrics and /healthz keep answering; the failure is counted
        assert server.get("/healthz").status == 200
        values = samples(server.metrics())
        assert values['tally_append_errors_total{reason="no_space"}'] > 0
        # nothing half-written, every acknowledged event is there
        checked = tally(data_dir, "check", check=False)
        assert checked.returncode == 0, checked.stderr.decode()
        in_log = {ev["msg_id"] for ev in tail(data_dir) if "msg_id" in ev}
        assert acknowledged <= in_log
        assert len(in_log) == len(acknowledged)
        # space returns: ingest works again, no restart
        filler.unlink()
        after = server.post_events(_batch(-1))
        assert after["appended"] == 100
        server.wait_folded(after["last_offset"] + 1)
        assert server.get("/healthz").status == 200
        assert server.proc.poll() is None
    assert tally(data_dir, "check", check=False).returncode == 0


def test_emit_on_a_full_disk_exits_1_and_appends_nothing(small_data_dir: Path) -> None:
    data_dir = small_data_dir / "data"
    tally(data_dir, "emit", "loop_started", "loop_id=before")
    before = bus_files(data_dir)
    filler = small_data_dir / "filler"
    fill(filler)
    lines = [
        json.dumps({"type": "bus_message", "project": "web", "msg_type": "FACT", "msg_id": f"m{i}"})
        for i in range(2000)
    ]
    stdin = "\n".join(lines).encode() + b"\n"
    failed = tally(data_dir, "emit", "-", "--id", "batch-1", stdin=stdin, check=False)
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout == b""
    message = failed.stderr.decode()
    assert message.count("\n") == 1, message  # one line: what, where, and that nothing landed
    assert message.startswith(f"tally emit: cannot append to the log in {data_dir / 'bus'}: ")
    assert "No space left on device" in message
    assert message.endswith("; nothing was appended\n")
    # no fragment: the log is byte for byte what it was, and checks clean
    assert bus_files(data_dir) == before
    assert tally(data_dir, "check", check=False).returncode == 0
    # space returns: the same emit (same --id) appends, once
    filler.unlink()
    done = tally(data_dir, "emit", "-", "--id", "batch-1", stdin=stdin)
    assert len(done.stdout.splitlines()) == 2000
    again = tally(data_dir, "emit", "-", "--id", "batch-1", stdin=stdin)
    assert again.stdout == done.stdout
    ids = [ev["msg_id"] for ev in tail(data_dir) if ev["type"] == "bus_message"]
    assert ids == [f"m{i}" for i in range(2000)]


def test_a_full_jetstream_stream_answers_507_and_recovers(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A stream at its ``max_bytes`` with ``discard = "new"``: the same contract as a full disk."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"{nats_server.url}/full"
    (data_dir / "tally.toml").write_text(
        f'[bus]\nurl = "{url}"\n\n[bus.nats]\nmax_bytes = 100000\ndiscard = "new"\n'
    )
    with tally_server(data_dir) as server:
        reply, n, acknowledged = _post_until_refused(server, 1000)
        assert reply.status == 507, (reply.status, reply.body)
        assert "the stream is full" in reply.json()["error"]
        assert acknowledged
        assert server.get("/healthz").status == 200
        values = samples(server.metrics())
        assert values['tally_append_errors_total{reason="no_space"}'] > 0
        # tally emit on the same full stream: exit 1, one clear line, nothing appended
        refused = "".join(json.dumps(ev) + "\n" for ev in _batch(n)).encode()
        emitted = tally(data_dir, "emit", "-", stdin=refused, check=False)
        assert emitted.returncode == 1, emitted.stderr
        assert emitted.stderr.decode() == (
            f"tally emit: bus {url}: the stream is full (maximum bytes exceeded); "
            "nothing was appended\n"
        )
        # nothing acknowledged was dropped to make room, nothing refused was stored
        in_log = {ev["msg_id"] for ev in tail(data_dir) if "msg_id" in ev}
        assert in_log == acknowledged
        # room returns (the limit raised, no restart): appends work again
        update_stream(nats_server.url, "full", max_bytes=10_000_000)
        after = server.post_events(_batch(-1))
        assert after["appended"] == 100
        server.wait_folded(after["last_offset"] + 1)
        assert len(tally(data_dir, "emit", "-", stdin=refused).stdout.splitlines()) == 100
        assert server.proc.poll() is None
    # its start-up line says what an acknowledged append survives here: no fsync timer
    assert f"bus {url}, durability the stream's (" in server.stderr
    assert len([ev for ev in tail(data_dir) if "msg_id" in ev]) == len(acknowledged) + 200
