"""The OTLP/HTTP receiver: ``POST /v1/metrics`` and ``POST /v1/logs``.

Rule: a request is answered only once its events are written (through the group
committer, as ``POST /api/v1/events``). Statuses follow the OTLP/HTTP
specification: 200 with a partial success naming what was left out, 400 for a
body that is not an export request, 415 for another content type or encoding,
429 (too much waiting to be written) and 503 (the log cannot be appended to) with
``Retry-After``, both of which exporters retry.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)

from bus.errors import TallyError
from server.http.routing import Request, Response
from server.live.group_commit import GroupCommitter
from server.otlp.decode import Decoded, Encoding, OtlpDecodeError, decode_logs, decode_metrics

__all__ = ["OtlpReceiver", "OtlpStats"]

log = logging.getLogger("tally.otlp")

_CONTENT_TYPES: Final[dict[str, Encoding]] = {
    "application/x-protobuf": "protobuf",
    "application/json": "json",
}
#: A gzip body may not inflate past this (the HTTP layer bounds what arrives).
MAX_INFLATED_BYTES: Final = 64 * 1024 * 1024
#: google.rpc.Code values of the Status bodies sent with errors.
_INVALID_ARGUMENT: Final = 3
_RESOURCE_EXHAUSTED: Final = 8
_UNAVAILABLE: Final = 14


@dataclass(slots=True)
class OtlpStats:
    """What this receiver left out or refused since the process started."""

    points_rejected: int = 0
    records_rejected: int = 0
    throttled: int = 0


class OtlpReceiver:
    """The two OTLP handlers over one group committer.

    ``max_pending_events``: when more events than this wait to be written, a request
    is refused with 429 and ``Retry-After: retry_after_s``.
    """

    def __init__(
        self,
        committer: GroupCommitter,
        *,
        max_pending_events: int = 100_000,
        retry_after_s: int = 1,
    ) -> None:
        self.committer = committer
        self.max_pending_events = max_pending_events
        self.retry_after_s = retry_after_s
        self.stats = OtlpStats()

    async def metrics(self, request: Request) -> Response:
        response, rejected = await self._export(request, decode_metrics, _metrics_response)
        self.stats.points_rejected += rejected
        return response

    async def logs(self, request: Request) -> Response:
        response, rejected = await self._export(request, decode_logs, _logs_response)
        self.stats.records_rejected += rejected
        return response

    async def _export(
        self,
        request: Request,
        decode: Callable[[bytes, Encoding], Decoded],
        answer: Callable[[int, str], Message],
    ) -> tuple[Response, int]:
        """The answer, and how many points or records it left out."""
        ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
        encoding = _CONTENT_TYPES.get(ctype)
        if encoding is None:
            error = "content type must be application/x-protobuf or application/json"
            return Response.json(415, {"error": error}), 0
        coding = (request.header("content-encoding") or "identity").strip().lower()
        if coding not in ("identity", "gzip"):
            return Response.json(415, {"error": f"content encoding {coding!r}: gzip or none"}), 0
        try:
            body = _gunzip(request.body) if coding == "gzip" else request.body
            decoded = decode(body, encoding)
        except OtlpDecodeError as exc:
            return _status(400, encoding, _INVALID_ARGUMENT, str(exc)), 0
        if decoded.events:
            pending = self.committer.pending_events
            if pending and pending + len(decoded.events) > self.max_pending_events:
                return self._retry(429, encoding, _RESOURCE_EXHAUSTED, "too many events pending"), 0
            try:
                await self.committer.submit(decoded.events)
            except TallyError as exc:
                if exc.http_status not in (503, 507):
                    raise
                log.warning("OTLP export refused: %s", exc)
                return self._retry(503, encoding, _UNAVAILABLE, str(exc)), 0
        return _message(200, encoding, answer(decoded.rejected, decoded.message)), decoded.rejected

    def _retry(self, status: int, encoding: Encoding, code: int, message: str) -> Response:
        self.stats.throttled += 1
        response = _status(status, encoding, code, message)
        response.headers.append(("retry-after", str(self.retry_after_s)))
        return response


def _gunzip(body: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise OtlpDecodeError(f"not a valid gzip body: {exc}") from None
    if inflater.unconsumed_tail:
        raise OtlpDecodeError(f"the body inflates past {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise OtlpDecodeError("the gzip body is truncated")
    return data


def _metrics_response(rejected: int, message: str) -> Message:
    response = ExportMetricsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = message
    return response


def _logs_response(rejected: int, message: str) -> Message:
    response = ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return response


def _message(status: int, encoding: Encoding, message: Message) -> Response:
    if encoding == "protobuf":
        return Response(
            status, [("content-type", "application/x-protobuf")], message.SerializeToString()
        )
    body = json_format.MessageToJson(message, indent=None).encode()
    return Response(status, [("content-type", "application/json")], body)


def _status(status: int, encoding: Encoding, code: int, message: str) -> Response:
    """An error answered as a google.rpc.Status in the request's encoding (OTLP/HTTP)."""
    if encoding == "json":
        body = msgspec.json.encode({"code": code, "message": message})
        return Response(status, [("content-type", "application/json")], body)
    text = message.encode()
    # Status { int32 code = 1; string message = 2; }: two fields, written by hand
    body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
    return Response(status, [("content-type", "application/x-protobuf")], body)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
