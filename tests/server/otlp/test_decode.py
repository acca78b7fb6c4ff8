"""OTLP export requests, protobuf and OTLP JSON, into events: a case table per data type."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from bus.events import OtelLog, OtelMetric, decode_event, encode_events
from server.otlp.decode import OtlpDecodeError, decode_logs, decode_metrics

RESOURCE = {"attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]}


def metrics_doc(*metrics: dict[str, Any]) -> dict[str, Any]:
    scope = {"scope": {"name": "com.anthropic.claude_code", "version": "2.0"}, "metrics": metrics}
    return {"resourceMetrics": [{"resource": RESOURCE, "scopeMetrics": [scope]}]}


def attrs(**values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k.replace("_", "."), "value": v} for k, v in values.items()]


SUM = {
    "name": "claude_code.token.usage",
    "unit": "tokens",
    "description": "Number of tokens used",
    "sum": {
        "aggregationTemporality": 1,
        "isMonotonic": True,
        "dataPoints": [
            {
                "asInt": "1200",
                "startTimeUnixNano": "1764633600000000000",
                "timeUnixNano": "1764633660000000000",
                "attributes": attrs(
                    type={"stringValue": "input"},
                    session_id={"stringValue": "s-1"},
                    ratio={"doubleValue": 0.5},
                    cached={"boolValue": True},
                    n={"intValue": "3"},
                    tags={"arrayValue": {"values": [{"stringValue": "a"}]}},
                ),
            }
        ],
    },
}
GAUGE = {"name": "mem", "unit": "By", "gauge": {"dataPoints": [{"asDouble": 1.5}]}}
HISTOGRAM = {
    "name": "http.server.duration",
    "unit": "s",
    "histogram": {
        "aggregationTemporality": 2,
        "dataPoints": [
            {
                "startTimeUnixNano": "1",
                "timeUnixNano": "2",
                "count": "3",
                "sum": 1.5,
                "bucketCounts": ["1", "1", "1"],
                "explicitBounds": [0.1, 1.0],
            }
        ],
    },
}
EXPONENTIAL = {
    "name": "lat",
    "unit": "ms",
    "exponentialHistogram": {
        "aggregationTemporality": 1,
        "dataPoints": [
            {
                "count": "4",
                "sum": 10.0,
                "scale": 1,
                "zeroCount": "1",
                "positive": {"offset": 2, "bucketCounts": ["2", "1"]},
            }
        ],
    },
}


def as_protobuf(doc: dict[str, Any]) -> bytes:
    return json_format.ParseDict(doc, ExportMetricsServiceRequest()).SerializeToString()


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_every_point_kind_becomes_an_event(encoding: str) -> None:
    doc = metrics_doc(SUM, GAUGE, HISTOGRAM, EXPONENTIAL)
    body = json.dumps(doc).encode() if encoding == "json" else as_protobuf(doc)
    decoded = decode_metrics(body, "json" if encoding == "json" else "protobuf")
    assert decoded.rejected == 0
    counter, gauge, histogram, exponential = decoded.events
    assert counter == OtelMetric(
        name="claude_code.token.usage",
        kind="sum",
        unit="tokens",
        description="Number of tokens used",
        temporality="delta",
        monotonic=True,
        start_time_unix_nano=1764633600000000000,
        time_unix_nano=1764633660000000000,
        value=1200.0,
        attributes={
            "type": "input",
            "session.id": "s-1",
            "ratio": 0.5,
            "cached": True,
            "n": 3,
            "tags": '["a"]',
        },
        resource={"service.name": "claude-code"},
        scope="com.anthropic.claude_code",
        scope_version="2.0",
    )
    assert (gauge.kind, gauge.value, gauge.temporality) == ("gauge", 1.5, "unspecified")
    assert isinstance(histogram, OtelMetric)
    assert (histogram.bounds, histogram.counts, histogram.sum, histogram.count) == (
        [0.1, 1.0],
        [1, 1, 1],
        1.5,
        3,
    )
    assert histogram.temporality == "cumulative"
    assert isinstance(exponential, OtelMetric)
    assert (exponential.scale, exponential.zero_count) == (1, 1)
    assert (exponential.positive_offset, exponential.positive_counts) == (2, [2, 1])
    # what is appended decodes back to the same events
    assert [decode_event(line) for line in encode_events(decoded.events).splitlines()] == (
        decoded.events
    )


def test_points_that_cannot_be_events_are_rejected_and_counted() -> None:
    doc = metrics_doc(
        {"name": "", "gauge": {"dataPoints": [{"asDouble": 1}]}},
        {"name": "nan", "gauge": {"dataPoints": [{"asDouble": "NaN"}, {"asDouble": 2}]}},
        {"name": "novalue", "gauge": {"dataPoints": [{}]}},
        {"name": "q", "summary": {"dataPoints": [{"count": "1"}, {"count": "2"}]}},
        {"name": "marker", "gauge": {"dataPoints": [{"asDouble": 1, "flags": 1}]}},
    )
    decoded = decode_metrics(json.dumps(doc).encode(), "json")
    assert [(e.name, e.value) for e in decoded.events if isinstance(e, OtelMetric)] == [("nan", 2)]
    assert decoded.rejected == 5
    assert "summary points are not supported" in decoded.message


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b"{not json", "json"),
        (b"[1, 2]", "json"),
        (b'{"resourceMetrics": 3}', "json"),
        (b"\xff\xff\xff", "protobuf"),
    ],
)
def test_a_body_that_is_no_export_request_raises(body: bytes, encoding: str) -> None:
    with pytest.raises(OtlpDecodeError) as info:
        decode_metrics(body, encoding)  # type: ignore[arg-type]
    assert info.value.http_status == 400


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_log_records_keep_event_name_body_severity_and_hex_ids(encoding: str) -> None:
    record = {
        "timeUnixNano": "1764633600000000000",
        "severityNumber": 9,
        "severityText": "INFO",
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": attrs(
            event_name={"stringValue": "claude_code.api_request"},
            model={"stringValue": "claude-sonnet-4-5"},
            cost_usd={"doubleValue": 0.01},
        ),
    }
    structured = {
        **record,
        "eventName": "x.y",
        "body": {"kvlistValue": {"values": attrs(a={"intValue": "1"})}},
    }
    doc = {
        "resourceLogs": [
            {"resource": RESOURCE, "scopeLogs": [{"logRecords": [record, structured]}]}
        ]
    }
    if encoding == "json":
        decoded = decode_logs(json.dumps(doc).encode(), "json")
    else:
        text = json.dumps(doc).replace(
            "5b8efff798038103d269b633813fc60c", "W47/95gDgQPSabYzgT/GDA=="
        )
        text = text.replace("eee19b7ec3c1b174", "7uGbfsPBsXQ=")
        message = json_format.Parse(text, ExportLogsServiceRequest())
        decoded = decode_logs(message.SerializeToString(), "protobuf")
    first, second = decoded.events
    assert first == OtelLog(
        event_name="claude_code.api_request",
        body="claude_code.api_request",
        severity_number=9,
        severity_text="INFO",
        time_unix_nano=1764633600000000000,
        trace_id="5b8efff798038103d269b633813fc60c",
        span_id="eee19b7ec3c1b174",
        attributes={
            "event.name": "claude_code.api_request",
            "model": "claude-sonnet-4-5",
            "cost.usd": 0.01,
        },
        resource={"service.name": "claude-code"},
    )
    assert isinstance(second, OtelLog)
    assert (second.event_name, second.body) == ("x.y", '{"a":1}')


@pytest.mark.parametrize(
    ("record", "name"),
    [
        ({"eventName": "a.b", "body": {"stringValue": "x.b"}}, "a.b"),
        ({"body": {"stringValue": "claude_code.api_request"}}, "claude_code.api_request"),
        ({"body": {"stringValue": "an api_request"}}, "api_request"),
        ({"body": {"stringValue": "claude_code.other"}}, "api_request"),
        ({}, "api_request"),
    ],
)
def test_the_event_name_of_a_record(record: dict[str, Any], name: str) -> None:
    record["attributes"] = attrs(event_name={"stringValue": "api_request"})
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
    [event] = decode_logs(json.dumps(doc).encode(), "json").events
    assert isinstance(event, OtelLog) and event.event_name == name


def test_a_trace_id_that_is_not_hex_is_a_bad_request() -> None:
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}
    with pytest.raises(OtlpDecodeError, match="not hex"):
        decode_logs(json.dumps(doc).encode(), "json")
