"""`tally serve --otlp-port`: a second port serving the same app, as OTLP exporters expect."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.serverproc import http_request, tally_server

GAUGE = {
    "resourceMetrics": [
        {"scopeMetrics": [{"metrics": [{"name": "g", "gauge": {"dataPoints": [{"asDouble": 2}]}}]}]}
    ]
}


def test_the_otlp_port_serves_the_same_app_with_the_same_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with tally_server(
        tmp_path / "data", "--otlp-port", "0", "--token-file", str(token), token="s3cret"
    ) as server:
        assert server.otlp_port is not None and server.otlp_port != server.port
        body = json.dumps(GAUGE).encode()
        headers = {"Content-Type": "application/json"}
        refused = http_request(server.otlp_port, "POST", "/v1/metrics", body=body, headers=headers)
        assert refused.status == 401
        headers["Authorization"] = "Bearer s3cret"
        reply = http_request(server.otlp_port, "POST", "/v1/metrics", body=body, headers=headers)
        assert (reply.status, reply.json()) == (200, {})
        assert http_request(server.otlp_port, "GET", "/readyz").status == 200
        status = server.wait_caught_up()
        assert status["events_by_type"]["otel_metric"] == 1
    assert server.proc.returncode == 0
