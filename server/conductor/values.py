"""conductor-loop's YAML values, read the way its writers write them.

Rule: no I/O and no clock here: text and YAML scalars in, Python values out. Times
without a zone are UTC, as conductor-loop writes them; Go's zero time is no time.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final

import yaml

__all__ = [
    "MSG_ID_KEYS",
    "PROJECT_KEYS",
    "RUN_ID_KEYS",
    "TASK_KEYS",
    "TS_KEYS",
    "TYPE_KEYS",
    "YAML_ERRORS",
    "as_integer",
    "as_text",
    "as_timestamp",
    "first_field",
    "load_yaml",
    "parse_time",
]

#: libyaml's safe loader when PyYAML was built with it, else the pure-Python one.
_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TIME: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})([ T])(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?"
)

# Header keys, the current spelling first, then older writers' spellings.
MSG_ID_KEYS: Final = ("msg_id", "messageId", "message_id")
TS_KEYS: Final = ("ts", "timestamp")
TYPE_KEYS: Final = ("type",)
PROJECT_KEYS: Final = ("project_id", "project", "projectId")
TASK_KEYS: Final = ("task_id", "task", "taskId")
RUN_ID_KEYS: Final = ("run_id", "runId")


def parse_time(text: str) -> float | None:
    """Unix seconds of ``YYYY-MM-DD HH:MM:SS``, ``YYYY-MM-DDTHH:MM:SS`` or RFC 3339; else None.

    A time without a zone is UTC, as conductor-loop writes it.
    """
    match = _TIME.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, sep, hour, minute, second, fraction, zone = match.groups()
    if zone and sep == " ":
        return None
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    try:
        tz = UTC
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError:
        return None
    return moment.timestamp()


def as_timestamp(value: object) -> float | None:
    """A YAML value as Unix seconds; Go's zero time (year 1) and non-times are None."""
    match value:
        case bool():
            return None
        case datetime():
            moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            return moment.timestamp() if moment.year >= 1970 else None
        case date():
            return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
        case int() | float():
            return float(value) if math.isfinite(value) and value >= 0 else None
        case str():
            return parse_time(value)
        case _:
            return None


def as_text(value: object) -> str:
    """A YAML scalar as text; lists, mappings and null are ""."""
    match value:
        case bool():
            return "true" if value else "false"
        case str():
            return value.strip()
        case int() | float():
            return str(value)
        case datetime() | date():
            return value.isoformat()
        case _:
            return ""


def first_field(doc: dict[Any, Any], names: tuple[str, ...]) -> str:
    for name in names:
        text = as_text(doc.get(name))
        if text:
            return text
    return ""


def as_integer(value: object) -> int | None:
    match value:
        case bool():
            return None
        case int():
            return value
        case str() if re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        case _:
            return None


def load_yaml(text: str) -> object:
    """The safe loader's result; raises on any malformed input (see ``YAML_ERRORS``)."""
    return yaml.load(text, Loader=_LOADER)


# What the safe loader raises on hostile input: YAMLError, ValueError for an
# impossible date, RecursionError for deep nesting, OverflowError for huge numbers.
YAML_ERRORS: Final = (yaml.YAMLError, ValueError, RecursionError, OverflowError, TypeError)
