"""The OpenTelemetry Python SDK's OTLP/HTTP exporter sending to a live `tally serve`.

The values in /metrics must equal what the SDK recorded: delta and cumulative counters,
gauges, up-down counters and histograms, over protobuf and OTLP JSON, across a
restart of tally (no loss, no double count), the same export sent twice, and a
restart of the sender (a new start time). promtool checks the families; a flood of
distinct attribute values meets the cardinality guard.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from projections.exposition.text import format_float
from tests.support.exposition import PROMTOOL, promtool
from tests.support.serverproc import TallyServer, samples, tally_server, without

DELTA = {
    Counter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
}
CUMULATIVE = dict.fromkeys(DELTA, AggregationTemporality.CUMULATIVE)
BOUNDS = (0.1, 1.0, 10.0)


class Sender:
    """One SDK process's meters: record, then collect what an export would carry."""

    def __init__(self, temporality: dict[type, AggregationTemporality]) -> None:
        self.reader = InMemoryMetricReader(preferred_temporality=temporality)
        resource = Resource.create({"service.name": "agent", "service.instance.id": "i-1"})
        self.provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        meter = self.provider.get_meter("tests.otlp")
        self.tokens = meter.create_counter("agent.token.usage", unit="tokens")
        self.cost = meter.create_counter("agent.cost.usage", unit="USD")
        self.queue = meter.create_up_down_counter("agent.queue.size", unit="{item}")
        self.memory = meter.create_gauge("agent.memory", unit="By")
        self.duration = meter.create_histogram(
            "agent.request.duration", unit="s", explicit_bucket_boundaries_advisory=list(BOUNDS)
        )

    def record(self, n: int) -> None:
        """The same workload each time: every value depends on n only."""
        for i in range(n):
            kind = "input" if i % 3 else "output"
            self.tokens.add(100 + i, {"type": kind, "session.id": f"s{i % 2}"})
            self.cost.add(0.25, {"model": "opus"})
            self.queue.add(1 if i % 4 else -1)
            self.memory.set(1000.0 * (i + 1))
            self.duration.record(0.05 * (i + 1), {"route": "/api"})

    def collect(self) -> MetricsData:
        data = self.reader.get_metrics_data()
        assert data is not None
        return data

    def shutdown(self) -> None:
        self.provider.shutdown()


def expected(records: list[int]) -> dict[str, float]:
    """What /metrics must show after senders recorded ``records`` (n per record() call)."""
    out: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    for n in records:
        for i in range(n):
            kind = "input" if i % 3 else "output"
            add(f'agent_token_usage_tokens_total{{service_name="agent",type="{kind}"}}', 100 + i)
            add('agent_cost_usage_USD_total{model="opus",service_name="agent"}', 0.25)
            add('agent_queue_size{service_name="agent"}', 1 if i % 4 else -1)
            out['agent_memory_bytes{service_name="agent"}'] = 1000.0 * (i + 1)
            value = 0.05 * (i + 1)
            labels = 'route="/api",service_name="agent"'
            for bound in (*BOUNDS, float("inf")):
                le = "+Inf" if bound == float("inf") else format_float(bound)
                add(f'agent_request_duration_seconds_bucket{{{labels},le="{le}"}}', value <= bound)
            add(f"agent_request_duration_seconds_sum{{{labels}}}", value)
            add(f"agent_request_duration_seconds_count{{{labels}}}", 1)
    return out


def otlp_samples(server: TallyServer) -> dict[str, float]:
    server.wait_caught_up()
    return {k: v for k, v in samples(server.metrics()).items() if k.startswith("agent_")}


def assert_metrics(server: TallyServer, records: list[int]) -> None:
    got, want = otlp_samples(server), expected(records)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def exporter(server: TallyServer, **kwargs: Any) -> OTLPMetricExporter:
    return OTLPMetricExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/metrics", **kwargs)


def export(server: TallyServer, data: MetricsData, **kwargs: Any) -> None:
    result = exporter(server, **kwargs).export(data)
    assert result is MetricExportResult.SUCCESS


def post_json(server: TallyServer, data: MetricsData) -> None:
    message = encode_metrics(data)
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    reply = server.post(
        "/v1/metrics", json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )
    assert (reply.status, reply.json()) == (200, {})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path) -> Iterator[TallyServer]:
    with tally_server(data_dir) as running:
        yield running


@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])
def test_sdk_exports_are_what_metrics_shows(
    server: TallyServer, temporality: dict[type, Any]
) -> None:
    sender = Sender(temporality)
    sender.record(5)
    export(server, sender.collect())
    assert_metrics(server, [5])
    sender.record(3)  # delta: the next 3; cumulative: all 8 so far, with the same start
    export(server, sender.collect(), compression=Compression.Gzip)
    assert_metrics(server, [5, 3])
    sender.shutdown()


@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])
def test_the_same_data_as_otlp_json(server: TallyServer, temporality: dict[type, Any]) -> None:
    sender = Sender(temporality)
    sender.record(4)
    post_json(server, sender.collect())
    sender.record(2)
    post_json(server, sender.collect())
    assert_metrics(server, [4, 2])
    sender.shutdown()


def test_a_cumulative_export_sent_twice_counts_once(server: TallyServer) -> None:
    sender = Sender(CUMULATIVE)
    sender.record(6)
    data = sender.collect()
    export(server, data)
    export(server, data)  # a retry after a lost answer
    post_json(server, data)
    assert_metrics(server, [6])
    sender.shutdown()


def test_a_sender_restart_starts_a_new_count(server: TallyServer) -> None:
    first = Sender(CUMULATIVE)
    first.record(5)
    export(server, first.collect())
    first.shutdown()
    second = Sender(CUMULATIVE)  # a new process: a new start time, counting from zero
    second.record(3)
    export(server, second.collect())
    export(server, second.collect())
    got = otlp_samples(server)
    want = expected([5, 3])
    assert {k: got[k] for k in want if "memory" not in k and "queue" not in k} == pytest.approx(
        {k: v for k, v in want.items() if "memory" not in k and "queue" not in k}
    )
    # the up-down counter is the sender's current count, not the sum of both runs
    assert (
        got['agent_queue_size{service_name="agent"}']
        == expected([3])['agent_queue_size{service_name="agent"}']
    )
    second.shutdown()


@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])
def test_tally_restarted_between_exports_loses_and_doubles_nothing(
    data_dir: Path, temporality: dict[type, Any]
) -> None:
    sender = Sender(temporality)
    sender.record(5)
    with tally_server(data_dir) as server:
        export(server, sender.collect())
        assert_metrics(server, [5])
    sender.record(4)
    with tally_server(data_dir) as server:  # restored from the final checkpoint
        assert_metrics(server, [5])
        data = sender.collect()
        export(server, data)
        assert_metrics(server, [5, 4])
    (data_dir / "snapshots").rename(data_dir / "old-snapshots")
    with tally_server(data_dir) as server:  # refolded from the log alone
        export(server, data)
        assert_metrics(server, [5, 4] if temporality is CUMULATIVE else [5, 4, 4])
    sender.shutdown()


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool is not installed")
def test_promtool_finds_nothing_to_flag(server: TallyServer) -> None:
    sender = Sender(CUMULATIVE)
    sender.record(5)
    export(server, sender.collect())
    server.wait_caught_up()
    text = "\n".join(without(server.metrics(), ("conductor_",))) + "\n"
    assert "agent_token_usage_tokens_total" in text
    result = promtool("check", "metrics", stdin=text.encode())
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    sender.shutdown()


def test_a_flood_of_attribute_values_meets_the_cardinality_guard(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "tally.toml").write_text("[projections]\nmax_series_per_family = 20\n")
    with tally_server(data_dir) as server:
        sender = Sender(DELTA)
        for i in range(300):
            sender.tokens.add(1, {"type": f"t{i}"})
        export(server, sender.collect())
        server.wait_caught_up()
        got = samples(server.metrics())
        series = {k: v for k, v in got.items() if k.startswith("agent_token_usage_tokens_total")}
        assert len(series) == 21  # 20, and the __overflow__ series
        assert sum(series.values()) == 300
        overflow = 'tally_series_overflow_total{family="agent_token_usage_tokens_total"}'
        assert got[overflow] == 280
        sender.shutdown()


def test_refusals_of_a_live_server(server: TallyServer) -> None:
    body = b'{"resourceMetrics": []}'
    assert server.post("/v1/metrics", body, headers={"Content-Type": "text/plain"}).status == 415
    assert (
        server.post("/v1/logs", b"{x", headers={"Content-Type": "application/json"}).status == 400
    )
    gzipped = server.post(
        "/v1/logs",
        gzip.compress(b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{}]}]}]}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert (gzipped.status, gzipped.json()) == (200, {})
    assert server.wait_caught_up()["events_by_type"]["otel_log"] == 1
    summary = {"name": "q", "summary": {"dataPoints": [{"count": "1"}, {"count": "2"}]}}
    doc = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [summary]}]}]}
    reply = server.post(
        "/v1/metrics", json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )
    assert reply.json()["partialSuccess"]["rejectedDataPoints"] == "2"
    got = samples(server.metrics())
    assert got["tally_otlp_points_rejected_total"] == 2
    assert got["tally_otlp_log_records_rejected_total"] == 0


# -- logs, and rules applied back through history -------------------------------------

CLAUDE_RULES = Path(__file__).resolve().parents[3] / "docs" / "claude-code-rules.toml"


def send_claude_code_logs(server: TallyServer, requests: int) -> None:
    """Claude Code-shaped events through the SDK's OTLP/HTTP log exporter (protobuf)."""
    from opentelemetry._logs import LogRecord
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    provider = LoggerProvider(resource=Resource.create({"service.name": "claude-code"}))
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/logs")
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("com.anthropic.claude_code.events")
    for i in range(requests):
        attributes = {
            "event.name": "api_request",
            "session.id": "s-1",
            "model": "claude-opus-4-5",
            "input_tokens": str(100 + i),
            "output_tokens": str(10),
            "cache_read_tokens": "0",
            "cache_creation_tokens": "0",
            "cost_usd": "0.25",
            "duration_ms": str(1000 * (i + 1)),
        }
        # as Claude Code writes them: the full name in the body, the short one in event.name
        logger.emit(LogRecord(body="claude_code.api_request", attributes=attributes))
    provider.shutdown()


def test_rules_added_later_apply_to_the_log_records_already_received(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        send_claude_code_logs(server, 3)
        assert server.wait_caught_up()["events_by_type"]["otel_log"] == 3
        assert "claude_code_api_requests_total" not in server.metrics()
    (data_dir / "tally.toml").write_bytes(CLAUDE_RULES.read_bytes())
    with tally_server(data_dir) as server:  # another rule set: the checkpoint is refolded
        send_claude_code_logs(server, 1)
        server.wait_caught_up()
        got = samples(server.metrics())
    model = 'model="claude-opus-4-5"'
    assert got[f"claude_code_api_requests_total{{{model}}}"] == 4
    assert got[f'claude_code_api_tokens_total{{{model},type="input"}}'] == 100 + 101 + 102 + 100
    assert got[f"claude_code_api_cost_usd_total{{{model}}}"] == 1.0
    assert got[f"claude_code_api_request_duration_seconds_count{{{model}}}"] == 4
    assert got[f"claude_code_api_request_duration_seconds_sum{{{model}}}"] == 7.0
    assert got['tally_rule_errors_total{rule="claude_code_cost"}'] == 0
