"""The exposition formats, one table: a format's name -> its content type and its renderer.

Rule: pure, like the renderers it lists; everything that picks a format (the
``Accept`` header, ``?format=``, ``tally replay --format``) looks it up here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

from projections.exposition import jsonformat, openmetrics, prometheus, statsd
from projections.metrics.summary import AnyFamily

__all__ = ["FORMATS", "Exposition", "Format", "content_type", "render"]

Format = Literal["prometheus", "openmetrics", "json", "statsd"]
#: Per-loop roll-ups (loop id -> JSON-ready dict): only the JSON format carries them.
Loops = Mapping[str, Any]


class Exposition(NamedTuple):
    """One format: what ``Content-Type`` its body has and how it is rendered."""

    content_type: str
    render: Callable[[Sequence[AnyFamily], Loops | None], bytes]


FORMATS: Final[dict[Format, Exposition]] = {
    "prometheus": Exposition(
        prometheus.CONTENT_TYPE, lambda families, _: prometheus.render_prometheus(families)
    ),
    "openmetrics": Exposition(
        openmetrics.CONTENT_TYPE, lambda families, _: openmetrics.render_openmetrics(families)
    ),
    "json": Exposition(
        jsonformat.CONTENT_TYPE,
        lambda families, loops: jsonformat.render_json(families, loops=loops),
    ),
    "statsd": Exposition(statsd.CONTENT_TYPE, lambda families, _: statsd.render_statsd(families)),
}


def render(families: Sequence[AnyFamily], fmt: Format, *, loops: Loops | None = None) -> bytes:
    """Render sorted ``families`` in ``fmt``; JSON also carries the per-loop roll-ups."""
    return FORMATS[fmt].render(families, loops)


def content_type(fmt: Format) -> str:
    """The ``Content-Type`` of a body rendered in ``fmt``."""
    return FORMATS[fmt].content_type
