"""StatsD lines: golden output, tag sanitising, and what cannot be written."""

from __future__ import annotations

import math

import pytest

from projections.clock import EventClock
from projections.exposition.statsd import CONTENT_TYPE, render_statsd, statsd_safe
from projections.metrics.families import CounterFamily, GaugeFamily
from projections.metrics.summary import SummaryFamily
from tests.support.families import sample_families

GOLDEN = b"""\
app_latency_seconds_bucket:1|c|#route:/a,le:0.1
app_latency_seconds_bucket:3|c|#route:/a,le:1
app_latency_seconds_bucket:3|c|#route:/a,le:10
app_latency_seconds_bucket:4|c|#route:/a,le:+Inf
app_latency_seconds_sum:21.25|c|#route:/a
app_latency_seconds_count:4|c|#route:/a
app_memory_bytes:1.234567e+06|g
app_requests_total:3|c|#method:GET,code:200
app_requests_total:2.5|c|#method:GET,code:404
app_requests_total:1|c|#method:POST,code:500
app_rpc_seconds:0.5116715635730902|g|#peer:db,quantile:0.5
app_rpc_seconds:0.9138827457526331|g|#peer:db,quantile:0.9
app_rpc_seconds:0.9900000000000001|g|#peer:db,quantile:0.99
app_rpc_seconds_sum:50.5|g|#peer:db
app_rpc_seconds_count:100|g|#peer:db
"""


def test_content_type() -> None:
    assert CONTENT_TYPE == "text/plain; charset=utf-8"


def test_golden_every_kind() -> None:
    assert render_statsd(sample_families()) == GOLDEN
    assert render_statsd(reversed(sample_families())) == GOLDEN
    assert render_statsd([]) == b""


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("plain-value/ok.é", "plain-value/ok.é"),
        ("a:b", "a_b"),
        ("a|b", "a_b"),
        ("a,b", "a_b"),
        ("#tag", "_tag"),
        ("x@0.5", "x_0.5"),
        ("line\nbreak\r", "line_break_"),
    ],
)
def test_statsd_safe(raw: str, safe: str) -> None:
    assert statsd_safe(raw) == safe


def test_tags_and_names_are_sanitised() -> None:
    counter = CounterFamily("job:runs_total", "Runs.", ("k", "v"))
    counter.inc(("a:b|c", "d,e#f\ng"))
    assert render_statsd([counter]) == b"job_runs_total:1|c|#k:a_b_c,v:d_e_f_g\n"


def test_non_finite_samples_are_left_out() -> None:
    gauge = GaugeFamily("x_ratio", "X.", ("k",))
    gauge.set(("a",), math.nan)
    gauge.set(("b",), 0.5)
    clock = EventClock(0.0)
    summary = SummaryFamily("y_seconds", "Y.", clock=clock)
    summary.observe((), 1.0, 0.0)
    clock.advance(1e6)
    assert render_statsd([gauge, summary]) == (
        b"x_ratio:0.5|g|#k:b\ny_seconds_sum:1|g\ny_seconds_count:1|g\n"
    )
