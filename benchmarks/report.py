"""What every benchmark's JSON says about the machine, and writing that JSON."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["machine", "write_json"]


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
