"""One exception tree: every tally exception descends from TallyError and knows its translation.

The tree drawn in ``bus/errors.py``'s docstring is parsed here and checked
against the classes themselves, so the picture cannot drift from the code.
"""

from __future__ import annotations

import importlib
import re

import pytest

import bus.errors
from bus.errors import BusError, EventError, InvalidEvents, TallyError
from projections.metrics.families import MetricNameError, validate_metric_name
from projections.replay import DurationError, parse_duration
from tests.support.modules import layer_modules

#: ``  * Name (module) ... exit N, HTTP S``: two spaces of indent per level of the tree.
_TREE_LINE = re.compile(
    r"^(?P<indent>(?:  )*)\* (?P<name>\w+) \((?P<module>[\w.]+)\)\s+"
    r"exit (?P<exit>\d), HTTP (?P<http>\d{3})$"
)


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in bus/, projections/ or server/, by qualified name."""
    classes: dict[str, type[BaseException]] = {}
    for module in layer_modules():
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return classes


def _tree() -> list[tuple[int, str, str, int, int]]:
    """(depth, name, module, exit code, HTTP status) for each line of the drawn tree."""
    assert bus.errors.__doc__ is not None
    rows = []
    for line in bus.errors.__doc__.splitlines():
        match = _TREE_LINE.match(line.removeprefix("    "))  # the literal block's indent
        if match:
            rows.append(
                (
                    len(match["indent"]) // 2,
                    match["name"],
                    match["module"],
                    int(match["exit"]),
                    int(match["http"]),
                )
            )
    return rows


def test_every_exception_descends_from_tally_error() -> None:
    classes = _exception_classes()
    assert "projections.metrics.families.MetricNameError" in classes
    outside = [name for name, cls in classes.items() if not issubclass(cls, TallyError)]
    assert outside == []


def test_docstrings_are_one_sentence_saying_when() -> None:
    for name, cls in _exception_classes().items():
        doc = " ".join((cls.__doc__ or "").split())
        assert doc.startswith("Raised when "), name
        assert doc.endswith(".") and ". " not in doc, f"{name}: one sentence, got {doc!r}"


def test_the_drawn_tree_is_the_real_tree() -> None:
    rows = _tree()
    assert rows[0][:2] == (0, "TallyError")
    drawn = {f"{module}.{name}" for _, name, module, _, _ in rows}
    assert drawn == set(_exception_classes())
    parents: list[type[BaseException]] = []
    for depth, name, module, exit_code, http_status in rows:
        cls = getattr(importlib.import_module(module), name)
        del parents[depth:]
        if parents:
            assert parents[-1] in cls.__bases__, f"{name} is drawn under {parents[-1].__name__}"
        else:
            assert cls is TallyError
        assert (cls.exit_code, cls.http_status) == (exit_code, http_status), name
        parents.append(cls)


def test_translations_are_codes_a_boundary_can_use() -> None:
    for name, cls in _exception_classes().items():
        assert issubclass(cls, TallyError)
        assert cls.exit_code in (1, 2), name  # 2 bad input or usage, 1 runtime failure
        assert 400 <= cls.http_status <= 599, name


def test_value_errors_stay_value_errors() -> None:
    # existing callers catch these as ValueError
    with pytest.raises(ValueError, match="invalid metric name"):
        validate_metric_name("1x")
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("5x")
    assert issubclass(MetricNameError, ValueError) and issubclass(DurationError, ValueError)


def test_errors_carry_their_data() -> None:
    line = EventError(3, "must be >= 0", "value")
    assert (line.line, line.field, line.reason) == (3, "value", "must be >= 0")
    assert line.as_dict() == {"line": 3, "field": "value", "error": "must be >= 0"}
    batch = InvalidEvents([EventError(1, "not valid JSON"), line])
    assert str(batch).splitlines() == [
        "line 1: not valid JSON",
        "line 3, field 'value': must be >= 0",
        "nothing was appended",
    ]
    assert batch.as_dict() == {
        "error": "invalid events; nothing appended",
        "errors": [
            {"line": 1, "field": None, "error": "not valid JSON"},
            {"line": 3, "field": "value", "error": "must be >= 0"},
        ],
    }
    assert BusError("disk on fire").as_dict() == {"error": "disk on fire"}
