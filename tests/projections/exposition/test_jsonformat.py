"""JSON exposition: golden document, non-finite numbers, loops and extra keys."""

from __future__ import annotations

import math

import msgspec
import pytest

from projections.clock import EventClock
from projections.exposition.jsonformat import CONTENT_TYPE, json_number, render_json
from projections.metrics.families import Exemplar, GaugeFamily, HistogramFamily
from projections.metrics.summary import SummaryFamily
from tests.support.families import sample_families

GOLDEN = {
    "families": [
        {
            "name": "app_latency_seconds",
            "type": "histogram",
            "help": "Request latency.",
            "labels": ["route"],
            "series": [
                {
                    "labels": {"route": "/a"},
                    "buckets": {"0.1": 1, "1": 3, "10": 3, "+Inf": 4},
                    "sum": 21.25,
                    "count": 4,
                }
            ],
        },
        {
            "name": "app_memory_bytes",
            "type": "gauge",
            "help": "Resident memory.",
            "labels": [],
            "series": [{"labels": {}, "value": 1234567.0}],
        },
        {
            "name": "app_requests_total",
            "type": "counter",
            "help": "Requests handled.",
            "labels": ["method", "code"],
            "series": [
                {"labels": {"method": "GET", "code": "200"}, "value": 3.0},
                {"labels": {"method": "GET", "code": "404"}, "value": 2.5},
                {"labels": {"method": "POST", "code": "500"}, "value": 1.0},
            ],
        },
        {
            "name": "app_rpc_seconds",
            "type": "summary",
            "help": "RPC latency.",
            "labels": ["peer"],
            "series": [
                {
                    "labels": {"peer": "db"},
                    "quantiles": {
                        "0.5": 0.5116715635730902,
                        "0.9": 0.9138827457526331,
                        "0.99": 0.9900000000000001,
                    },
                    "sum": 50.5,
                    "count": 100,
                }
            ],
        },
    ],
    "loops": {},
}


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/json"


def test_golden_every_kind() -> None:
    body = render_json(sample_families())
    assert msgspec.json.decode(body) == GOLDEN
    assert body == msgspec.json.encode(GOLDEN)  # key order and bytes are stable too
    assert render_json(reversed(sample_families())) == body


def test_non_finite_numbers_are_strings() -> None:
    assert [json_number(v) for v in (1.5, math.inf, -math.inf, math.nan)] == [
        1.5,
        "+Inf",
        "-Inf",
        "NaN",
    ]
    gauge = GaugeFamily("x_ratio", "X.", ("k",))
    gauge.set(("a",), math.nan)
    gauge.set(("b",), math.inf)
    clock = EventClock(0.0)
    summary = SummaryFamily("y_seconds", "Y.", clock=clock)
    summary.observe((), 1.0, 0.0)
    clock.advance(1e6)
    doc = msgspec.json.decode(render_json([gauge, summary]))
    assert [s["value"] for s in doc["families"][0]["series"]] == ["NaN", "+Inf"]
    assert doc["families"][1]["series"][0]["quantiles"] == {
        "0.5": "NaN",
        "0.9": "NaN",
        "0.99": "NaN",
    }


def test_loops_and_extra() -> None:
    loops = {"ralph-a": {"total_iterations": 3, "iteration_duration_quantiles_s": {"p50": None}}}
    body = render_json([], loops=loops, extra={"offset": 42})
    assert body == (
        b'{"families":[],"loops":{"ralph-a":{"total_iterations":3,'
        b'"iteration_duration_quantiles_s":{"p50":null}}},"offset":42}'
    )
    with pytest.raises(ValueError, match="families"):
        render_json([], extra={"families": []})


def test_a_histogram_series_with_exemplars_lists_them_by_le() -> None:
    family = HistogramFamily(
        "d_seconds", "D.", ("agent",), bounds=(1.0, 5.0), exemplar_label="run_id"
    )
    series, bucket = family.observe(("a",), 4.2)
    series.exemplars[bucket] = Exemplar("r1", 4.2, 1_700_000_000.5, 1234)
    family.observe(("b",), 0.5)  # a series without any: no field
    doc = msgspec.json.decode(render_json([family]))
    with_exemplars, without = doc["families"][0]["series"]
    assert with_exemplars["exemplars"] == {
        "5": {"labels": {"run_id": "r1", "offset": "1234"}, "value": 4.2, "ts": 1_700_000_000.5}
    }
    assert "exemplars" not in without
