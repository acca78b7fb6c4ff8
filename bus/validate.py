"""Validation of submitted events: all or nothing, each error naming line and field.

Used by ``tally emit`` and ``POST /api/v1/events``. Nothing here touches the
log: callers append only what this module returned without error. ``schema``
adds the declared types (``[[event_types]]``); without it, only the built-ins.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from bus.errors import EventError, InvalidEvents
from bus.events import Event, EventBase
from bus.user_types import BUILTIN_SCHEMA, EventSchema

__all__ = ["MAX_REPORTED_ERRORS", "events_from_body", "events_from_jsonl", "events_from_pairs"]

#: At most this many errors are reported for one submission.
MAX_REPORTED_ERRORS: Final = 20

_any_decoder: Final = msgspec.json.Decoder()
_event_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)
_list_decoder: Final[msgspec.json.Decoder[list[Event]]] = msgspec.json.Decoder(list[Event])
_FIELD_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_KEY_IN = re.compile(r" - at `key` in `\$\.([^`]*)`$")


def _event_error(line: int, exc: msgspec.MsgspecError, raw: object = None) -> EventError:
    message = str(exc)
    field: str | None = None
    match = _KEY_IN.search(message) or _FIELD_AT.search(message)
    if match:
        field = match.group(1) or None
        message = message[: match.start()]
    if field == "type" and isinstance(raw, dict) and "type" in raw:
        message = f"unknown event type {raw['type']!r}"
    elif isinstance(exc, msgspec.ValidationError) and message.startswith("Object missing"):
        name = re.search(r"`([^`]+)`", message)
        field = name.group(1) if name else field
    return EventError(line, message, field)


def _convert(line: int, obj: object, schema: EventSchema) -> Event:
    try:
        event: Event = msgspec.convert(obj, schema.union)
        return event
    except msgspec.ValidationError as exc:
        raise _event_error(line, exc, obj) from None


def _collect(items: list[tuple[int, object]], schema: EventSchema) -> list[Event]:
    events: list[Event] = []
    errors: list[EventError] = []
    for line, obj in items:
        try:
            events.append(_convert(line, obj, schema))
        except EventError as err:
            errors.append(err)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if errors:
        raise InvalidEvents(errors)
    return events


def events_from_jsonl(data: bytes, *, schema: EventSchema = BUILTIN_SCHEMA) -> list[Event]:
    """Decode JSONL (blank lines skipped); every line is validated before any is returned."""
    decoder = _event_decoder if schema is BUILTIN_SCHEMA else schema.decoder
    try:
        events: list[Event] = decoder.decode_lines(data)
    except msgspec.MsgspecError:
        return _events_from_jsonl_slow(data, schema)
    if not events:
        raise InvalidEvents([EventError(1, "no events in the input")])
    return events


def _events_from_jsonl_slow(data: bytes, schema: EventSchema) -> list[Event]:
    """The per-line path: only taken when the input has errors, to name each one."""
    items: list[tuple[int, object]] = []
    errors: list[EventError] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            items.append((number, _any_decoder.decode(raw)))
        except msgspec.DecodeError as exc:
            errors.append(EventError(number, f"not valid JSON: {exc}"))
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if errors:
        raise InvalidEvents(errors)
    if not items:
        raise InvalidEvents([EventError(1, "no events in the input")])
    return _collect(items, schema)


def events_from_body(
    data: bytes, *, jsonl: bool = False, schema: EventSchema = BUILTIN_SCHEMA
) -> list[Event]:
    """A JSON object, a JSON array of objects, or (``jsonl`` or several lines) JSONL.

    For an array, the "line" in errors is the 1-based index of the element.
    """
    if jsonl:
        return events_from_jsonl(data, schema=schema)
    builtin = schema is BUILTIN_SCHEMA
    stripped = data.lstrip()
    try:
        if stripped.startswith(b"["):
            events: list[Event] = (_list_decoder if builtin else schema.list_decoder).decode(data)
            if events:
                return events
        elif stripped.startswith(b"{") and stripped.rstrip().count(b"\n") == 0:
            event: Event = (_event_decoder if builtin else schema.decoder).decode(data)
            return [event]
    except msgspec.MsgspecError:
        pass  # fall through to the detailed path, which names every error
    try:
        doc = _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        if data.strip().count(b"\n"):
            return events_from_jsonl(data, schema=schema)
        raise InvalidEvents([EventError(1, f"not valid JSON: {exc}")]) from None
    if isinstance(doc, list):
        if not doc:
            raise InvalidEvents([EventError(1, "no events in the input")])
        return _collect(list(enumerate(doc, start=1)), schema)
    return _collect([(1, doc)], schema)


def _field_types(cls: type[EventBase]) -> dict[str, Any]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.name: f.type for f in info.fields}


def _is_plain_str(t: Any) -> bool:
    return isinstance(t, msgspec.inspect.StrType) or (
        isinstance(t, msgspec.inspect.UnionType)
        and any(isinstance(x, msgspec.inspect.StrType) for x in t.types)
        and all(isinstance(x, msgspec.inspect.StrType | msgspec.inspect.NoneType) for x in t.types)
    )


def events_from_pairs(
    event_type: str, pairs: list[str], *, schema: EventSchema = BUILTIN_SCHEMA
) -> Event:
    """``TYPE key=value ...`` from the command line.

    A value for a string field is taken as written; any other value is parsed
    as JSON where it parses (``3``, ``true``, ``{"a":"b"}``) and kept as a
    string otherwise, then the whole event is validated.
    """
    cls = schema.classes.get(event_type)
    if cls is None:
        known = ", ".join(schema.classes)
        raise InvalidEvents([EventError(1, f"unknown event type {event_type!r} (known: {known})")])
    types = _field_types(cls)
    obj: dict[str, object] = {"type": event_type}
    errors: list[EventError] = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            errors.append(EventError(1, f"expected key=value, got {pair!r}"))
            continue
        if key in types and _is_plain_str(types[key]):
            obj[key] = text
            continue
        try:
            obj[key] = _any_decoder.decode(text)
        except msgspec.DecodeError:
            obj[key] = text
    if errors:
        raise InvalidEvents(errors)
    return _collect([(1, obj)], schema)[0]
