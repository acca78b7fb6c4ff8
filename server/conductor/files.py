"""Where conductor-loop keeps its files under a runs root: message buses and run records.

Rule: names decide, never contents; a bus file sits at the root, in ``<project>/`` or in
``<project>/<task>/``, and a run record at ``<project>/<task>/runs/<run_id>/run-info.yaml``.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from server.conductor.runinfo import RunInfo, parse_run_info

__all__ = ["BusFile", "discover", "read_run_info"]

_ARCHIVED: Final = re.compile(r"((?:TASK-|PROJECT-)?MESSAGE-BUS\.md)\.\d{8}-\d{6}\.archived")
_BUS_NAMES: Final = frozenset(("TASK-MESSAGE-BUS.md", "PROJECT-MESSAGE-BUS.md", "MESSAGE-BUS.md"))
_PATH_PART: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class BusFile:
    """A message-bus file found under the root; ``logical`` drops any ``.archived`` suffix."""

    path: Path
    rel: str
    logical: str
    project: str
    task: str


def _logical_name(name: str) -> str | None:
    if name in _BUS_NAMES:
        return name
    match = _ARCHIVED.fullmatch(name)
    return match[1] if match else None


def discover(root: Path) -> list[BusFile]:
    """Bus files at the root, in ``<project>/`` and in ``<project>/<task>/``; archives first."""
    found: list[BusFile] = []
    _collect(Path(root), (), found)
    return found


def _collect(directory: Path, parts: tuple[str, ...], found: list[BusFile]) -> None:
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except OSError:
        return
    files: list[tuple[str, bool, str, os.DirEntry[str]]] = []
    subdirs: list[os.DirEntry[str]] = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if len(parts) < 2 and not entry.name.startswith("."):
                subdirs.append(entry)
        elif (logical := _logical_name(entry.name)) is not None:
            files.append((logical, entry.name == logical, entry.name, entry))
    for logical, _, name, entry in sorted(files, key=lambda f: f[:3]):
        found.append(
            BusFile(
                path=Path(entry.path),
                rel="/".join((*parts, name)),
                logical="/".join((*parts, logical)),
                project=parts[0] if parts else "",
                task=parts[1] if len(parts) > 1 else "",
            )
        )
    for sub in sorted(subdirs, key=lambda e: e.name):
        _collect(Path(sub.path), (*parts, sub.name), found)


def read_run_info(root: Path, project: str, task: str, run_id: str) -> RunInfo | None:
    """``<root>/<project>/<task>/runs/<run_id>/run-info.yaml``, parsed, or None if unreadable.

    A part that is not a plain path name (``..``, ``/``, empty) is never looked up.
    """
    parts = (project, task, run_id)
    if not all(_PATH_PART.fullmatch(part) for part in parts):
        return None
    path = Path(root).joinpath(project, task, "runs", run_id, "run-info.yaml")
    with contextlib.suppress(OSError):
        return parse_run_info(path.read_bytes())
    return None
