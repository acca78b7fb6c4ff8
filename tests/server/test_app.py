"""App's one translation: a TallyError raised under a route becomes its own HTTP status.

The app runs in process over real parts (a real writer on a real data
directory, the group committer's task running); the failures are real too: a
segment on ``/dev/full`` (ENOSPC) and a writer closed under the app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from bus.errors import BusError, BusFull, InvalidEvents
from bus.segments import bus_dir, segment_name
from bus.writer import BusWriter
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
async def running_app(writer: BusWriter, data_dir: Path) -> AsyncIterator[App]:
    worker = ProjectionWorker(data_dir, ProjectionConfig())
    hub = SseHub(worker.projection.families, lambda: worker.projection.offset)
    committer = GroupCommitter(writer)
    async with anyio.create_task_group() as services:
        await services.start(committer.run)
        yield App(worker, committer, hub)
        services.cancel_scope.cancel()


async def post(app: App, path: str, body: bytes) -> Response:
    request = Request("POST", path, path, {}, [("content-type", "application/json")], body, "t")
    return await app(request)


async def test_invalid_events_are_400_naming_line_and_field(data_dir: Path) -> None:
    with BusWriter(data_dir) as writer:
        async with running_app(writer, data_dir) as app:
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
    with BusWriter(data_dir) as writer:
        async with running_app(writer, data_dir) as app:
            for path, body in (("/api/v1/events", EVENT), ("/api/v1/reset", b"")):
                response = await post(app, path, body)
                assert response.status == BusFull.http_status == 507
                assert "No space left on device" in json.loads(response.body)["error"]


async def test_a_log_that_cannot_be_appended_to_is_503(data_dir: Path) -> None:
    writer = BusWriter(data_dir)
    async with running_app(writer, data_dir) as app:
        assert (await post(app, "/api/v1/events", EVENT)).status == 200
        writer.close()
        response = await post(app, "/api/v1/events", EVENT)
    assert response.status == BusError.http_status == 503
    assert json.loads(response.body) == {"error": "the bus writer is closed"}
