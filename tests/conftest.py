"""Shared fixtures: real temporary data directories, the asyncio backend for anyio tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tally-data"
    path.mkdir()
    return path
