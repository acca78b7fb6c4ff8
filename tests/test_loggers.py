"""One logger namespace: every logger of bus/, projections/ and server/ is ``tally.<part>``.

So one ``logging.getLogger("tally")`` handler or level reaches all of them.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path

from tests.support.modules import PACKAGES, layer_modules


def _is_tally_name(name: str) -> bool:
    return name.startswith("tally.") and all(part.isidentifier() for part in name.split("."))


def _get_logger_names(source: str) -> Iterator[tuple[int, str]]:
    """(line, argument as written) of each ``getLogger(...)`` call; ``""`` for no argument."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "getLogger":
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield node.lineno, arg.value
                else:
                    yield node.lineno, "" if arg is None else ast.unparse(arg)


def test_every_get_logger_call_names_a_tally_logger() -> None:
    """Each ``getLogger(...)`` in the source takes a literal ``"tally.<part>"``."""
    calls: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted(Path(package.__path__[0]).rglob("*.py")):
            for line, name in _get_logger_names(path.read_text(encoding="utf-8")):
                calls[f"{path}:{line}"] = name
    assert calls, "no getLogger call found: the scan is broken"
    wrong = {where: name for where, name in calls.items() if not _is_tally_name(name)}
    assert wrong == {}


def test_imported_modules_hold_only_tally_loggers() -> None:
    """Every logger bound in a module of ours, once all of them are imported, is tally.*."""
    loggers = {
        f"{module.__name__}.{attr}": value.name
        for module in layer_modules()
        for attr, value in vars(module).items()
        if isinstance(value, logging.Logger)
    }
    assert loggers, "no module-level logger found: the scan is broken"
    wrong = {where: name for where, name in loggers.items() if not _is_tally_name(name)}
    assert wrong == {}
    ours = {package.__name__ for package in PACKAGES}
    stray = [  # e.g. a logging.getLogger(__name__) called in a function
        name for name in logging.root.manager.loggerDict if name.split(".")[0] in ours
    ]
    assert stray == []
