"""`tally serve` on a full disk: 507, nothing half-written, and it recovers by itself.

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

from tests.support.serverproc import samples, tail, tally, tally_server
from tests.support.tmpfs import fill, small_tmpfs


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tmpfs", "3m") as mnt:
        yield mnt


def _batch(n: int) -> list[dict[str, Any]]:
    return [
        {"type": "bus_message", "project": "web", "msg_type": "FACT", "msg_id": f"b{n}-{i}"}
        for i in range(100)
    ]


def test_full_disk_answers_507_and_recovers(small_data_dir: Path) -> None:
    data_dir = small_data_dir / "data"
    data_dir.mkdir()
    filler = small_data_dir / "filler"
    fill(filler, limit=1024 * 1024)
    acknowledged: set[str] = set()
    with tally_server(data_dir) as server:
        status = 0
        for n in range(10_000):
            batch = _batch(n)
            reply = server.post(
                "/api/v1/events",
                json.dumps(batch).encode(),
                headers={"Content-Type": "application/json"},
            )
            status = reply.status
            if status != 200:
                break
            acknowledged.update(ev["msg_id"] for ev in batch)
        assert status == 507, status
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
