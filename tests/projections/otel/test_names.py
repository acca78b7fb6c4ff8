"""OpenTelemetry -> Prometheus names: a case table."""

from __future__ import annotations

import pytest

from projections.otel.names import label_name, label_value, metric_name

KINDS = {"counter": (True, False), "gauge": (False, True), "histogram": (False, False)}


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("claude_code.token.usage", "tokens", "counter", "claude_code_token_usage_tokens_total"),
        ("claude_code.cost.usage", "USD", "counter", "claude_code_cost_usage_USD_total"),
        ("claude_code.session.count", "count", "counter", "claude_code_session_count_total"),
        ("claude_code.active_time.total", "s", "counter", "claude_code_active_time_seconds_total"),
        (
            "claude_code.lines_of_code.count",
            "{line}",
            "counter",
            "claude_code_lines_of_code_count_total",
        ),
        ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),
        ("process.memory", "By", "gauge", "process_memory_bytes"),
        ("net.io.rate", "By/s", "gauge", "net_io_rate_bytes_per_second"),
        ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
        ("items", "1", "counter", "items_total"),
        ("requests_total", "", "counter", "requests_total"),
        ("latency_ms", "ms", "histogram", "latency_ms_milliseconds"),
        ("queue.wait_seconds", "s", "histogram", "queue_wait_seconds"),
        ("9lives", "", "gauge", "_9lives"),
        ("a..b--c", "", "gauge", "a_b_c"),
        ("events", "{event}/min", "counter", "events_per_minute_total"),
    ],
)
def test_metric_names(name: str, unit: str, kind: str, expected: str) -> None:
    counter, gauge = KINDS[kind]
    assert metric_name(name, unit, counter=counter, gauge=gauge) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("model", "model"),
        ("service.name", "service_name"),
        ("http.response.status_code", "http_response_status_code"),
        ("1st", "key_1st"),
        ("__secret", "key__secret"),
        ("ünïcode", "_n_code"),
    ],
)
def test_label_names(key: str, expected: str) -> None:
    assert label_name(key) == expected


def test_label_values() -> None:
    assert [label_value(v) for v in ("x", True, False, 3, 0.5)] == [
        "x",
        "true",
        "false",
        "3",
        "0.5",
    ]
