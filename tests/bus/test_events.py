"""Event schema v1: every type round-trips through JSONL; unknown fields are ignored."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.events import (
    EVENT_TYPES,
    LABEL_NAME_PATTERN,
    METRIC_NAME_PATTERN,
    Event,
    EventBase,
    LoopStarted,
    MetricUpdate,
    decode_event,
    encode_events,
    stamp,
)

CATALOGUE = [
    "run_queued",
    "run_started",
    "run_finished",
    "bus_message",
    "api_request",
    "agent_fallback",
    "loop_started",
    "loop_stopped",
    "iteration_completed",
    "session_started",
    "session_ended",
    "context_usage",
    "context_reboot",
    "tests_reported",
    "resource_sample",
    "metric",
    "metrics_reset",
    "otel_metric",
    "otel_log",
]

_lines = msgspec.json.Decoder(Event)


def _for_type(t: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """A strategy for values valid under one msgspec type (as the schema constrains it)."""
    match t:
        case msgspec.inspect.Metadata(extra_json_schema={"pattern": str() as pattern}):
            return st.from_regex(pattern, fullmatch=True)
        case msgspec.inspect.StrType(pattern=str() as pattern):
            return st.from_regex(pattern, fullmatch=True)
        case msgspec.inspect.StrType(min_length=min_length):
            return st.text(min_size=min_length or 0, max_size=20)
        case msgspec.inspect.BoolType():
            return st.booleans()
        case msgspec.inspect.IntType(ge=ge, le=le):  # JSON integers tally writes are int64
            return st.integers(min_value=-(2**63) if ge is None else ge, max_value=le or 2**63 - 1)
        case msgspec.inspect.FloatType(ge=ge, le=le):
            return st.floats(min_value=ge, max_value=le, allow_nan=False, allow_infinity=False)
        case msgspec.inspect.LiteralType(values=values):
            return st.sampled_from(values)
        case msgspec.inspect.NoneType():
            return st.none()
        case msgspec.inspect.UnionType(types=types):
            return st.one_of([_for_type(x) for x in types])
        case msgspec.inspect.DictType(key_type=key, value_type=value):
            return st.dictionaries(_for_type(key), _for_type(value), max_size=3)
        case msgspec.inspect.ListType(item_type=item):
            return st.lists(_for_type(item), max_size=3)
    raise AssertionError(f"no strategy for {t!r}")


def _events_of(cls: type[EventBase]) -> st.SearchStrategy[Event]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: _for_type(f.type) for f in info.fields}

    def build(values: dict[str, Any]) -> Event | None:
        try:
            event: Event = cls(**values)  # type: ignore[assignment]
        except ValueError:  # e.g. a counter with a negative value
            return None
        return event

    return st.fixed_dictionaries(fields).map(build).filter(lambda ev: ev is not None)  # type: ignore[return-value]


any_event = st.one_of([_events_of(cls) for cls in EVENT_TYPES.values()])


def test_catalogue_is_complete() -> None:
    assert list(EVENT_TYPES) == CATALOGUE


@pytest.mark.parametrize("tag", CATALOGUE)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_each_type_round_trips(tag: str, data: st.DataObject) -> None:
    event = data.draw(_events_of(EVENT_TYPES[tag]))
    encoded = encode_events([event])
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert _lines.decode_lines(encoded) == [event]
    assert msgspec.json.decode(encoded)["type"] == tag


@settings(max_examples=100, deadline=None)
@given(events=st.lists(any_event, max_size=20))
def test_batches_round_trip(events: list[Event]) -> None:
    assert _lines.decode_lines(encode_events(events)) == events


@settings(max_examples=50, deadline=None)
@given(event=any_event, extra=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
def test_unknown_fields_are_ignored(event: Event, extra: dict[str, int]) -> None:
    obj = msgspec.json.decode(encode_events([event]))
    for key, value in extra.items():
        obj.setdefault(f"x_{key}", value)
    obj["future_field"] = {"nested": [1, 2, 3]}
    assert decode_event(msgspec.json.encode(obj)) == event


def test_stamp_fills_only_missing_ts() -> None:
    events: list[Event] = [LoopStarted(loop_id="a"), LoopStarted(loop_id="b", ts=5.0)]
    stamped = stamp(events, now=7.0)
    assert [ev.ts for ev in stamped] == [7.0, 5.0]


def test_metric_rules_apply_on_decode() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"metric","name":"x","kind":"counter","value":-1}')
    event = decode_event(b'{"type":"metric","name":"x","kind":"gauge","value":-1,"op":"dec"}')
    assert isinstance(event, MetricUpdate) and event.op == "dec"


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (b'{"type":"metric","name":"1x","kind":"gauge","value":1}', "`$.name`"),
        (b'{"type":"metric","name":"x\\n","kind":"gauge","value":1}', "`$.name`"),
        (b'{"type":"metric","name":"a-b","kind":"gauge","value":1}', "`$.name`"),
        (b'{"type":"metric","name":"x","kind":"gauge","value":1,"labels":{"a b":"v"}}', "labels"),
        (
            b'{"type":"metric","name":"x","kind":"gauge","value":1,"labels":{"ok":"v","9":"v"}}',
            "labels",
        ),
    ],
)
def test_metric_names_are_checked_every_time(line: bytes, where: str) -> None:
    # the same names twice: the cache of valid names must never admit an invalid one
    for _ in range(2):
        with pytest.raises(msgspec.ValidationError, match="invalid") as exc:
            decode_event(line)
        assert where in str(exc.value)
    valid = decode_event(
        b'{"type":"metric","name":"x:y_z","kind":"gauge","value":1,"labels":{"_a":"v"}}'
    )
    assert isinstance(valid, MetricUpdate) and valid.labels == {"_a": "v"}


def _metric_line(name: str, labels: dict[str, str]) -> bytes:
    event = {"type": "metric", "name": name, "kind": "gauge", "value": 1, "labels": labels}
    return msgspec.json.encode(event)


def test_a_valid_metric_name_does_not_admit_the_same_label_name() -> None:
    # `a:b` is a valid metric name and an invalid label name: once `a:b` and
    # `ok_total` have been decoded as metric names, `a:b` must still fail as a label
    first, second = _metric_line("a:b", {}), _metric_line("ok_total", {})
    third = _metric_line("ok_total", {"a:b": "x"})
    assert len(_lines.decode_lines(first + b"\n" + second + b"\n")) == 2
    with pytest.raises(msgspec.ValidationError, match="invalid label name 'a:b'"):
        decode_event(third)
    with pytest.raises(msgspec.ValidationError, match="invalid label name 'a:b'"):
        _lines.decode_lines(b"\n".join((first, second, third)))


_NAME_CHARS = st.text(alphabet="ab_:9", min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_NAME_CHARS, st.lists(_NAME_CHARS, max_size=2)), max_size=8))
def test_name_checks_do_not_depend_on_earlier_events(
    events: list[tuple[str, list[str]]],
) -> None:
    """Each decode accepts exactly what the two patterns accept, whatever came before."""
    for name, keys in events:
        line = _metric_line(name, dict.fromkeys(keys, "v"))
        expected = re.fullmatch(METRIC_NAME_PATTERN, name) is not None and all(
            re.fullmatch(LABEL_NAME_PATTERN, key) for key in keys
        )
        try:
            decode_event(line)
        except msgspec.ValidationError:
            accepted = False
        else:
            accepted = True
        assert accepted == expected, (name, keys)
