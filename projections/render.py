"""One entry point from state to bytes in any format; pure, like the renderers it picks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from projections.fold import Projection
from projections.jsonformat import render_json
from projections.negotiate import Format
from projections.openmetrics import render_openmetrics
from projections.prometheus import render_prometheus
from projections.statsd import render_statsd
from projections.summary import AnyFamily

__all__ = ["render_families", "render_projection"]


def render_families(
    families: Sequence[AnyFamily], fmt: Format, *, loops: Mapping[str, object] | None = None
) -> bytes:
    """Render sorted ``families``; JSON also carries the per-loop roll-ups."""
    match fmt:
        case "prometheus":
            return render_prometheus(families)
        case "openmetrics":
            return render_openmetrics(families)
        case "json":
            return render_json(families, loops=loops)
        case "statsd":
            return render_statsd(families)
    raise ValueError(f"unknown format {fmt!r}")


def render_projection(projection: Projection, fmt: Format) -> bytes:
    return render_families(projection.families(), fmt, loops=projection.loops())
