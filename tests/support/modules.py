"""Every module of the three layers, imported: for tests that check a rule across all of them."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import bus
import projections
import server

#: The layers' packages, bottom up.
PACKAGES: tuple[ModuleType, ...] = (bus, projections, server)


def layer_modules() -> list[ModuleType]:
    """Each package of ``PACKAGES`` and every module under it (but ``__main__``), imported."""
    found: list[ModuleType] = []
    for package in PACKAGES:
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if not info.name.endswith(".__main__"):  # importing it would run the CLI
                found.append(importlib.import_module(info.name))
    return found
