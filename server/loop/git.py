"""Progress from git: new commits and files changed in ``--repo DIR`` during an iteration.

Rule: compare two snapshots of the repository, one taken when the iteration began and
one after it; read with plain ``git`` commands, never writing to the repository (no
``git add``, no stash). A failing ``git`` raises ``GitError``; the caller reports it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bus.errors import TallyError

__all__ = ["Changes", "GitError", "RepoSnapshot", "changes_since", "check_repo", "snapshot"]

#: The empty tree: what an unborn branch (no commit yet) is compared with.
_EMPTY_TREE: Final = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_TIMEOUT_S: Final = 60.0


class GitError(TallyError):
    """Raised when a git command on the ``--repo`` directory fails."""


@dataclass(frozen=True)
class RepoSnapshot:
    """HEAD (``None`` before the first commit) and the content of each dirty or new file."""

    head: str | None
    dirty: dict[str, str | None]  # path -> blob id of its content now (None: deleted)


@dataclass(frozen=True)
class Changes:
    """What an iteration did to the repository."""

    new_commits: bool
    files: frozenset[str]

    @property
    def made_progress(self) -> bool:
        return self.new_commits or bool(self.files)


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {args[0]}: {exc}") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {args[0]}: {message[-1] if message else f'exit {proc.returncode}'}")
    return proc.stdout


def _paths(out: bytes) -> list[str]:
    return [p.decode(errors="surrogateescape") for p in out.split(b"\0") if p]


def _head(repo: Path) -> str | None:
    """HEAD's commit id, ``None`` on an unborn branch (no commit yet)."""
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").decode().strip()
    except GitError:
        return None


def _changed_paths(repo: Path, base: str | None) -> set[str]:
    """Paths whose working-tree content differs from ``base``, and untracked files."""
    changed = _paths(_git(repo, "diff", "--name-only", "--no-renames", "-z", base or _EMPTY_TREE))
    untracked = _paths(_git(repo, "ls-files", "--others", "--exclude-standard", "-z"))
    return set(changed) | set(untracked)


def _blob_ids(repo: Path, paths: list[str]) -> dict[str, str | None]:
    """Each path's content as a blob id (``git hash-object``), ``None`` if it is gone."""
    present = [p for p in paths if (repo / p).is_file()]
    ids: dict[str, str | None] = dict.fromkeys(paths)
    if present:
        stdin = "".join(f"{p}\n" for p in present).encode(errors="surrogateescape")
        out = _git(repo, "hash-object", "--no-filters", "--stdin-paths", stdin=stdin).split()
        ids.update(zip(present, (o.decode() for o in out), strict=True))
    return ids


def check_repo(repo: Path) -> None:
    """Raise ``GitError`` unless ``repo`` is inside a git work tree."""
    if _git(repo, "rev-parse", "--is-inside-work-tree").strip() != b"true":
        raise GitError(f"{repo} is not inside a git work tree")


def snapshot(repo: Path) -> RepoSnapshot:
    """The repository now: HEAD and the content of every file that differs from it."""
    head = _head(repo)
    dirty = sorted(_changed_paths(repo, head))
    return RepoSnapshot(head=head, dirty=_blob_ids(repo, dirty))


def changes_since(repo: Path, before: RepoSnapshot) -> Changes:
    """Commits made and files changed since ``before``.

    A file counts when its content now differs from what it was then: changed,
    added or deleted, committed or not. A file that was already dirty counts only if
    it changed again (or was restored).
    """
    head = _head(repo)
    now = _changed_paths(repo, before.head)
    files = now - before.dirty.keys()
    again = sorted(now & before.dirty.keys())
    current = _blob_ids(repo, again)
    files |= {p for p in again if current[p] != before.dirty[p]}
    files |= before.dirty.keys() - now  # dirty then, back to the old commit's content now
    return Changes(new_commits=head != before.head, files=frozenset(files))
