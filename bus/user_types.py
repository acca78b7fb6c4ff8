"""User-declared event types (``[[event_types]]`` in tally.toml) and the schema they make.

Rule: a declaration is a frozen value, checked when built; the schema built from a
set of declarations is built once (cached) so that every reader, writer and fold of
one process shares its classes. Without declarations the schema is the built-in
union, decoded by the very decoders ``bus.events`` builds: that path is untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Final, Literal, cast

import msgspec

from bus.events import EVENT_TYPES, Event, EventBase

__all__ = ["BUILTIN_SCHEMA", "EventSchema", "EventTypeDecl", "FieldDecl", "event_schema"]

FieldType = Literal["str", "int", "float", "bool"]
_PY_TYPES: Final[dict[str, type]] = {"str": str, "int": int, "float": float, "bool": bool}
_NAME: Final = re.compile(r"[a-z][a-z0-9_]*")
_FIELD: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Field names every event already has (``type`` is the tag).
_RESERVED_FIELDS: Final = frozenset({"type", "ts"})


class FieldDecl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One field of a declared type: required unless it has a ``default`` or ``required = false``
    (then absent is ``null``)."""

    name: str
    type: FieldType
    required: bool | None = None
    default: str | int | float | bool | None = None

    def __post_init__(self) -> None:
        if not _FIELD.fullmatch(self.name):
            raise ValueError(f"field {self.name!r} is not a field name")
        if self.name in _RESERVED_FIELDS:
            raise ValueError(f"field {self.name!r}: every event has it already")
        if self.default is None:
            return
        if self.required:
            raise ValueError(f"field {self.name!r}: a required field takes no default")
        if not _fits(self.type, self.default):
            raise ValueError(f"field {self.name!r}: default {self.default!r} is not a {self.type}")

    @property
    def is_required(self) -> bool:
        return self.default is None and self.required is not False


def _fits(kind: str, value: object) -> bool:
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return type(value) is _PY_TYPES[kind]


class EventTypeDecl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[event_types]]`` entry: a type name (the ``type`` tag) and its fields."""

    name: str
    fields: tuple[FieldDecl, ...] = ()
    help: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"name: {self.name!r} is not an event type name "
                "(a lower case letter, then lower case letters, digits or '_')"
            )
        if self.name in EVENT_TYPES:
            raise ValueError(f"name: {self.name!r} is a built-in event type")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"fields: {self.name!r} has two fields of the same name")


def check_event_types(decls: Sequence[EventTypeDecl]) -> None:
    """Type names unique; ``ValueError`` if not (each declaration checks itself)."""
    names = [d.name for d in decls]
    if len(set(names)) != len(names):
        raise ValueError("event_types: two types have the same name")


class EventSchema:
    """The event classes of a log: the built-in union plus the declared types.

    ``classes`` maps every tag to its class (the built-ins first); ``decoder`` and
    ``list_decoder`` decode the union. Build with ``event_schema`` (cached).
    """

    __slots__ = ("classes", "decls", "decoder", "list_decoder", "union")

    def __init__(self, decls: tuple[EventTypeDecl, ...]) -> None:
        check_event_types(decls)
        self.decls = decls
        declared = {d.name: _struct(d) for d in decls}
        self.classes: Mapping[str, type[EventBase]] = {**EVENT_TYPES, **declared}
        union: Any = Event
        for cls in declared.values():
            union = union | cls
        self.union = union
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)
        self.list_decoder: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(list[union])

    @property
    def declared(self) -> tuple[type[EventBase], ...]:
        """The declared classes, in declaration order."""
        return tuple(self.classes[d.name] for d in self.decls)


def _struct(decl: EventTypeDecl) -> type[EventBase]:
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in decl.fields:
        py = _PY_TYPES[f.type]
        if f.is_required:
            fields.append((f.name, py))
        elif f.default is None:
            fields.append((f.name, py | None, None))
        else:
            default = float(f.default) if f.type == "float" else f.default
            fields.append((f.name, py, default))
    cls = msgspec.defstruct(
        decl.name,
        fields,
        bases=(EventBase,),
        module=__name__,
        tag=decl.name,
        frozen=True,
        kw_only=True,
        gc=False,
    )
    return cast(type[EventBase], cls)


def event_schema(decls: tuple[EventTypeDecl, ...] = ()) -> EventSchema:
    """The schema of ``decls`` (one object per distinct set: its classes are shared)."""
    return _schema(decls)


@cache  # never evicted: a fold and the readers feeding it must share the classes
def _schema(decls: tuple[EventTypeDecl, ...]) -> EventSchema:
    return EventSchema(decls)


#: The built-in union alone.
BUILTIN_SCHEMA: Final = event_schema()
