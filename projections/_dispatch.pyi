"""The fold's hot loop, compiled from ``_dispatch.c``: see ``projections.dispatch``."""

from typing import Any

from projections.dispatch import FoldSpec

def fold_run(
    events: list[Any], start: int, now: Any, spec: FoldSpec, /
) -> tuple[Any, int, tuple[int, ...]]: ...
