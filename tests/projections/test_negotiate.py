"""Content negotiation: Accept and Accept-Encoding case tables."""

from __future__ import annotations

import pytest

from projections import jsonformat, openmetrics, prometheus, statsd
from projections.negotiate import RENDERERS, Format, accepts_gzip, content_type, negotiate
from tests.projections.test_textformat import sample_families

PROMETHEUS_SCRAPER = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3_SCRAPER = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, "prometheus"),
        ("", "prometheus"),
        ("*/*", "prometheus"),
        ("text/*", "prometheus"),
        ("text/plain", "prometheus"),
        ("text/plain; version=0.0.4; charset=utf-8", "prometheus"),
        (PROMETHEUS_SCRAPER, "openmetrics"),
        (PROMETHEUS_3_SCRAPER, "openmetrics"),
        (BROWSER, "prometheus"),
        ("application/openmetrics-text", "openmetrics"),
        ("Application/OpenMetrics-Text; Version=1.0.0", "openmetrics"),
        ("application/openmetrics-text; version=0.0.1", "openmetrics"),
        ("application/openmetrics-text; version=2.0.0", "prometheus"),
        ("application/openmetrics-text;q=0.5, */*", "prometheus"),
        ("application/openmetrics-text;q=0.5, text/plain;q=0.4", "openmetrics"),
        ("application/openmetrics-text;q=0, */*;q=0.1", "prometheus"),
        ("text/plain;q=0.2, application/openmetrics-text;version=1.0.0;q=0.9", "openmetrics"),
        ("text/plain, application/openmetrics-text", "prometheus"),  # tie: first listed
        ("application/openmetrics-text, text/plain", "openmetrics"),
        (
            "application/openmetrics-text;version=0.0.1;q=0.3, "
            "application/openmetrics-text;version=1.0.0, text/plain;q=0.5",
            "openmetrics",
        ),
        ("text/plain;q=0, application/openmetrics-text;q=0", "prometheus"),  # nothing: default
        ("application/json", "json"),
        ("application/json;q=0.5, text/plain", "prometheus"),
        ("application/xml", "prometheus"),
        ("application/openmetrics-text;q=bogus, text/plain;q=0.1", "prometheus"),
        (",,; ;", "prometheus"),
    ],
)
def test_negotiate(accept: str | None, fmt: Format) -> None:
    assert negotiate(accept) == fmt


@pytest.mark.parametrize(
    ("accept_encoding", "ok"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0", False),
        ("*", True),
        ("*;q=0", False),
        ("br, *;q=0.1", True),
        ("br, *;q=0.1, gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("deflate, br", False),
    ],
)
def test_accepts_gzip(accept_encoding: str | None, ok: bool) -> None:
    assert accepts_gzip(accept_encoding) is ok


def test_content_types() -> None:
    assert content_type("prometheus") == prometheus.CONTENT_TYPE
    assert content_type("openmetrics") == openmetrics.CONTENT_TYPE
    assert content_type("json") == jsonformat.CONTENT_TYPE
    assert content_type("statsd") == statsd.CONTENT_TYPE


def test_renderers() -> None:
    families = sample_families()
    assert RENDERERS["prometheus"](families) == prometheus.render_prometheus(families)
    assert RENDERERS["openmetrics"](families) == openmetrics.render_openmetrics(families)
    assert RENDERERS["json"](families) == jsonformat.render_json(families)
    assert RENDERERS["statsd"](families) == statsd.render_statsd(families)
