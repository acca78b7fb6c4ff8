"""Content negotiation: Accept and Accept-Encoding case tables."""

from __future__ import annotations

import pytest

from projections.exposition.formats import Format
from projections.exposition.negotiate import negotiate

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
