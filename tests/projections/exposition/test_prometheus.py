"""Prometheus text format 0.0.4: golden bytes, a real parser, and the real promtool."""

from __future__ import annotations

import math
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from projections.clock import EventClock
from projections.exposition.jsonformat import render_json
from projections.exposition.prometheus import CONTENT_TYPE, render_prometheus
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.summary import SummaryFamily
from tests.support.exposition import (
    PROMTOOL,
    json_samples,
    label_values,
    parsed_samples,
    promtool,
    same_values,
)
from tests.support.families import sample_families

GOLDEN = b"""\
# HELP app_latency_seconds Request latency.
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{route="/a",le="0.1"} 1
app_latency_seconds_bucket{route="/a",le="1"} 3
app_latency_seconds_bucket{route="/a",le="10"} 3
app_latency_seconds_bucket{route="/a",le="+Inf"} 4
app_latency_seconds_sum{route="/a"} 21.25
app_latency_seconds_count{route="/a"} 4
# HELP app_memory_bytes Resident memory.
# TYPE app_memory_bytes gauge
app_memory_bytes 1.234567e+06
# HELP app_requests_total Requests handled.
# TYPE app_requests_total counter
app_requests_total{method="GET",code="200"} 3
app_requests_total{method="GET",code="404"} 2.5
app_requests_total{method="POST",code="500"} 1
# HELP app_rpc_seconds RPC latency.
# TYPE app_rpc_seconds summary
app_rpc_seconds{peer="db",quantile="0.5"} 0.5116715635730902
app_rpc_seconds{peer="db",quantile="0.9"} 0.9138827457526331
app_rpc_seconds{peer="db",quantile="0.99"} 0.9900000000000001
app_rpc_seconds_sum{peer="db"} 50.5
app_rpc_seconds_count{peer="db"} 100
"""


def test_content_type() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_golden_every_kind() -> None:
    # Quantiles: ranks 50, 90, 99 of 0.01..1.00 are 0.51, 0.91, 1.0; each estimate is
    # within 1% (0.33%, 0.43%, 1.0%).
    assert render_prometheus(sample_families()) == GOLDEN


def test_input_order_does_not_matter() -> None:
    assert render_prometheus(reversed(sample_families())) == GOLDEN
    families = sample_families()
    assert render_prometheus(families) == render_prometheus(families)  # cached = fresh


def test_empty_families_and_escaped_help() -> None:
    clock = EventClock()
    families = [
        CounterFamily("b_total", 'Line one\nline "two" \\ three.', ("k",)),
        GaugeFamily("a_ratio", ""),
        HistogramFamily("c_seconds", "C.", bounds=(1.0,)),
        SummaryFamily("d_seconds", "D.", clock=clock),
    ]
    assert render_prometheus(families) == (
        b"# HELP a_ratio a_ratio: from metric events, no help given.\n# TYPE a_ratio gauge\n"
        b'# HELP b_total Line one\\nline "two" \\\\ three.\n# TYPE b_total counter\n'
        b"# HELP c_seconds C.\n# TYPE c_seconds histogram\n"
        b"# HELP d_seconds D.\n# TYPE d_seconds summary\n"
    )
    assert render_prometheus([]) == b""


def test_summary_with_empty_window_renders_nan() -> None:
    clock = EventClock(0.0)
    summary = SummaryFamily("x_seconds", "X.", clock=clock)
    summary.observe((), 2.0, 0.0)
    clock.advance(10_000.0)
    assert render_prometheus([summary]) == (
        b"# HELP x_seconds X.\n# TYPE x_seconds summary\n"
        b'x_seconds{quantile="0.5"} NaN\nx_seconds{quantile="0.9"} NaN\n'
        b'x_seconds{quantile="0.99"} NaN\nx_seconds_sum 2\nx_seconds_count 1\n'
    )


def test_special_values_and_escaped_labels() -> None:
    gauge = GaugeFamily("x_ratio", "X.", ("k",))
    gauge.set(('a"b',), math.inf)
    gauge.set(("c\\d",), -math.inf)
    gauge.set(("e\nf",), math.nan)
    gauge.set(("g",), -0.0)
    assert render_prometheus([gauge]).splitlines()[2:] == [
        b'x_ratio{k="a\\"b"} +Inf',
        b'x_ratio{k="c\\\\d"} -Inf',
        b'x_ratio{k="e\\nf"} NaN',
        b'x_ratio{k="g"} 0',
    ]


# -- read back with a real parser ------------------------------------------------------


def test_parser_reads_back_what_json_says() -> None:
    families = sample_families()
    text = render_prometheus(families).decode()
    parsed = parsed_samples(text_string_to_metric_families(text))
    assert same_values(parsed, json_samples(render_json(families)))
    assert len(parsed) == 15  # 6 histogram, 1 gauge, 3 counter, 5 summary samples


@settings(max_examples=200)
@given(st.lists(st.tuples(label_values, label_values), max_size=8, unique=True))
def test_any_label_value_survives(label_sets: list[tuple[str, str]]) -> None:
    counter = CounterFamily("x_total", "Help with \\ and\nnewline é.", ("a", "b"))
    for i, labels in enumerate(label_sets):
        counter.inc(labels, float(i))
    [family] = text_string_to_metric_families(render_prometheus([counter]).decode())
    assert family.documentation == "Help with \\ and\nnewline é."
    got = {(s.labels["a"], s.labels["b"]): s.value for s in family.samples}
    assert got == {labels: float(i) for i, labels in enumerate(label_sets)}


# -- the real promtool -------------------------------------------------------------


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool is not installed")
def test_promtool_check_metrics_finds_nothing() -> None:
    families = sample_families()
    empty = SummaryFamily("app_idle_seconds", "Idle time.", clock=EventClock())
    result = promtool("check", "metrics", stdin=render_prometheus([*families, empty]))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool is not installed")
def test_promtool_flags_bad_names() -> None:
    """The check is real: a counter without ``_total`` is reported."""
    counter = CounterFamily("app_requests", "Requests.")
    counter.inc()
    result = promtool("check", "metrics", stdin=render_prometheus([counter]))
    assert result.returncode != 0
    assert b"_total" in result.stdout + result.stderr
