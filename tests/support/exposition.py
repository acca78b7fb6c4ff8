"""Reading exposition output back: prometheus_client's parser, the JSON document, promtool."""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

import msgspec
from hypothesis import strategies as st

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

#: Any label value: every character but lone surrogates, which UTF-8 cannot carry.
label_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


Key = tuple[str, frozenset[tuple[str, str]]]


def _norm(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    out = dict(labels)
    for special in ("le", "quantile"):
        if special in out:
            out[special] = repr(float(out[special]))
    return frozenset(out.items())


def parsed_samples(families: Iterable[Any]) -> dict[Key, float]:
    """``(sample name, labels) -> value`` from prometheus_client's parsed families."""
    return {(s.name, _norm(s.labels)): float(s.value) for f in families for s in f.samples}


def _number(v: float | str) -> float:
    return float(v.replace("Inf", "inf")) if isinstance(v, str) else float(v)


def json_samples(body: bytes) -> dict[Key, float]:
    """The same mapping from ``render_json``'s document."""
    doc = msgspec.json.decode(body)
    out: dict[Key, float] = {}
    for f in doc["families"]:
        name = f["name"]
        for s in f["series"]:
            labels: dict[str, str] = s["labels"]
            if f["type"] in ("counter", "gauge"):
                out[(name, _norm(labels))] = _number(s["value"])
                continue
            if f["type"] == "histogram":
                for le, n in s["buckets"].items():
                    out[(f"{name}_bucket", _norm({**labels, "le": le}))] = float(n)
            else:
                for q, v in s["quantiles"].items():
                    out[(name, _norm({**labels, "quantile": q}))] = _number(v)
            out[(f"{name}_sum", _norm(labels))] = _number(s["sum"])
            out[(f"{name}_count", _norm(labels))] = float(s["count"])
    return out


def same_values(a: dict[Key, float], b: dict[Key, float]) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def promtool(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, timeout=60, check=False
    )
