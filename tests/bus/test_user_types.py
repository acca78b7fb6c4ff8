"""Declared event types: declarations checked, validated at write, decoded from the log."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bus.config import BusConfig
from bus.errors import InvalidEvents
from bus.events import EVENT_TYPES, RunStarted, encode_events
from bus.filebus import FileBus
from bus.lines import LineDecoder
from bus.user_types import BUILTIN_SCHEMA, EventTypeDecl, FieldDecl, event_schema
from bus.validate import events_from_body, events_from_jsonl, events_from_pairs

DEPLOY = EventTypeDecl(
    name="deploy_finished",
    fields=(
        FieldDecl(name="service", type="str"),
        FieldDecl(name="duration_s", type="float"),
        FieldDecl(name="attempts", type="int", default=1),
        FieldDecl(name="ok", type="bool", default=True),
        FieldDecl(name="region", type="str", required=False),
    ),
)
SCHEMA = event_schema((DEPLOY,))


def test_the_schema_is_built_once_per_declarations() -> None:
    assert event_schema((DEPLOY,)) is SCHEMA
    assert event_schema(()) is BUILTIN_SCHEMA
    assert list(SCHEMA.classes)[: len(EVENT_TYPES)] == list(EVENT_TYPES)
    assert SCHEMA.declared == (SCHEMA.classes["deploy_finished"],)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: EventTypeDecl(name="run_started"), "is a built-in event type"),
        (lambda: EventTypeDecl(name="Deploy"), "is not an event type name"),
        (lambda: EventTypeDecl(name="a.b"), "is not an event type name"),
        (lambda: FieldDecl(name="ts", type="float"), "every event has it already"),
        (lambda: FieldDecl(name="type", type="str"), "every event has it already"),
        (lambda: FieldDecl(name="n", type="int", default=1.5), "is not a int"),
        (lambda: FieldDecl(name="n", type="int", default=True), "is not a int"),
        (lambda: FieldDecl(name="n", type="int", default=1, required=True), "takes no default"),
        (
            lambda: EventTypeDecl(
                name="x", fields=(FieldDecl(name="a", type="str"), FieldDecl(name="a", type="int"))
            ),
            "two fields",
        ),
        (lambda: event_schema((DEPLOY, DEPLOY)), "two types have the same name"),
    ],
)  # fmt: skip
def test_bad_declarations_are_refused(build: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build()  # type: ignore[operator]


def test_declared_events_are_validated_with_defaults() -> None:
    [event] = events_from_body(
        b'{"type":"deploy_finished","service":"api","duration_s":2,"ts":5}', schema=SCHEMA
    )
    assert type(event) is SCHEMA.classes["deploy_finished"]
    assert msgspec.to_builtins(event) == {
        "type": "deploy_finished",
        "ts": 5.0,
        "service": "api",
        "duration_s": 2.0,
        "attempts": 1,
        "ok": True,
        "region": None,
    }
    pair = events_from_pairs(
        "deploy_finished", ["service=42", "duration_s=1.5", "ok=false"], schema=SCHEMA
    )
    assert (pair.service, pair.duration_s, pair.ok) == ("42", 1.5, False)  # type: ignore[union-attr]


def test_errors_name_line_and_field() -> None:
    data = (
        b'{"type":"deploy_finished","service":"api","duration_s":1}\n'
        b'{"type":"deploy_finished","service":"api"}\n'
        b'{"type":"deploy_finished","service":"api","duration_s":1,"attempts":"x"}\n'
        b'{"type":"run_started","project":"p"}\n'
    )
    with pytest.raises(InvalidEvents) as info:
        events_from_jsonl(data, schema=SCHEMA)
    assert [(e.line, e.field) for e in info.value.errors] == [
        (2, "duration_s"),
        (3, "attempts"),
        (4, "run_id"),
    ]
    with pytest.raises(InvalidEvents) as info:
        events_from_pairs("deploy_finished", ["service=a", "duration_s=x"], schema=SCHEMA)
    assert [(e.line, e.field) for e in info.value.errors] == [(1, "duration_s")]


def test_undeclared_types_are_refused() -> None:
    body = b'{"type":"deploy_finished","service":"api","duration_s":1}'
    with pytest.raises(InvalidEvents) as info:
        events_from_body(body)  # the built-ins only
    assert info.value.errors[0].field == "type"
    assert "unknown event type 'deploy_finished'" in info.value.errors[0].reason
    with pytest.raises(InvalidEvents, match="unknown event type 'deploy_started'"):
        events_from_pairs("deploy_started", ["service=a"], schema=SCHEMA)


def test_the_line_decoder_decodes_declared_types_and_skips_unknown_ones() -> None:
    deploy = events_from_body(
        b'{"type":"deploy_finished","service":"api","duration_s":1,"ts":1}', schema=SCHEMA
    )
    run = RunStarted(run_id="r", project="p", ts=2.0)
    log = encode_events([*deploy, run])
    lines = LineDecoder(quarantine=None, decoder=SCHEMA.decoder, known=SCHEMA.classes)
    assert lines.decode(log, 0, len(log)).events == [*deploy, run]

    builtin = LineDecoder(quarantine=None).decode(log, 0, len(log))  # not declared: unknown
    assert builtin.events == [run]
    assert builtin.unknown_types == {"deploy_finished": 1}

    bad = b'{"type":"deploy_finished","service":"api"}\n{"type":"nope"}\n'
    batch = lines.decode(log + bad, 0, len(log) + len(bad))
    assert batch.events == [*deploy, run]
    assert (batch.corrupt, batch.unknown_types) == (1, {"nope": 1})


@pytest.mark.anyio
async def test_a_bus_with_declared_types_reads_them_back(tmp_path: Path) -> None:
    config = BusConfig(event_types=(DEPLOY,))
    events = events_from_body(
        b'[{"type":"deploy_finished","service":"api","duration_s":1,"ts":1},'
        b'{"type":"run_started","run_id":"r","project":"p","ts":2}]',
        schema=config.schema,
    )
    async with FileBus(tmp_path / "bus", tmp_path, config) as bus:
        await bus.append(events)
        read = [ev async for batch in bus.read() for ev in batch.events]
    assert read == events
    async with FileBus(tmp_path / "bus", tmp_path) as plain:  # the same log, undeclared
        batches = [batch async for batch in plain.read()]
    assert [type(ev) for b in batches for ev in b.events] == [RunStarted]
    assert plain.stats.unknown == 1
