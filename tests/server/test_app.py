"""App's one translation: a TallyError raised under a route becomes its own HTTP status.

The app runs in process over real parts (a real file bus on a real data
directory, the group committer's task running); the failures are real too: a
segment on ``/dev/full`` (ENOSPC) and a bus closed under the app. Also here: an
``Idempotency-Key`` makes a submission a batch of its own, appended once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from bus.config import BusConfig
from bus.contract import Bus, open_bus
from bus.errors import BusError, BusFull, InvalidEvents
from bus.segments import bus_dir, segment_name
from projections.config import ProjectionConfig
from server.app import App
from server.http.routing import Request, Response
from server.live.group_commit import GroupCommitter
from server.live.sse import SseHub
from server.live.worker import ProjectionWorker
from tests.support.serverproc import bus_files

pytestmark = pytest.mark.anyio

EVENT = b'{"type":"loop_started","loop_id":"a"}'


@asynccontextmanager
async def running_app(bus: Bus, data_dir: Path) -> AsyncIterator[App]:
    worker = ProjectionWorker(data_dir, bus, ProjectionConfig())
    hub = SseHub(worker.projection.families, lambda: worker.projection.offset)
    committer = GroupCommitter(bus)
    async with anyio.create_task_group() as services:
        await services.start(committer.run)
        yield App(worker, committer, hub)
        services.cancel_scope.cancel()


def file_bus(data_dir: Path) -> Bus:
    return open_bus(None, data_dir, BusConfig())


async def post(app: App, path: str, body: bytes, key: str | None = None) -> Response:
    headers = [("content-type", "application/json")]
    if key is not None:
        headers.append(("idempotency-key", key))
    request = Request("POST", path, path, {}, headers, body, "t")
    return await app(request)


async def test_invalid_events_are_400_naming_line_and_field(data_dir: Path) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        response = await post(app, "/api/v1/events", b'[{"type":"loop_started"}]')
    assert response.status == InvalidEvents.http_status == 400
    assert json.loads(response.body) == {
        "error": "invalid events; nothing appended",
        "errors": [
            {"line": 1, "field": "loop_id", "error": "Object missing required field `loop_id`"}
        ],
    }
    assert bus_files(data_dir) == {}


async def test_a_full_disk_is_507(data_dir: Path) -> None:
    bus_dir(data_dir).mkdir()
    (bus_dir(data_dir) / segment_name(0)).symlink_to("/dev/full")
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        for path, body in (("/api/v1/events", EVENT), ("/api/v1/reset", b"")):
            response = await post(app, path, body)
            assert response.status == BusFull.http_status == 507
            assert "No space left on device" in json.loads(response.body)["error"]


async def test_a_log_that_cannot_be_appended_to_is_503(data_dir: Path) -> None:
    bus = file_bus(data_dir)
    async with running_app(bus, data_dir) as app:
        assert (await post(app, "/api/v1/events", EVENT)).status == 200
        await bus.aclose()
        response = await post(app, "/api/v1/events", EVENT)
    assert response.status == BusError.http_status == 503
    assert json.loads(response.body) == {"error": f"the bus {bus.url} is closed"}


async def test_a_keyed_submission_is_a_batch_of_its_own_appended_once(data_dir: Path) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        one = b'{"type":"loop_started","loop_id":"one"}'
        two = b'[{"type":"loop_started","loop_id":"a"},{"type":"loop_started","loop_id":"b"}]'
        replies: dict[str, Response] = {}

        async def send(name: str, body: bytes, key: str | None) -> None:
            replies[name] = await post(app, "/api/v1/events", body, key)

        async with anyio.create_task_group() as tg:  # all queued before the committer runs
            tg.start_soon(send, "plain1", one, None)
            tg.start_soon(send, "keyed", two, "retry-me")
            tg.start_soon(send, "plain2", one, None)
        again = await post(app, "/api/v1/events", two, "retry-me")
        docs = {name: json.loads(reply.body) for name, reply in replies.items()}
        assert json.loads(again.body) == docs["keyed"]
        assert docs["keyed"]["appended"] == 2 and docs["keyed"]["bus"] == bus.url
        # plain, keyed alone, plain; the retry is a fourth append, which the bus de-duplicated
        assert app.committer.groups_written == 4
        events = [pos for batch in [b async for b in bus.read(0)] for pos, _ in batch]
        assert len(events) == 4
        bad = await post(app, "/api/v1/events", one, "tab\tin key")
        assert bad.status == 400 and "Idempotency-Key" in json.loads(bad.body)["error"]
