"""OpenMetrics 1.0: golden bytes, the reference parser, and promtool's backfill import."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from projections.clock import EventClock
from projections.exposition.jsonformat import render_json
from projections.exposition.openmetrics import (
    CONTENT_TYPE,
    OpenMetricsHistory,
    format_timestamp,
    metadata_name,
    render_openmetrics,
)
from projections.metrics.families import CounterFamily, Exemplar, GaugeFamily, HistogramFamily
from projections.metrics.summary import SummaryFamily
from tests.support.exposition import (
    PROMTOOL,
    json_samples,
    label_values,
    parsed_samples,
    same_values,
)
from tests.support.families import sample_families

GOLDEN = b"""\
# TYPE app_latency_seconds histogram
# HELP app_latency_seconds Request latency.
app_latency_seconds_bucket{route="/a",le="0.1"} 1
app_latency_seconds_bucket{route="/a",le="1.0"} 3
app_latency_seconds_bucket{route="/a",le="10.0"} 3
app_latency_seconds_bucket{route="/a",le="+Inf"} 4
app_latency_seconds_count{route="/a"} 4
app_latency_seconds_sum{route="/a"} 21.25
# TYPE app_memory_bytes gauge
# HELP app_memory_bytes Resident memory.
app_memory_bytes 1.234567e+06
# TYPE app_requests counter
# HELP app_requests Requests handled.
app_requests_total{method="GET",code="200"} 3
app_requests_total{method="GET",code="404"} 2.5
app_requests_total{method="POST",code="500"} 1
# TYPE app_rpc_seconds summary
# HELP app_rpc_seconds RPC latency.
app_rpc_seconds{peer="db",quantile="0.5"} 0.5116715635730902
app_rpc_seconds{peer="db",quantile="0.9"} 0.9138827457526331
app_rpc_seconds{peer="db",quantile="0.99"} 0.9900000000000001
app_rpc_seconds_count{peer="db"} 100
app_rpc_seconds_sum{peer="db"} 50.5
# EOF
"""


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/openmetrics-text; version=1.0.0; charset=utf-8"


def test_golden_every_kind() -> None:
    assert render_openmetrics(sample_families()) == GOLDEN
    assert render_openmetrics(reversed(sample_families())) == GOLDEN


def test_empty_exposition_and_metadata() -> None:
    assert render_openmetrics([]) == b"# EOF\n"
    counter = CounterFamily("jobs", 'Jobs "done"\n\\.', ("k",))  # no _total in its name
    counter.inc(("x",))
    gauge = GaugeFamily("a_ratio", "")  # no help: a generated one
    assert render_openmetrics([counter, gauge]) == (
        b"# TYPE a_ratio gauge\n# HELP a_ratio a_ratio: from metric events, no help given.\n"
        b'# TYPE jobs counter\n# HELP jobs Jobs \\"done\\"\\n\\\\.\njobs_total{k="x"} 1\n'
        b"# EOF\n"
    )
    assert metadata_name(counter) == "jobs"
    assert metadata_name(CounterFamily("jobs_total", "")) == "jobs"
    assert metadata_name(GaugeFamily("queue_total", "")) == "queue_total"


def test_parser_reads_back_what_json_says() -> None:
    families = sample_families()
    parsed_families = list(text_string_to_metric_families(render_openmetrics(families).decode()))
    assert [(f.name, f.type) for f in parsed_families] == [
        ("app_latency_seconds", "histogram"),
        ("app_memory_bytes", "gauge"),
        ("app_requests", "counter"),
        ("app_rpc_seconds", "summary"),
    ]
    assert same_values(parsed_samples(parsed_families), json_samples(render_json(families)))


def test_nan_quantiles_parse() -> None:
    clock = EventClock(0.0)
    summary = SummaryFamily("x_seconds", "X.", clock=clock)
    summary.observe((), 2.0, 0.0)
    clock.advance(10_000.0)
    [family] = text_string_to_metric_families(render_openmetrics([summary]).decode())
    assert [math.isnan(s.value) for s in family.samples] == [True, True, True, False, False]


@settings(max_examples=200)
@given(st.lists(st.tuples(label_values, label_values), max_size=8, unique=True))
def test_any_label_value_survives(label_sets: list[tuple[str, str]]) -> None:
    counter = CounterFamily("x_total", 'Help "with" \\ and\nnewline é.', ("a", "b"))
    for i, labels in enumerate(label_sets):
        counter.inc(labels, float(i))
    [family] = text_string_to_metric_families(render_openmetrics([counter]).decode())
    assert family.documentation == 'Help "with" \\ and\nnewline é.'
    got = {(s.labels["a"], s.labels["b"]): s.value for s in family.samples}
    assert got == {labels: float(i) for i, labels in enumerate(label_sets)}


# -- history for backfill ------------------------------------------------------------


def _history() -> OpenMetricsHistory:
    families = sample_families()
    counter = families[0]
    assert isinstance(counter, CounterFamily)
    history = OpenMetricsHistory()
    history.add(1_700_000_000.0, families)
    counter.inc(("GET", "200"), 2)
    counter.inc(("PUT", "201"))  # a series that appears later
    history.add(1_700_000_015.5, families)
    return history


def test_history_golden() -> None:
    counter = CounterFamily("jobs_total", "Jobs.", ("k",))
    hist = HistogramFamily("wait_seconds", "Wait.", bounds=(1.0,))
    history = OpenMetricsHistory()
    counter.inc(("b",))
    history.add(20.0, [counter, hist])  # added out of time order on purpose
    counter.inc(("a",))
    hist.observe((), 0.5)
    history.add(10.0, [counter, hist])
    history.add(30.0, [counter])
    counter.inc(("a",))
    history.add(30.0, [counter])  # same time again: replaces
    assert history.render() == (
        b"# TYPE jobs counter\n# HELP jobs Jobs.\n"
        b'jobs_total{k="a"} 1 10.0\n'
        b'jobs_total{k="a"} 2 30.0\n'
        b'jobs_total{k="b"} 1 10.0\n'
        b'jobs_total{k="b"} 1 20.0\n'
        b'jobs_total{k="b"} 1 30.0\n'
        b"# TYPE wait_seconds histogram\n# HELP wait_seconds Wait.\n"
        b'wait_seconds_bucket{le="1.0"} 1 10.0\n'
        b'wait_seconds_bucket{le="+Inf"} 1 10.0\n'
        b"wait_seconds_count 1 10.0\n"
        b"wait_seconds_sum 0.5 10.0\n"
        b"# EOF\n"
    )
    assert len(history) == 6


def test_history_copies_text_not_state() -> None:
    history = _history()
    text = history.render().decode()
    assert 'app_requests_total{method="GET",code="200"} 3 1700000000.0\n' in text
    assert 'app_requests_total{method="GET",code="200"} 5 1700000015.5\n' in text
    assert text.count("# TYPE app_requests counter\n") == 1
    assert text.endswith("# EOF\n")


def test_history_parses_as_one_document() -> None:
    # prometheus_client's parser drops repeated points of multi-sample MetricPoints
    # (histograms, summaries), so it reads counters and gauges here; promtool reads all.
    families = sample_families()
    history = OpenMetricsHistory()
    history.add(1_700_000_000.0, families[:2])
    families[0].inc(("GET", "200"), 2)  # type: ignore[union-attr]
    history.add(1_700_000_015.5, families[:2])
    parsed = list(text_string_to_metric_families(history.render().decode()))
    assert [(f.name, len(f.samples)) for f in parsed] == [
        ("app_memory_bytes", 2),
        ("app_requests", 6),
    ]
    requests = parsed[1]
    assert [float(s.timestamp) for s in requests.samples[:2]] == [1_700_000_000.0, 1_700_000_015.5]
    assert [s.value for s in requests.samples[:2]] == [3.0, 5.0]


def test_timestamps_are_fixed_notation() -> None:
    assert format_timestamp(1_700_000_000) == "1700000000.0"
    assert format_timestamp(0.25) == "0.25"
    with pytest.raises(ValueError, match="fixed notation"):
        format_timestamp(math.nan)


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool is not installed")
def test_promtool_imports_history(tmp_path: Path) -> None:
    source = tmp_path / "history.om"
    source.write_bytes(_history().render())
    out = tmp_path / "blocks"
    out.mkdir()
    result = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(out)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    blocks = [p for p in out.iterdir() if p.is_dir()]
    assert len(blocks) == 1
    assert (blocks[0] / "meta.json").is_file()
    (out / "wal").mkdir()  # ``tsdb dump`` opens the directory as a whole TSDB
    dump = subprocess.run(
        [PROMTOOL, "tsdb", "dump", str(out)], capture_output=True, timeout=120, check=True
    ).stdout.decode()
    # 2 points of: 6 histogram samples, 1 gauge, 5 summary; counters 3 then 4 series.
    assert len(dump.splitlines()) == 31
    assert '{__name__="app_requests_total", code="200", method="GET"} 5 1700000015500' in dump
    assert '{__name__="app_requests_total", code="201", method="PUT"} 1 1700000015500' in dump


# -- exemplars ---------------------------------------------------------------------------


def run_durations() -> HistogramFamily:
    """A histogram with exemplars: two buckets of one series hold one."""
    family = HistogramFamily(
        "conductor_run_duration_seconds",
        "Run duration.",
        ("agent",),
        bounds=(1.0, 5.0),
        exemplar_label="run_id",
    )
    for run_id, value, ts, offset in (("r0", 0.5, 1.0, 0), ("r1", 4.2, 1_700_000_000.5, 1234)):
        series, bucket = family.observe(("claude",), value)
        series.exemplars[bucket] = Exemplar(run_id, value, ts, offset)
    family.observe(("claude",), 30.0)  # +Inf: no exemplar set by hand
    return family


EXEMPLAR_GOLDEN = b"""\
# TYPE conductor_run_duration_seconds histogram
# HELP conductor_run_duration_seconds Run duration.
conductor_run_duration_seconds_bucket{agent="claude",le="1.0"} 1 # {run_id="r0",offset="0"} 0.5 1.0
conductor_run_duration_seconds_bucket{agent="claude",le="5.0"} 2 \
# {run_id="r1",offset="1234"} 4.2 1700000000.5
conductor_run_duration_seconds_bucket{agent="claude",le="+Inf"} 3
conductor_run_duration_seconds_count{agent="claude"} 3
conductor_run_duration_seconds_sum{agent="claude"} 34.7
# EOF
"""


def test_golden_exemplars() -> None:
    family = run_durations()
    assert render_openmetrics([family]) == EXEMPLAR_GOLDEN
    [parsed] = text_string_to_metric_families(EXEMPLAR_GOLDEN.decode())
    found = [(s.labels["le"], s.exemplar) for s in parsed.samples if s.exemplar is not None]
    assert [(le, e.labels, e.value, e.timestamp.sec, e.timestamp.nsec) for le, e in found] == [
        ("1.0", {"run_id": "r0", "offset": "0"}, 0.5, 1, 0),
        ("5.0", {"run_id": "r1", "offset": "1234"}, 4.2, 1_700_000_000, 500_000_000),
    ]


def test_exemplars_stay_out_of_the_text_format_and_the_history() -> None:
    from projections.exposition.prometheus import render_prometheus

    family = run_durations()
    plain = HistogramFamily(
        "conductor_run_duration_seconds", "Run duration.", ("agent",), bounds=(1.0, 5.0)
    )
    for value in (0.5, 4.2, 30.0):
        plain.observe(("claude",), value)
    assert render_prometheus([family]) == render_prometheus([plain])
    assert b"#" not in render_prometheus([family]).replace(b"# HELP", b"").replace(b"# TYPE", b"")
    history = OpenMetricsHistory()
    history.add(10.0, [family])
    assert b"run_id" not in history.render()


def test_an_exemplar_over_128_characters_of_labels_is_left_out() -> None:
    """``run_id`` + its value + ``offset`` + its digits: 128 at most (OpenMetrics 1.0)."""
    family = HistogramFamily("d_seconds", "D.", bounds=(1.0,), exemplar_label="run_id")
    series, _ = family.observe((), 0.5)
    fits = "r" * (128 - len("run_id") - len("offset") - 3)
    for ident, kept in ((fits, True), (fits + "x", False)):
        series.exemplars[0] = Exemplar(ident, 0.5, 1.0, 123)
        text = render_openmetrics([family])
        assert (b" # {" in text) is kept
        assert b'd_seconds_bucket{le="1.0"} 1' in text
        [parsed] = text_string_to_metric_families(text.decode())
        assert {s.name for s in parsed.samples} >= {"d_seconds_bucket", "d_seconds_count"}
    json_series = json.loads(render_json([family]))["families"][0]["series"][0]
    assert json_series["exemplars"]["1"]["labels"] == {"run_id": fits + "x", "offset": "123"}
