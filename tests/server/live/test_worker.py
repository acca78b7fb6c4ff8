"""The live projection worker on a bus that stops answering: it waits, then folds on."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from bus.config import BusConfig, JetStreamConfig
from bus.errors import BusError
from bus.events import LoopStarted
from bus.jetstream import JetStreamBus
from projections.config import ProjectionConfig
from server.live.worker import ProjectionWorker
from tests.support.nats import NatsServer, find_nats_server, nats_server

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(find_nats_server() is None, reason="nats-server not installed"),
]

__all__ = ["nats_server"]  # the fixture, used by name


def started(n: int) -> list[LoopStarted]:
    return [LoopStarted(loop_id=f"l{n}-{k}", ts=float(n)) for k in range(3)]


async def test_a_bus_that_stops_answering_is_read_again_once_it_does(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = BusConfig(nats=JetStreamConfig(request_timeout_s=1))
    caplog.set_level(logging.WARNING, logger="tally.worker")
    async with JetStreamBus(f"{nats_server.url}/worker", tmp_path, config) as bus:
        await bus.append(started(1))
        nats_server.kill()  # connected, then gone: the catch-up's first question times out
        worker = ProjectionWorker(tmp_path, bus, ProjectionConfig())
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            with anyio.fail_after(60):
                while "reading again from offset 0" not in caplog.text:
                    await anyio.sleep(0.05)
            assert not worker.ready.is_set()
            nats_server.start()  # the same store: the stream is back
            with anyio.fail_after(60):
                await worker.ready.wait()
                while True:  # and it follows: an append made once the client reconnected
                    try:
                        end = (await bus.append(started(2)))[-1] + 1
                        break
                    except BusError:
                        await anyio.sleep(0.2)
                while worker.projection.offset < end:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert worker.projection.events_by_type["loop_started"] == 6  # each event once
