"""``GET /api/v1/log``: the log's events as JSON with their positions, filtered and paged.

Rule: one request reads a bounded stretch of the log (at most ``MAX_SCAN_EVENTS``
events) through the bus contract, so it works the same on every backend; ``next``
says where to go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import anyio
import msgspec

from bus.contract import Bus
from bus.errors import OffsetError, TallyError
from bus.events import Event
from server.http.routing import Request, Response

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_SCAN_EVENTS",
    "LogQuery",
    "LogQueryError",
    "handle_log",
    "read_log",
]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
#: The most events one request looks at, matching or not.
MAX_SCAN_EVENTS: Final = 100_000

_json: Final = msgspec.json.Encoder()


class LogQueryError(TallyError):
    """Raised when a parameter of ``GET /api/v1/log`` is wrong; the message names it."""

    exit_code = 2
    http_status = 400


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Events at positions ``[start, stop)``, at most ``limit``, each holding every ``match``
    (field name, value as a string)."""

    start: int | None = None
    stop: int | None = None
    limit: int = DEFAULT_LIMIT
    match: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_target(cls, target: str) -> LogQuery:
        """The query of ``/api/v1/log?from=&to=&limit=&match=FIELD:VALUE``."""
        query = parse_qs(urlsplit(target).query, keep_blank_values=True)
        matches = []
        for text in query.get("match", []):
            name, sep, value = text.partition(":")
            if not sep or not name:
                raise LogQueryError(f"match: expected FIELD:VALUE, got {text!r}")
            matches.append((name, value))
        limit = _int(query, "limit")
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise LogQueryError(f"limit: must be 1 to {MAX_LIMIT}, got {limit}")
        return cls(
            start=_int(query, "from"),
            stop=_int(query, "to"),
            limit=DEFAULT_LIMIT if limit is None else limit,
            match=tuple(matches),
        )

    def holds(self, record: dict[str, Any]) -> bool:
        """Whether an event (as JSON builtins) has every field of ``match`` with its value."""
        for name, value in self.match:
            if name not in record or _text(record[name]) != value:
                return False
        return True


def _int(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise LogQueryError(f"{name}: given {len(values)} times, expected once")
    try:
        number = int(values[0])
    except ValueError:
        raise LogQueryError(f"{name}: expected a whole number, got {values[0]!r}") from None
    if number < 0:
        raise LogQueryError(f"{name}: must not be negative, got {number}")
    return number


def _text(value: Any) -> str:
    """A field's string form: a string as it is, anything else as JSON spells it."""
    return value if isinstance(value, str) else _json.encode(value).decode()


async def read_log(bus: Bus, query: LogQuery) -> dict[str, Any]:
    """``{"events": [{"position", "event"}], "next", "first", "end"}`` for ``query``.

    Reading starts at ``query.start`` (at the oldest position held when that is
    earlier or not given: ``first`` says where it started) and stops before
    ``query.stop``, after ``query.limit`` matches, after ``MAX_SCAN_EVENTS`` events, or at
    the end of the log; ``next`` is where the next page starts.
    """
    first, end = await bus.first(), await bus.end()
    start = first if query.start is None else max(query.start, first)
    stop = end if query.stop is None else min(query.stop, end)
    events: list[dict[str, Any]] = []
    position = start
    if start >= stop:
        return {"events": events, "next": start, "first": start, "end": end}
    scanned, read_any = 0, False
    try:
        async for batch in bus.read(start, stop):
            offsets, batch_events = batch.offsets, batch.events
            for i, event in enumerate(batch_events):
                record = _record(event)
                scanned += 1
                if query.holds(record):
                    events.append({"position": offsets[i], "event": record})
                if len(events) >= query.limit or scanned >= MAX_SCAN_EVENTS:
                    position = offsets[i + 1] if i + 1 < len(offsets) else batch.end
                    return {"events": events, "next": position, "first": start, "end": end}
            position, read_any = batch.end, True
            await anyio.sleep(0)
    except OffsetError as exc:
        raise LogQueryError(f"from: {exc}") from None
    # a batch's end is where a reader resumes; with none read, nothing was left before stop
    return {"events": events, "next": position if read_any else stop, "first": start, "end": end}


def _record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = msgspec.to_builtins(event)
    return record


async def handle_log(bus: Bus, request: Request) -> Response:
    """``GET /api/v1/log?from=POSITION&to=POSITION&limit=N&match=FIELD:VALUE``."""
    return Response.json(200, await read_log(bus, LogQuery.from_target(request.target)))
