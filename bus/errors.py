"""Errors of the whole project: one base, a few subclasses that carry data.

They are translated into exit codes and HTTP statuses at one boundary each
(``server/cli.py`` and ``server/app.py``), nowhere else.
"""

from __future__ import annotations

__all__ = ["BusError", "CorruptLine", "EventError", "InvalidEvents", "TallyError"]


class TallyError(Exception):
    """Raised for any failure tally itself detects; the base of the others."""


class BusError(TallyError):
    """Raised when the log on disk cannot be opened, locked or appended to."""


class CorruptLine(TallyError):
    """Raised when a line of the log cannot be decoded into an event."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class EventError(TallyError):
    """Raised when one submitted event is not valid: names its line and field."""

    def __init__(self, line: int, reason: str, field: str | None = None) -> None:
        where = f"line {line}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {reason}")
        self.line = line
        self.field = field
        self.reason = reason


class InvalidEvents(TallyError):
    """Raised when a batch of submitted events has errors; nothing was appended."""

    def __init__(self, errors: list[EventError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors
