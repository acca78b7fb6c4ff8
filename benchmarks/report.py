"""What every benchmark's JSON says about the machine, and writing that JSON."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["finish", "machine", "write_json"]


def machine(**extra: Any) -> dict[str, Any]:
    """Python, msgspec, platform and CPU count, then ``extra`` (the run's own settings)."""
    return {
        "python": platform.python_version(),
        "msgspec": msgspec.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **extra,
    }


def write_json(path: Path, meta: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    """``{"meta": meta, **results}``, indented, to ``path``."""
    path.write_bytes(msgspec.json.format(msgspec.json.encode({"meta": meta, **results})))


def finish(
    out: Path,
    text: str,
    results: Mapping[str, Any],
    notes: list[str],
    *,
    quick: bool,
    started: float,
) -> None:
    """Print a run's table and notes, then write its JSON (``started``: ``time.perf_counter()``
    at its start) to ``out``."""
    print(text)
    for note in notes:
        print(f"- {note}")
    meta = machine(quick=quick, seconds=round(time.perf_counter() - started, 1), notes=notes)
    write_json(out, meta, results)
    print(f"wrote {out} in {meta['seconds']} s")
