"""Errors of the whole project: one base, a few subclasses that carry data.

Rule: each error carries its own translation, ``exit_code`` (2 bad input or
usage, 1 a runtime failure) and ``http_status``, and is translated at one
boundary each: ``server/cli.py``'s ``main`` and ``server/app.py``'s ``App``.
Nothing in between catches an error to guess what it means.

The tree, with each class's module, exit code and HTTP status (``tests/bus/test_errors.py``
checks it against the classes)::

    * TallyError (bus.errors)                               exit 1, HTTP 500
      * BusError (bus.errors)                               exit 1, HTTP 503
        * BusFull (bus.errors)                              exit 1, HTTP 507
        * OffsetError (bus.errors)                          exit 2, HTTP 400
          * NotRetained (bus.errors)                        exit 2, HTTP 410
        * BusUnavailable (bus.errors)                       exit 1, HTTP 503
      * CorruptLine (bus.errors)                            exit 1, HTTP 500
      * EventError (bus.errors)                             exit 2, HTTP 400
      * InvalidEvents (bus.errors)                          exit 2, HTTP 400
      * MetricNameError (projections.metrics.families)      exit 2, HTTP 400
      * DurationError (projections.replay)                  exit 2, HTTP 400
      * SnapshotError (projections.snapshot)                exit 1, HTTP 500
      * ConfigError (server.config)                         exit 2, HTTP 500
      * UsageError (server.cli)                             exit 2, HTTP 500
      * ServeError (server.service)                         exit 2, HTTP 500
      * ListenError (server.http.server)                    exit 1, HTTP 500
      * PositionsError (server.conductor.positions)         exit 1, HTTP 500
      * BridgeBusy (server.conductor.positions)             exit 1, HTTP 409
      * LoopUsageError (server.loop.options)                exit 2, HTTP 500
      * GitError (server.loop.git)                          exit 1, HTTP 500
      * ReportError (server.loop.junit)                     exit 2, HTTP 500
      * SpoolBusy (server.loop.spool)                       exit 1, HTTP 500
      * OtlpDecodeError (server.otlp.decode)                exit 2, HTTP 400
      * LogQueryError (server.log_query)                    exit 2, HTTP 400
      * BaseMismatch (server.live.compact)                  exit 2, HTTP 500
      * CompactBusy (server.live.compact)                   exit 1, HTTP 409

An HTTP status of 500 on an error that is bad input on the command line (a bad
``tally.toml``) says that, seen from an HTTP client, it is the server's fault.
``MetricNameError``, ``DurationError`` and ``ReportError`` are also ``ValueError``s.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BusError",
    "BusFull",
    "BusUnavailable",
    "CorruptLine",
    "EventError",
    "InvalidEvents",
    "NotRetained",
    "OffsetError",
    "TallyError",
]


class TallyError(Exception):
    """Raised when tally itself detects a failure, as the base of every other tally error."""

    #: The command line's exit status: 2 for bad input or usage, 1 for a runtime failure.
    exit_code: ClassVar[int] = 1
    #: The HTTP status of a response to a request that raised it.
    http_status: ClassVar[int] = 500

    def as_dict(self) -> dict[str, object]:
        """The error as a JSON object (the body of an HTTP error response)."""
        return {"error": str(self)}


class BusError(TallyError):
    """Raised when the log cannot be opened, locked, read or appended to."""

    http_status = 503


class BusFull(BusError):
    """Raised when an append finds no space left on the device or in the quota."""

    http_status = 507


class OffsetError(BusError):
    """Raised when a read is asked to start at a position that is not a line start of the log."""

    exit_code = 2
    http_status = 400


class NotRetained(OffsetError):
    """Raised when a position or time lies before the base: ``first``, ``first_ts`` (or None)."""

    http_status = 410

    def __init__(self, what: str, first: int, first_ts: float | None) -> None:
        when = "" if first_ts is None else f" (event time {first_ts:.3f})"
        super().__init__(
            f"{what} is no longer held: retention removed the events before it; "
            f"the earliest this log can serve is position {first}{when}"
        )
        self.first = first
        self.first_ts = first_ts

    def as_dict(self) -> dict[str, object]:
        return {"error": str(self), "first": self.first, "first_ts": self.first_ts}


class BusUnavailable(BusError):
    """Raised when the bus at a URL cannot be reached (a NATS server down or refusing)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the bus {url}: {reason}")
        self.url = url
        self.reason = reason


class CorruptLine(TallyError):
    """Raised when a line of the log cannot be decoded into an event."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class EventError(TallyError):
    """Raised when one submitted event is not valid, naming its line and field."""

    exit_code = 2
    http_status = 400

    def __init__(self, line: int, reason: str, field: str | None = None) -> None:
        where = f"line {line}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {reason}")
        self.line = line
        self.field = field
        self.reason = reason

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "error": self.reason}


class InvalidEvents(TallyError):
    """Raised when a batch of submitted events has errors, so that nothing was appended."""

    exit_code = 2
    http_status = 400

    def __init__(self, errors: list[EventError]) -> None:
        super().__init__("\n".join([*(str(e) for e in errors), "nothing was appended"]))
        self.errors = errors

    def as_dict(self) -> dict[str, object]:
        return {
            "error": "invalid events; nothing appended",
            "errors": [e.as_dict() for e in self.errors],
        }
