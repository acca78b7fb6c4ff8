"""The one table of exposition formats: each name gives its content type and its renderer."""

from __future__ import annotations

from projections.exposition import jsonformat, openmetrics, prometheus, statsd
from projections.exposition.formats import FORMATS, content_type, render
from tests.support.families import sample_families


def test_content_types() -> None:
    assert content_type("prometheus") == prometheus.CONTENT_TYPE
    assert content_type("openmetrics") == openmetrics.CONTENT_TYPE
    assert content_type("json") == jsonformat.CONTENT_TYPE
    assert content_type("statsd") == statsd.CONTENT_TYPE
    assert set(FORMATS) == {"prometheus", "openmetrics", "json", "statsd"}


def test_renderers() -> None:
    families = sample_families()
    loops = {"l1": {"total_iterations": 3}}
    assert render(families, "prometheus") == prometheus.render_prometheus(families)
    assert render(families, "openmetrics") == openmetrics.render_openmetrics(families)
    assert render(families, "json", loops=loops) == jsonformat.render_json(families, loops=loops)
    assert render(families, "json") == jsonformat.render_json(families)
    assert render(families, "statsd") == statsd.render_statsd(families)
