"""JSON exposition: every family with its series, plus the per-loop roll-ups.

Rule: a pure function of the families' state (sorted by family name, then label
values). JSON has no NaN or infinities: those numbers are written as the strings
``"NaN"``, ``"+Inf"`` and ``"-Inf"``, spelled as in the text formats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Final

import msgspec

from projections.exposition.text import exemplar_labels, format_float
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily, Labels
from projections.metrics.summary import QUANTILES, AnyFamily, SummaryFamily

__all__ = ["CONTENT_TYPE", "json_number", "render_json"]

CONTENT_TYPE: Final = "application/json"

_encoder: Final = msgspec.json.Encoder()
_QUANTILE_KEYS: Final = tuple(format_float(q) for q in QUANTILES)


def json_number(v: float) -> float | str:
    """``v`` itself when finite, else ``"NaN"``, ``"+Inf"`` or ``"-Inf"``."""
    return v if math.isfinite(v) else format_float(v)


def _labels(names: tuple[str, ...], values: Labels) -> dict[str, str]:
    return dict(zip(names, values, strict=True))


def _series(family: AnyFamily) -> list[dict[str, object]]:
    names = family.label_names
    match family:
        case CounterFamily() | GaugeFamily():
            values = family.values
            return [
                {"labels": _labels(names, k), "value": json_number(values[k])}
                for k in sorted(values)
            ]
        case HistogramFamily():
            les = [format_float(b) for b in family.bounds] + ["+Inf"]
            out: list[dict[str, object]] = []
            label = family.exemplar_label
            for k in sorted(family.series):
                s = family.series[k]
                row: dict[str, object] = {
                    "labels": _labels(names, k),
                    "buckets": dict(zip(les, accumulate(s.counts), strict=True)),
                    "sum": json_number(s.sum),
                    "count": s.count,
                }
                if label and s.exemplars:
                    row["exemplars"] = {
                        les[bucket]: {
                            "labels": exemplar_labels(label, e),
                            "value": json_number(e.value),
                            "ts": json_number(e.ts),
                        }
                        for bucket, e in sorted(s.exemplars.items())
                    }
                out.append(row)
            return out
        case SummaryFamily():
            out = []
            for k in sorted(family.series):
                ss = family.series[k]
                quantiles = map(json_number, family.quantiles(ss))
                out.append(
                    {
                        "labels": _labels(names, k),
                        "quantiles": dict(zip(_QUANTILE_KEYS, quantiles, strict=True)),
                        "sum": json_number(ss.sum),
                        "count": ss.count,
                    }
                )
            return out
    raise TypeError(f"not a metric family: {family!r}")


def render_json(
    families: Iterable[AnyFamily],
    *,
    loops: Mapping[str, object] | None = None,
    extra: Mapping[str, object] | None = None,
) -> bytes:
    """``{"families": [...], "loops": {...}, **extra}`` as UTF-8 JSON.

    Each family is ``{"name", "type", "help", "labels": [names], "series": [...]}``;
    a counter or gauge series is ``{"labels": {name: value}, "value": v}``, a
    histogram series ``{"labels", "buckets": {le: cumulative count}, "sum",
    "count"}`` (``le`` as in the text format, ending ``"+Inf"``) and, when it has any,
    ``"exemplars": {le: {"labels": {"run_id": ..., "offset": "123"}, "value", "ts"}}``
    (the latest observation per bucket, its event's bus position), a summary series
    ``{"labels", "quantiles": {"0.5": v, "0.9": v, "0.99": v}, "sum", "count"}``.
    ``loops`` defaults to ``{}``; ``extra`` adds top-level keys (not these two).
    """
    doc: dict[str, object] = {
        "families": [
            {
                "name": f.name,
                "type": f.kind,
                "help": f.help,
                "labels": list(f.label_names),
                "series": _series(f),
            }
            for f in sorted(families, key=lambda f: f.name)
        ],
        "loops": dict(loops) if loops is not None else {},
    }
    if extra:
        clash = doc.keys() & extra.keys()
        if clash:
            raise ValueError(f"extra may not replace {sorted(clash)}")
        doc.update(extra)
    return _encoder.encode(doc)
