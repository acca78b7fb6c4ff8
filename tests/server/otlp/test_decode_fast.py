"""The direct paths of the OTLP decoding against the plain ones: the same events, the
same rejections (``decode_metrics(fast=False)``; ``_scalar(_any(value))`` per attribute)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from benchmarks.bench_otlp import metrics_body
from bus.events import encode_events
from server.otlp.decode import _any, _attributes, _scalar, decode_metrics
from tests.server.otlp.test_decode import EXPONENTIAL, GAUGE, HISTOGRAM, SUM, metrics_doc


def _points(**data: Any) -> dict[str, Any]:
    return {"dataPoints": [{"asInt": "1"}, *data.pop("points")], **data}


ODD: list[dict[str, Any]] = [
    {"name": "", "gauge": {"dataPoints": [{"asDouble": 1.0}]}},  # no name
    {"name": "t", "sum": {"aggregationTemporality": 7, "dataPoints": [{"asInt": "1"}]}},
    {"name": "nan", "gauge": _points(points=[{"asDouble": "NaN"}])},
    {"name": "inf", "sum": _points(points=[{"asDouble": "Infinity"}], isMonotonic=True)},
    {"name": "none", "gauge": _points(points=[{}])},
    {"name": "flag", "gauge": _points(points=[{"flags": 1}, {"asDouble": 2.5, "flags": 2}])},
    {
        "name": "hb",
        "histogram": {
            "aggregationTemporality": 1,
            "dataPoints": [
                {"count": "1", "bucketCounts": ["1", "0"], "explicitBounds": [1.0]},
                {"count": "1", "bucketCounts": ["1"], "explicitBounds": [1.0]},  # too few
            ],
        },
    },
    {
        "name": "hinf",
        "histogram": {"dataPoints": [{"bucketCounts": ["1", "0"], "explicitBounds": ["Infinity"]}]},
    },
    {
        "name": "hflag",
        "histogram": {"dataPoints": [{"flags": 1}, {"bucketCounts": [], "explicitBounds": [2]}]},
    },
    {"name": "summary", "summary": {"dataPoints": [{"count": "1"}]}},
    {"name": "empty"},
]


def _same(body: bytes, encoding: Any = "protobuf") -> None:
    fast, plain = decode_metrics(body, encoding), decode_metrics(body, encoding, fast=False)
    assert encode_events(fast.events) == encode_events(plain.events)
    assert fast.events == plain.events
    assert (fast.rejected, fast.errors) == (plain.rejected, plain.errors)


@pytest.mark.parametrize("metric", [SUM, GAUGE, HISTOGRAM, EXPONENTIAL, *ODD])
def test_each_metric_decodes_the_same_fast_and_plain(metric: dict[str, Any]) -> None:
    doc = metrics_doc(metric)
    _same(json_format.ParseDict(doc, ExportMetricsServiceRequest()).SerializeToString())


def test_all_of_them_in_one_request_and_the_benchmark_bodies() -> None:
    doc = metrics_doc(SUM, *ODD, GAUGE, HISTOGRAM, EXPONENTIAL)
    _same(json_format.ParseDict(doc, ExportMetricsServiceRequest()).SerializeToString())
    for step in (0, 3):
        _same(metrics_body(step))


def test_attributes_are_the_plain_conversion_of_each_value() -> None:
    values = [
        AnyValue(string_value="a"),
        AnyValue(string_value=""),
        AnyValue(int_value=-(2**63)),
        AnyValue(double_value=0.25),
        AnyValue(double_value=math.inf),
        AnyValue(double_value=math.nan),
        AnyValue(bool_value=False),
        AnyValue(bytes_value=b"\x00\xff"),
        AnyValue(),
        json_format.ParseDict({"arrayValue": {"values": [{"intValue": "1"}]}}, AnyValue()),
        json_format.ParseDict(
            {"kvlistValue": {"values": [{"key": "k", "value": {"doubleValue": 1}}]}}, AnyValue()
        ),
    ]
    pairs = [KeyValue(key=f"k{i % 7}", value=v) for i, v in enumerate(values)]
    plain: dict[str, Any] = {}
    for kv in pairs:
        value = _any(kv.value)
        if value is not None:
            plain[kv.key] = _scalar(value)
    fast = _attributes(pairs)
    assert {k: type(v) for k, v in fast.items()} == {k: type(v) for k, v in plain.items()}
    assert repr(fast) == repr(plain)
