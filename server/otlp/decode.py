"""OTLP export requests (protobuf or OTLP JSON) -> ``otel_metric`` and ``otel_log`` events.

Rule: bytes in, events out; no sockets, no clock. Decoding uses the official
protobuf classes (``opentelemetry-proto``). A request that cannot be parsed at all
raises ``OtlpDecodeError`` (400); a data point or log record that cannot become a
valid event is left out and counted (``Decoded.rejected``, the partial success).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from bus.errors import TallyError
from bus.events import Event, OtelLog, OtelMetric

__all__ = ["Decoded", "OtlpDecodeError", "decode_logs", "decode_metrics"]

Encoding = Literal["protobuf", "json"]

#: AggregationTemporality enum values -> the event's words.
_TEMPORALITY: Final[dict[int, Literal["unspecified", "delta", "cumulative"]]] = {
    0: "unspecified",
    1: "delta",
    2: "cumulative",
}
#: DataPointFlags.FLAG_NO_RECORDED_VALUE: the point is a marker, not a value.
_NO_RECORDED_VALUE: Final = 1
_json: Final = msgspec.json.Decoder()


class OtlpDecodeError(TallyError):
    """Raised when an OTLP request body is not a valid export request of its content type."""

    exit_code = 2
    http_status = 400


@dataclass(slots=True)
class Decoded:
    """What one request holds: the events to append, and what was left out and why."""

    events: list[Event] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, count: int, why: str) -> None:
        self.rejected += count
        if why not in self.errors and len(self.errors) < 5:
            self.errors.append(why)

    @property
    def message(self) -> str:
        return "; ".join(self.errors)


def _parse(body: bytes, encoding: Encoding, message: Message, *, hex_ids: bool = False) -> None:
    try:
        if encoding == "protobuf":
            message.ParseFromString(body)
            return
        doc = _json.decode(body)
        if not isinstance(doc, dict):
            raise OtlpDecodeError("an OTLP JSON request is a JSON object")
        if hex_ids:
            _hex_ids_to_base64(doc)
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, msgspec.DecodeError, ValueError) as exc:
        kind = "protobuf" if encoding == "protobuf" else "OTLP JSON"
        raise OtlpDecodeError(f"not a valid {kind} export request: {exc}") from None


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """OTLP JSON writes trace and span ids in hex; protobuf's JSON mapping wants base64."""
    for resource in _items(doc, "resourceLogs", "resource_logs"):
        for scope in _items(resource, "scopeLogs", "scope_logs"):
            for record in _items(scope, "logRecords", "log_records"):
                for camel, snake in (("traceId", "trace_id"), ("spanId", "span_id")):
                    for key in (camel, snake):
                        value = record.get(key)
                        if isinstance(value, str) and value:
                            try:
                                raw = bytes.fromhex(value)
                            except ValueError:
                                raise OtlpDecodeError(f"{key} {value!r} is not hex") from None
                            record[key] = base64.b64encode(raw).decode()


def _items(doc: object, *keys: str) -> Iterable[dict[str, Any]]:
    if not isinstance(doc, dict):
        return ()
    for key in keys:
        value = doc.get(key)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
    return ()


# -- attributes ----------------------------------------------------------------


def _any(value: AnyValue) -> Any:
    """An AnyValue as plain Python (bytes as base64 text)."""
    which = value.WhichOneof("value")
    match which:
        case "string_value":
            return value.string_value
        case "bool_value":
            return value.bool_value
        case "int_value":
            return value.int_value
        case "double_value":
            return value.double_value
        case "array_value":
            return [_any(v) for v in value.array_value.values]
        case "kvlist_value":
            return {kv.key: _any(kv.value) for kv in value.kvlist_value.values}
        case "bytes_value":
            return base64.b64encode(value.bytes_value).decode()
    return None


def _scalar(value: Any) -> str | int | float | bool:
    """An attribute value as an event keeps it: scalars as they are, the rest as JSON."""
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return msgspec.json.encode(value).decode()


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, str | int | float | bool]:
    """``{key: _scalar(_any(value))}`` of the pairs that have a value (the last of a key
    wins); the scalar kinds are read straight off the AnyValue (this runs for every
    data point and log record)."""
    out: dict[str, str | int | float | bool] = {}
    for kv in pairs:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = value.string_value
        elif which == "int_value":
            out[kv.key] = value.int_value
        elif which == "double_value":
            number = value.double_value
            out[kv.key] = number if math.isfinite(number) else str(number)
        elif which == "bool_value":
            out[kv.key] = value.bool_value
        elif which is not None:
            plain = _any(value)
            if plain is not None:
                out[kv.key] = _scalar(plain)
    return out


def _text(value: AnyValue) -> str:
    plain = _any(value)
    if plain is None:
        return ""
    return plain if isinstance(plain, str) else msgspec.json.encode(_json_safe(plain)).decode()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


# -- metrics ---------------------------------------------------------------------


def decode_metrics(body: bytes, encoding: Encoding, *, fast: bool = True) -> Decoded:
    """Every data point of an ExportMetricsServiceRequest as an ``otel_metric`` event.

    Sum, gauge and histogram points are built as events directly (``_fast_metric``) when
    nothing in them needs validating; otherwise, and with ``fast=False``, every point goes
    through a dict and ``msgspec.convert`` (``_metric``): the same events either way.
    Each resource's attributes are converted once and shared by its events."""
    request = ExportMetricsServiceRequest()
    _parse(body, encoding, request)
    out = Decoded()
    for rm in request.resource_metrics:
        resource = _attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            scope, version = sm.scope.name, sm.scope.version
            common = {"resource": resource, "scope": scope, "scope_version": version}
            for metric in sm.metrics:
                if not (fast and _fast_metric(metric, resource, scope, version, out.events)):
                    _metric(metric, common, out)
    return out


def _fast_metric(
    metric: Metric, resource: dict[str, Any], scope: str, version: str, events: list[Event]
) -> bool:
    """Append a sum's, gauge's or histogram's points as events, as ``_metric`` would, and
    say so; False (nothing appended) when a point needs ``_metric``'s checks: no name, an
    unknown temporality, a point without a finite value, bounds not finite, or counts not
    one more than the bounds (protobuf's integers are in range as they come)."""
    name = metric.name
    if not name:
        return False
    kind = metric.WhichOneof("data")
    isfinite = math.isfinite
    if kind in {"sum", "gauge"}:
        point_kind: Literal["sum", "gauge"] = "sum"
        if kind == "sum":
            data: Any = metric.sum
            temporality = _TEMPORALITY.get(data.aggregation_temporality)
            if temporality is None:
                return False
            monotonic = data.is_monotonic
        else:
            data, point_kind = metric.gauge, "gauge"
            temporality, monotonic = "unspecified", False
        points = data.data_points
        values: list[float] = []
        for p in points:
            if p.flags & _NO_RECORDED_VALUE:
                values.append(math.nan)  # skipped below
                continue
            which = p.WhichOneof("value")
            if which == "as_int":
                values.append(float(p.as_int))
            elif which == "as_double" and isfinite(p.as_double):
                values.append(p.as_double)
            else:
                return False
        unit, description = metric.unit, metric.description
        for p, value in zip(points, values, strict=True):
            if p.flags & _NO_RECORDED_VALUE:
                continue
            events.append(
                OtelMetric(
                    name=name,
                    kind=point_kind,
                    unit=unit,
                    description=description,
                    temporality=temporality,
                    monotonic=monotonic,
                    start_time_unix_nano=p.start_time_unix_nano,
                    time_unix_nano=p.time_unix_nano,
                    value=value,
                    attributes=_attributes(p.attributes),
                    resource=resource,
                    scope=scope,
                    scope_version=version,
                )
            )
        return True
    if kind == "histogram":
        histogram = metric.histogram
        temporality = _TEMPORALITY.get(histogram.aggregation_temporality)
        if temporality is None:
            return False
        hpoints = histogram.data_points
        for h in hpoints:
            if h.flags & _NO_RECORDED_VALUE:
                continue
            n = len(h.bucket_counts)
            bounds = h.explicit_bounds
            if (n and n != len(bounds) + 1) or not all(isfinite(b) for b in bounds):
                return False
        unit, description = metric.unit, metric.description
        for h in hpoints:
            if h.flags & _NO_RECORDED_VALUE:
                continue
            events.append(
                OtelMetric(
                    name=name,
                    kind="histogram",
                    unit=unit,
                    description=description,
                    temporality=temporality,
                    start_time_unix_nano=h.start_time_unix_nano,
                    time_unix_nano=h.time_unix_nano,
                    bounds=list(h.explicit_bounds),
                    counts=list(h.bucket_counts),
                    sum=h.sum if h.HasField("sum") and isfinite(h.sum) else None,
                    count=h.count,
                    attributes=_attributes(h.attributes),
                    resource=resource,
                    scope=scope,
                    scope_version=version,
                )
            )
        return True
    return False


def _metric(metric: Metric, common: dict[str, Any], out: Decoded) -> None:
    kind = metric.WhichOneof("data")
    head = {
        "type": "otel_metric",
        "name": metric.name,
        "unit": metric.unit,
        "description": metric.description,
        **common,
    }
    match kind:
        case "sum" | "gauge":
            data = metric.sum if kind == "sum" else metric.gauge
            if kind == "sum":
                head["temporality"] = _TEMPORALITY.get(metric.sum.aggregation_temporality)
                head["monotonic"] = metric.sum.is_monotonic
            for p in data.data_points:
                if p.flags & _NO_RECORDED_VALUE:
                    continue
                which = p.WhichOneof("value")
                value = float(p.as_int) if which == "as_int" else p.as_double
                if which is None or not math.isfinite(value):
                    out.reject(1, f"{metric.name}: a data point without a finite value")
                    continue
                _add(out, metric.name, {**head, **_times(p), "kind": kind, "value": value}, p)
        case "histogram":
            head["temporality"] = _TEMPORALITY.get(metric.histogram.aggregation_temporality)
            for h in metric.histogram.data_points:
                if h.flags & _NO_RECORDED_VALUE:
                    continue
                bounds = list(h.explicit_bounds)
                if not all(math.isfinite(b) for b in bounds):
                    out.reject(1, f"{metric.name}: histogram bounds must be finite")
                    continue
                point = {
                    **head,
                    **_times(h),
                    "kind": "histogram",
                    "bounds": bounds,
                    "counts": list(h.bucket_counts),
                    "sum": h.sum if h.HasField("sum") and math.isfinite(h.sum) else None,
                    "count": h.count,
                }
                _add(out, metric.name, point, h)
        case "exponential_histogram":
            head["temporality"] = _TEMPORALITY.get(
                metric.exponential_histogram.aggregation_temporality
            )
            for e in metric.exponential_histogram.data_points:
                if e.flags & _NO_RECORDED_VALUE:
                    continue
                point = {
                    **head,
                    **_times(e),
                    "kind": "exponential_histogram",
                    "sum": e.sum if e.HasField("sum") and math.isfinite(e.sum) else None,
                    "count": e.count,
                    "scale": e.scale,
                    "zero_count": e.zero_count,
                    "positive_offset": e.positive.offset,
                    "positive_counts": list(e.positive.bucket_counts),
                    "negative_offset": e.negative.offset,
                    "negative_counts": list(e.negative.bucket_counts),
                }
                _add(out, metric.name, point, e)
        case "summary":
            n = len(metric.summary.data_points)
            out.reject(n, f"{metric.name}: summary points are not supported")
        case _:
            out.reject(0, f"{metric.name}: a metric without data")


def _times(point: Any) -> dict[str, int]:
    return {
        "start_time_unix_nano": point.start_time_unix_nano,
        "time_unix_nano": point.time_unix_nano,
    }


def _add(out: Decoded, name: str, doc: dict[str, Any], point: Any) -> None:
    doc["attributes"] = _attributes(point.attributes)
    try:
        out.events.append(msgspec.convert(doc, OtelMetric))
    except (msgspec.ValidationError, ValueError) as exc:
        out.reject(1, f"{name or '(no name)'}: {exc}")


# -- logs ------------------------------------------------------------------------


def decode_logs(body: bytes, encoding: Encoding) -> Decoded:
    """Every log record of an ExportLogsServiceRequest as an ``otel_log`` event."""
    request = ExportLogsServiceRequest()
    _parse(body, encoding, request, hex_ids=True)
    out = Decoded()
    for rl in request.resource_logs:
        resource = _attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for record in sl.log_records:
                doc = _record(record)
                doc.update(resource=resource, scope=sl.scope.name, scope_version=sl.scope.version)
                try:
                    out.events.append(msgspec.convert(doc, OtelLog))
                except (msgspec.ValidationError, ValueError) as exc:
                    out.reject(1, f"log record: {exc}")
    return out


def _event_name(record: LogRecord, attributes: dict[str, Any], body: str) -> str:
    """The record's event name; else its body when that is the ``event.name`` attribute with
    a namespace (Claude Code: body ``claude_code.api_request``, ``event.name`` ``api_request``);
    else the ``event.name`` attribute."""
    if record.event_name:
        return record.event_name
    short = attributes.get("event.name")
    if not isinstance(short, str):
        return ""
    if short and body.endswith(f".{short}") and " " not in body:
        return body
    return short


def _record(record: LogRecord) -> dict[str, Any]:
    attributes = _attributes(record.attributes)
    body = _text(record.body)
    return {
        "type": "otel_log",
        "event_name": _event_name(record, attributes, body),
        "body": body,
        "severity_number": record.severity_number,
        "severity_text": record.severity_text,
        "time_unix_nano": record.time_unix_nano,
        "observed_time_unix_nano": record.observed_time_unix_nano,
        "trace_id": binascii.hexlify(record.trace_id).decode(),
        "span_id": binascii.hexlify(record.span_id).decode(),
        "attributes": attributes,
    }
