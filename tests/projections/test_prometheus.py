"""Prometheus text format 0.0.4: golden bytes, a real parser, and the real promtool."""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from projections.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.jsonformat import render_json
from projections.prometheus import CONTENT_TYPE, render_prometheus
from projections.summary import EventClock, SummaryFamily
from tests.projections.test_textformat import sample_families

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

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
        b"# HELP a_ratio \n# TYPE a_ratio gauge\n"
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


Key = tuple[str, frozenset[tuple[str, str]]]


def _norm(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    out = dict(labels)
    for special in ("le", "quantile"):
        if special in out:
            out[special] = repr(float(out[special]))
    return frozenset(out.items())


def parsed_samples(families: Iterable[Any]) -> dict[Key, float]:
    """``(sample name, labels) -> value`` from prometheus_client's parsed families."""
    return {(s.name, _norm(s.labels)): float(s.value) for f in families for s in f.samples}


def _number(v: float | str) -> float:
    return float(v.replace("Inf", "inf")) if isinstance(v, str) else float(v)


def json_samples(body: bytes) -> dict[Key, float]:
    """The same mapping from ``render_json``'s document."""
    doc = msgspec.json.decode(body)
    out: dict[Key, float] = {}
    for f in doc["families"]:
        name = f["name"]
        for s in f["series"]:
            labels: dict[str, str] = s["labels"]
            if f["type"] in ("counter", "gauge"):
                out[(name, _norm(labels))] = _number(s["value"])
                continue
            if f["type"] == "histogram":
                for le, n in s["buckets"].items():
                    out[(f"{name}_bucket", _norm({**labels, "le": le}))] = float(n)
            else:
                for q, v in s["quantiles"].items():
                    out[(name, _norm({**labels, "quantile": q}))] = _number(v)
            out[(f"{name}_sum", _norm(labels))] = _number(s["sum"])
            out[(f"{name}_count", _norm(labels))] = float(s["count"])
    return out


def same_values(a: dict[Key, float], b: dict[Key, float]) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def test_parser_reads_back_what_json_says() -> None:
    families = sample_families()
    text = render_prometheus(families).decode()
    parsed = parsed_samples(text_string_to_metric_families(text))
    assert same_values(parsed, json_samples(render_json(families)))
    assert len(parsed) == 15  # 6 histogram, 1 gauge, 3 counter, 5 summary samples


label_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


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


def _promtool(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, timeout=60, check=False
    )


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool is not installed")
def test_promtool_check_metrics_finds_nothing() -> None:
    families = sample_families()
    empty = SummaryFamily("app_idle_seconds", "Idle time.", clock=EventClock())
    result = _promtool("check", "metrics", stdin=render_prometheus([*families, empty]))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool is not installed")
def test_promtool_flags_bad_names() -> None:
    """The check is real: a counter without ``_total`` is reported."""
    counter = CounterFamily("app_requests", "Requests.")
    counter.inc()
    result = _promtool("check", "metrics", stdin=render_prometheus([counter]))
    assert result.returncode != 0
    assert b"_total" in result.stdout + result.stderr
