"""A family's declaration (``FamilySpec``) and the empty family built from it.

Rule: a spec describes a family completely (name, kind, help, label names,
buckets); nothing that renders a catalogue family adds to it or overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from projections.metrics.families import (
    DEFAULT_MAX_SERIES,
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    Kind,
    OverflowCounts,
)

__all__ = ["FamilySpec", "build_family", "spec"]


class FamilySpec(msgspec.Struct, frozen=True, kw_only=True):
    """One family of the catalogue: everything needed to build it empty."""

    name: str
    kind: Kind
    help: str
    label_names: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: A histogram's exemplar label: each bucket keeps the latest observation with the
    #: value of this field of its event (``run_id``, ``loop_id``) and the event's bus
    #: position (``offset``). ``""``: no exemplars.
    exemplar: str = ""


def spec(
    name: str,
    kind: Kind,
    help: str,
    *labels: str,
    buckets: Sequence[float] = (),
    exemplar: str = "",
) -> FamilySpec:
    """A ``FamilySpec``, written the way the catalogue's tables read."""
    return FamilySpec(
        name=name,
        kind=kind,
        help=help,
        label_names=labels,
        buckets=tuple(buckets),
        exemplar=exemplar,
    )


def build_family(
    spec: FamilySpec,
    *,
    max_series: int = DEFAULT_MAX_SERIES,
    overflow: OverflowCounts | None = None,
) -> Family:
    """An empty family for ``spec`` (summaries are not in the catalogue)."""
    match spec.kind:
        case "counter":
            return CounterFamily(
                spec.name, spec.help, spec.label_names, max_series=max_series, overflow=overflow
            )
        case "gauge":
            return GaugeFamily(
                spec.name, spec.help, spec.label_names, max_series=max_series, overflow=overflow
            )
        case "histogram":
            return HistogramFamily(
                spec.name,
                spec.help,
                spec.label_names,
                bounds=spec.buckets,
                max_series=max_series,
                overflow=overflow,
                exemplar_label=spec.exemplar,
            )
        case _:
            raise ValueError(f"the catalogue has no {spec.kind} families ({spec.name})")
