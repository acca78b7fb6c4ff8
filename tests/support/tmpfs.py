"""A small tmpfs for full-disk tests: mounted for one test, unmounted in a finalizer."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "small_tmpfs"]


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "3m") -> Iterator[Path]:
    """Mount a ``size`` tmpfs on ``where`` (skip when not root or the mount fails)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(path: Path, limit: int | None = None) -> int:
    """Write zeros to ``path`` until the device is full (or ``limit`` bytes); bytes written."""
    chunk = b"\0" * 4096
    written = 0
    with open(path, "ab", buffering=0) as f:
        while limit is None or written < limit:
            try:
                n = f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            written += n or 0
    return written
