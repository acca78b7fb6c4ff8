"""Routes of the tally HTTP API; the one place errors become HTTP statuses (``App.__call__``).

Reads render the worker's in-memory state; writes validate everything, then
go through the group committer. This process's own gauges and request counts
are overlaid at render and never written to the log. Offsets in answers are the
bus's positions (byte offsets on the file bus); ``bus`` names the bus by URL.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import msgspec

from bus.errors import TallyError
from bus.events import MetricsReset
from bus.user_types import BUILTIN_SCHEMA, EventSchema
from bus.validate import events_from_body
from projections import catalogue as cat
from projections.exposition.formats import FORMATS, Format, content_type, render
from projections.exposition.negotiate import negotiate
from projections.metrics.families import CounterFamily, GaugeFamily
from projections.metrics.summary import AnyFamily
from server.conductor.bridge import ConductorBridge
from server.history import HistoryService
from server.http.routing import Handler, Request, Response, Router, gzip_if_accepted
from server.live.compact import list_bases
from server.live.group_commit import GroupCommitter
from server.live.sse import SseHub, Subscriber
from server.live.worker import ProjectionWorker
from server.log_query import handle_log
from server.otlp.receiver import OtlpReceiver
from server.page import PageAssets

__all__ = ["App", "tally_version"]

log = logging.getLogger("tally.app")

#: An ``Idempotency-Key``: 1 to 200 printable ASCII characters.
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x20-\x7e]{1,200}")


def _reading(spec: cat.FamilySpec, value: float) -> AnyFamily:
    """The unlabelled family ``spec`` holding ``value``."""
    family = cat.build_family(spec)
    assert isinstance(family, CounterFamily | GaugeFamily)
    family.values[()] = value
    return family


def tally_version() -> str:
    try:
        return version("tally")
    except PackageNotFoundError:
        return "0+unknown"


class App:
    def __init__(
        self,
        worker: ProjectionWorker,
        committer: GroupCommitter,
        hub: SseHub,
        *,
        token: str | None = None,
        protect_reads: bool = False,
        sse_min_interval_s: float = 0.1,
        conductor: ConductorBridge | None = None,
        otlp: OtlpReceiver | None = None,
        schema: EventSchema = BUILTIN_SCHEMA,
    ) -> None:
        self.conductor = conductor
        self.schema = schema  # the event types ``POST /api/v1/events`` accepts
        self.worker = worker
        self.committer = committer
        self.hub = hub
        self.token = token
        self.protect_reads = protect_reads
        self.sse_min_interval_s = sse_min_interval_s
        self.started = time.monotonic()
        self.requests: dict[tuple[str, str], float] = {}
        self.version = tally_version()
        self.history = HistoryService(worker)
        router = Router()
        self._read("/metrics", self.metrics, router)
        self._read("/api/v1/metrics", self.api_metrics, router)
        self._read("/api/v1/status", self.status, router)
        self._read("/api/v1/stream", self.stream, router)
        self._read("/api/v1/history", self.history.handle, router)
        self._read("/api/v1/log", self.log, router)
        router.add("/healthz", ["GET"], self.healthz)
        router.add("/readyz", ["GET"], self.readyz)
        router.add("/api/v1/events", ["POST"], self._guard(self.post_events))
        router.add("/api/v1/reset", ["POST"], self._guard(self.post_reset))
        self.otlp = otlp if otlp is not None else OtlpReceiver(committer)
        router.add("/v1/metrics", ["POST"], self._guard(self.otlp.metrics))
        router.add("/v1/logs", ["POST"], self._guard(self.otlp.logs))
        PageAssets.load().route(router)  # the live page: GET /, /page/*; never guarded
        self.router = router

    async def __call__(self, request: Request) -> Response:
        """Route ``request``; a ``TallyError`` becomes its own ``http_status`` and JSON body."""
        try:
            return await self.router(request)
        except TallyError as exc:
            if exc.http_status >= 500:
                log.error("%s %s failed: %s", request.method, request.path, exc)
            return Response.json(exc.http_status, exc.as_dict())

    def count_response(self, method: str, status: int) -> None:
        """Every response this server sends, for conductor_api_requests_total."""
        key = (method or "UNKNOWN", str(status))
        self.requests[key] = self.requests.get(key, 0.0) + 1.0

    # -- auth ------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.header("authorization") or ""
        scheme, _, credential = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        )

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if not self._authorized(request):
                response = Response.json(401, {"error": "missing or wrong bearer token"})
                response.headers.append(("www-authenticate", 'Bearer realm="tally"'))
                return response
            return await handler(request)

        return guarded

    def _read(self, path: str, handler: Handler, router: Router) -> None:
        router.add(path, ["GET"], self._guard(handler) if self.protect_reads else handler)

    # -- rendering -------------------------------------------------------------

    def overlay(self, end: int) -> list[AnyFamily]:
        """This process's own families (``catalogue.SERVER``), merged over the projection's;
        ``end`` is the bus's end."""
        last = self.worker.last_checkpoint
        readings = {
            cat.UPTIME: time.monotonic() - self.started,
            cat.END_OFFSET: float(end),
            cat.CHECKPOINT_OFFSET: float(last.offset) if last else -1.0,
            cat.SSE_SUBSCRIBERS: float(len(self.hub.subscribers)),
            cat.SSE_FRAMES: float(self.hub.frames_total),
            cat.SSE_CONFLATED: float(self.hub.conflated_total),
            cat.SSE_RESYNCS: float(self.hub.resyncs_total),
            cat.OTLP_POINTS_REJECTED: float(self.otlp.stats.points_rejected),
            cat.OTLP_RECORDS_REJECTED: float(self.otlp.stats.records_rejected),
            cat.OTLP_THROTTLED: float(self.otlp.stats.throttled),
        }
        by_label: dict[str, dict[tuple[str, ...], float]] = {
            cat.APPEND_ERRORS: {
                (reason,): float(count) for reason, count in self.committer.append_errors.items()
            },
        }
        families = []
        for spec in cat.SERVER:
            if spec.name in readings:
                families.append(_reading(spec, readings[spec.name]))
                continue
            family = cat.build_family(spec)
            assert isinstance(family, CounterFamily)
            family.values.update(by_label[spec.name])
            families.append(family)
        return families

    def families(self, end: int) -> list[AnyFamily]:
        """The projection's families with this server's own requests counted in, and the
        overlay; sorted by name."""
        folded = self.worker.projection.families(api_requests=self.requests)
        merged: dict[str, AnyFamily] = {f.name: f for f in folded}
        for family in self.overlay(end):
            merged[family.name] = family
        return [merged[name] for name in sorted(merged)]

    async def render(self, fmt: Format) -> bytes:
        end = await self.worker.end()
        return render(self.families(end), fmt, loops=self.worker.projection.loops())

    # -- handlers --------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        fmt = negotiate(request.header("accept"))
        body = await self.render(fmt)
        return gzip_if_accepted(request, Response(200, [("content-type", content_type(fmt))], body))

    async def api_metrics(self, request: Request) -> Response:
        name = request.query.get("format", "json")
        fmt = _format(name)
        if fmt is None:
            return Response.json(400, {"error": f"format must be one of {', '.join(FORMATS)}"})
        body = await self.render(fmt)
        return gzip_if_accepted(request, Response(200, [("content-type", content_type(fmt))], body))

    async def status(self, request: Request) -> Response:
        worker = self.worker
        end = await worker.end()
        projection = worker.projection
        last = worker.last_checkpoint
        body: dict[str, Any] = {
            "version": self.version,
            "uptime_s": time.monotonic() - self.started,
            "ready": worker.ready.is_set(),
            "bus": worker.bus.url,
            "folded_offset": projection.offset,
            "end_offset": end,
            "first_position": worker.first_position,
            "skipped_from": worker.skipped_from,
            "skipped_to": worker.skipped_to,
            "base_position": next(iter(list_bases(worker.data_dir)), (None,))[0],
            "lag_bytes": max(0, end - projection.offset),
            "events_by_type": dict(sorted(projection.events_by_type.items())),
            "corrupt_lines": projection.corrupt_lines,
            "unknown_events": projection.unknown_events,
            "sse_subscribers": len(self.hub.subscribers),
            "restored_from_offset": self.worker.restored_from,
            "last_checkpoint": None
            if last is None
            else {"offset": last.offset, "age_s": max(0.0, time.time() - last.mtime)},
            "history": asdict(self.history.stats),
            "ingest": {
                "groups_written": self.committer.groups_written,
                "events_written": self.committer.events_written,
            },
        }
        if self.conductor is not None:
            body["conductor"] = {"root": str(self.conductor.root), **asdict(self.conductor.stats)}
        return Response.json(200, body)

    async def healthz(self, request: Request) -> Response:
        return Response.text(200, "ok\n")

    async def readyz(self, request: Request) -> Response:
        if self.worker.ready.is_set():
            return Response.text(200, "ready\n")
        return Response.text(503, "replaying the bus\n")

    async def post_events(self, request: Request) -> Response:
        ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
        jsonl = ctype in ("application/x-ndjson", "application/jsonl")
        key = request.header("idempotency-key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            return Response.json(
                400, {"error": "Idempotency-Key must be 1 to 200 printable ASCII characters"}
            )
        # InvalidEvents: 400, see __call__
        events = events_from_body(request.body, jsonl=jsonl, schema=self.schema)
        offsets = await self.committer.submit(events, key)
        return Response.json(
            200,
            {
                "appended": len(offsets),
                "first_offset": offsets[0],
                "last_offset": offsets[-1],
                "bus": self.worker.bus.url,
            },
        )

    async def post_reset(self, request: Request) -> Response:
        prefix = request.query.get("prefix", "")
        if request.body.strip():
            try:
                doc = msgspec.json.decode(request.body, type=dict[str, str])
            except msgspec.MsgspecError as exc:
                return Response.json(400, {"error": f'expected {{"prefix": "..."}}: {exc}'})
            prefix = doc.get("prefix", prefix)
        offsets = await self.committer.submit([MetricsReset(prefix=prefix)])
        return Response.json(200, {"prefix": prefix, "offset": offsets[0]})

    async def log(self, request: Request) -> Response:
        return await handle_log(self.worker.bus, request)  # LogQueryError: 400

    async def stream(self, request: Request) -> Response:
        try:
            interval = float(request.query.get("interval", self.hub.default_interval_s))
        except ValueError:
            return Response.json(400, {"error": "interval must be a number of seconds"})
        if not interval >= self.sse_min_interval_s:
            return Response.json(400, {"error": f"interval must be >= {self.sse_min_interval_s}"})
        sub = Subscriber(match=request.query.get("match", ""), interval_s=interval)
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("x-accel-buffering", "no"),
        ]
        return Response(200, headers, stream=self.hub.stream(sub))


def _format(name: str) -> Format | None:
    for fmt in FORMATS:
        if fmt == name:
            return fmt
    return None
