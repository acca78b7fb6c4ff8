"""Progress from a real git repository: commits, changes, new, deleted and restored files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from server.loop.git import GitError, changes_since, check_repo, snapshot


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def commit(repo: Path, message: str = "c") -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "kept.txt").write_text("kept\n")
    (tmp_path / "gone.txt").write_text("gone\n")
    commit(tmp_path)
    return tmp_path


def test_nothing_done_is_no_progress(repo: Path) -> None:
    before = snapshot(repo)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x").write_text("x")
    changes = changes_since(repo, before)
    assert not changes.made_progress and changes.files == frozenset()


def test_commits_and_uncommitted_changes_count(repo: Path) -> None:
    before = snapshot(repo)
    (repo / "new.txt").write_text("new\n")
    commit(repo)
    (repo / "kept.txt").write_text("changed\n")
    (repo / "gone.txt").unlink()
    (repo / "untracked.txt").write_text("u\n")
    changes = changes_since(repo, before)
    assert changes.new_commits
    assert changes.files == {"new.txt", "kept.txt", "gone.txt", "untracked.txt"}


def test_a_commit_of_what_was_dirty_already_is_progress_without_files(repo: Path) -> None:
    (repo / "kept.txt").write_text("dirty before\n")
    before = snapshot(repo)
    commit(repo)
    changes = changes_since(repo, before)
    assert changes.new_commits and changes.files == frozenset()


def test_a_dirty_file_counts_when_it_changes_again_or_is_restored(repo: Path) -> None:
    (repo / "kept.txt").write_text("dirty before\n")
    (repo / "gone.txt").write_text("dirty too\n")
    before = snapshot(repo)
    assert changes_since(repo, before).files == frozenset()
    (repo / "kept.txt").write_text("changed again\n")
    git(repo, "checkout", "--", "gone.txt")
    assert changes_since(repo, before).files == {"kept.txt", "gone.txt"}


def test_an_unborn_branch(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    before = snapshot(tmp_path)
    assert before.head is None
    (tmp_path / "first.txt").write_text("1\n")
    assert changes_since(tmp_path, before).files == {"first.txt"}


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError):
        check_repo(tmp_path / "..")  # the temporary directory's parent is no work tree
