"""The fold's hot loop, compiled from ``_foldcore.c``: see ``projections.foldloop``."""

from typing import Any

from projections.foldloop import FoldSpec

def fold_run(
    events: list[Any], start: int, now: Any, spec: FoldSpec, /
) -> tuple[Any, int, tuple[int, ...]]: ...
