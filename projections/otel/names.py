"""OpenTelemetry names -> Prometheus names, as OpenTelemetry's Prometheus translation does.

Rule: pure string functions, one table of UCUM units. A metric name's dots (and
any other character Prometheus does not allow) become ``_``; the unit adds a suffix
(``s`` -> ``_seconds``, ``By/s`` -> ``_bytes_per_second``; an annotation in curly
braces is dropped; ``1`` is ``_ratio`` on gauges only; an unknown unit is kept as
written: ``tokens`` -> ``_tokens``); monotonic sums end in ``_total``.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["UNITS", "label_name", "label_value", "metric_name", "unit_suffix"]

#: UCUM units and their words in Prometheus names.
UNITS: Final[dict[str, str]] = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tebibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
#: The unit after a ``/`` (``By/s``): singular words.
_PER_UNITS: Final[dict[str, str]] = {
    "s": "second",
    "m": "minute",
    "min": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
_ANNOTATION: Final = re.compile(r"\{[^}]*\}")
_INVALID: Final = re.compile(r"[^a-zA-Z0-9_]+")
_INVALID_NAME: Final = re.compile(r"[^a-zA-Z0-9_:]+")
_UNDERSCORES: Final = re.compile(r"__+")


def _clean(text: str) -> str:
    return _UNDERSCORES.sub("_", _INVALID.sub("_", text)).strip("_")


def unit_suffix(unit: str, *, gauge: bool) -> str:
    """The name suffix a UCUM unit adds, without its leading ``_`` (``""``: none)."""
    unit = _ANNOTATION.sub("", unit).strip()
    if unit == "1":
        return "ratio" if gauge else ""
    main, _, per = unit.partition("/")
    words = _clean(UNITS.get(main.strip(), main.strip()))
    per_word = _clean(_PER_UNITS.get(per.strip(), per.strip()))
    if per_word:
        return f"{words}_per_{per_word}" if words else f"per_{per_word}"
    return words


def metric_name(name: str, unit: str, *, counter: bool, gauge: bool) -> str:
    """The Prometheus family name of an OpenTelemetry metric."""
    base = _UNDERSCORES.sub("_", _INVALID_NAME.sub("_", name)).strip("_") or "metric"
    if base[0].isdigit():
        base = f"_{base}"
    if counter:
        base = base.removesuffix("_total")
    suffix = unit_suffix(unit, gauge=gauge)
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return f"{base}_total" if counter else base


def label_name(key: str) -> str:
    """An attribute key as a label name: other characters -> ``_``; never ``__``-led."""
    name = _INVALID.sub("_", key) or "key"
    if name[0].isdigit():
        return f"key_{name}"
    if name.startswith("__"):
        return f"key{name}"
    return name


def label_value(value: str | int | float | bool) -> str:
    """An attribute value as a label value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)
