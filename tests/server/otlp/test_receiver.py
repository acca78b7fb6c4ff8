"""The OTLP/HTTP routes in process over a real file bus: statuses, encodings, responses."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from bus.config import BusConfig
from bus.contract import Bus, open_bus
from bus.segments import bus_dir, segment_name
from projections.config import ProjectionConfig
from server.app import App
from server.http.routing import Request, Response
from server.live.group_commit import GroupCommitter
from server.live.sse import SseHub
from server.live.worker import ProjectionWorker
from server.otlp.receiver import OtlpReceiver
from tests.support.serverproc import bus_files

pytestmark = pytest.mark.anyio

PROTOBUF = "application/x-protobuf"
GAUGE = {
    "resourceMetrics": [
        {"scopeMetrics": [{"metrics": [{"name": "g", "gauge": {"dataPoints": [{"asDouble": 2}]}}]}]}
    ]
}
WITH_SUMMARY = {
    "resourceMetrics": [
        {
            "scopeMetrics": [
                {
                    "metrics": [
                        {"name": "g", "gauge": {"dataPoints": [{"asDouble": 2}]}},
                        {"name": "s", "summary": {"dataPoints": [{"count": "1"}]}},
                    ]
                }
            ]
        }
    ]
}
LOGS = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "hi"}}]}]}]}


@asynccontextmanager
async def running_app(
    bus: Bus, data_dir: Path, *, token: str | None = None, max_pending: int = 100_000
) -> AsyncIterator[App]:
    worker = ProjectionWorker(data_dir, bus, ProjectionConfig())
    hub = SseHub(worker.projection.families, lambda: worker.projection.offset)
    committer = GroupCommitter(bus)
    otlp = OtlpReceiver(committer, max_pending_events=max_pending)
    async with anyio.create_task_group() as services:
        await services.start(committer.run)
        yield App(worker, committer, hub, token=token, otlp=otlp)
        services.cancel_scope.cancel()


def file_bus(data_dir: Path) -> Bus:
    return open_bus(None, data_dir, BusConfig())


async def post(app: App, path: str, body: bytes, ctype: str, **headers: str) -> Response:
    pairs = [("content-type", ctype), *((k.replace("_", "-"), v) for k, v in headers.items())]
    return await app(Request("POST", path, path, {}, pairs, body, "t"))


def protobuf(doc: dict[str, object]) -> bytes:
    return json_format.ParseDict(doc, ExportMetricsServiceRequest()).SerializeToString()


def appended(data_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for data in bus_files(data_dir).values() for line in data.splitlines()]


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("ctype", [PROTOBUF, "application/json", "application/json; charset=utf-8"])
async def test_an_export_is_appended_and_answered_in_its_encoding(
    data_dir: Path, ctype: str, gzipped: bool
) -> None:
    body = protobuf(GAUGE) if ctype == PROTOBUF else json.dumps(GAUGE).encode()
    headers = {"content_encoding": "gzip"} if gzipped else {}
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        response = await post(
            app, "/v1/metrics", gzip.compress(body) if gzipped else body, ctype, **headers
        )
    assert response.status == 200
    assert ("content-type", ctype.split(";", maxsplit=1)[0]) in response.headers
    if ctype == PROTOBUF:
        assert (
            ExportMetricsServiceResponse.FromString(response.body) == ExportMetricsServiceResponse()
        )
    else:
        assert json.loads(response.body) == {}
    [event] = appended(data_dir)
    assert (event["type"], event["name"], event["value"]) == ("otel_metric", "g", 2.0)
    assert isinstance(event["ts"], float)


async def test_partial_success_names_the_rejected_points(data_dir: Path) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        response = await post(
            app, "/v1/metrics", json.dumps(WITH_SUMMARY).encode(), "application/json"
        )
        proto = await post(app, "/v1/metrics", protobuf(WITH_SUMMARY), PROTOBUF)
    assert response.status == proto.status == 200
    assert json.loads(response.body) == {
        "partialSuccess": {
            "rejectedDataPoints": "1",
            "errorMessage": "s: summary points are not supported",
        }
    }
    answer = ExportMetricsServiceResponse.FromString(proto.body)
    assert answer.partial_success.rejected_data_points == 1
    assert len(appended(data_dir)) == 2
    assert app.otlp.stats.points_rejected == 2


async def test_logs_are_appended(data_dir: Path) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        response = await post(app, "/v1/logs", json.dumps(LOGS).encode(), "application/json")
    assert response.status == 200
    assert json.loads(response.body) == json.loads(
        json_format.MessageToJson(ExportLogsServiceResponse())
    )
    [event] = appended(data_dir)
    assert (event["type"], event["body"]) == ("otel_log", "hi")


@pytest.mark.parametrize(
    ("body", "ctype", "headers", "status"),
    [
        (b"{}", "text/plain", {}, 415),
        (b"{}", "application/x-ndjson", {}, 415),
        (b"{}", "application/json", {"content_encoding": "br"}, 415),
        (b"{nope", "application/json", {}, 400),
        (b"\xff\xff", PROTOBUF, {}, 400),
        (b"not gzip", "application/json", {"content_encoding": "gzip"}, 400),
        (gzip.compress(b"{}")[:-4], "application/json", {"content_encoding": "gzip"}, 400),
    ],
)
async def test_refusals_append_nothing(
    data_dir: Path, body: bytes, ctype: str, headers: dict[str, str], status: int
) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        response = await post(app, "/v1/metrics", body, ctype, **headers)
    assert response.status == status
    assert appended(data_dir) == []


async def test_a_malformed_protobuf_is_answered_with_a_status_message(data_dir: Path) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        response = await post(app, "/v1/logs", b"\xff\xff", PROTOBUF)
    assert response.status == 400
    assert response.body[:2] == b"\x08\x03"  # google.rpc.Status code INVALID_ARGUMENT
    assert b"not a valid protobuf export request" in response.body


async def test_the_bearer_token_rule_applies(data_dir: Path) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir, token="s3cret") as app:
        refused = await post(app, "/v1/metrics", protobuf(GAUGE), PROTOBUF)
        taken = await post(
            app, "/v1/metrics", protobuf(GAUGE), PROTOBUF, authorization="Bearer s3cret"
        )
    assert (refused.status, taken.status) == (401, 200)
    assert len(appended(data_dir)) == 1


async def test_a_full_disk_is_503_with_retry_after(data_dir: Path) -> None:
    bus_dir(data_dir).mkdir()
    (bus_dir(data_dir) / segment_name(0)).symlink_to("/dev/full")
    async with file_bus(data_dir) as bus, running_app(bus, data_dir) as app:
        response = await post(app, "/v1/metrics", protobuf(GAUGE), PROTOBUF)
    assert response.status == 503
    assert ("retry-after", "1") in response.headers


async def test_too_much_pending_is_429_with_retry_after(data_dir: Path) -> None:
    async with file_bus(data_dir) as bus, running_app(bus, data_dir, max_pending=1) as app:
        app.committer.pending_events = 1  # another export still waiting to be written
        response = await post(app, "/v1/metrics", protobuf(GAUGE), PROTOBUF)
        app.committer.pending_events = 0
        after = await post(app, "/v1/metrics", protobuf(GAUGE), PROTOBUF)
    assert response.status == 429
    assert ("retry-after", "1") in response.headers
    assert app.otlp.stats.throttled == 1
    assert after.status == 200
    assert len(appended(data_dir)) == 1
