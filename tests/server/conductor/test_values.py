"""conductor-loop's times and YAML scalars, read the way its writers write them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.conductor.values import as_integer, as_text, as_timestamp, first_field, parse_time


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-02-20 15:54:54", "2026-02-20 15:54:54"),
        ("2026-02-20T15:54:54.390976123Z", "2026-02-20 15:54:54.390976"),
        ("2026-02-20T17:54:54-01:00", "2026-02-20 18:54:54"),
        (" 2026-02-20T15:54:54 ", "2026-02-20 15:54:54"),
    ],
)
def test_parse_time(text: str, expected: str) -> None:
    assert parse_time(text) == pytest.approx(ts(expected))


@pytest.mark.parametrize("text", ["", "yesterday", "2026-02-20", "2026-02-30 10:00:00", "x 1"])
def test_parse_time_rejects(text: str) -> None:
    assert parse_time(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 2, 5, 10, 30, 45, tzinfo=UTC), "2026-02-05 10:30:45"),
        (datetime(2026, 2, 5, 10, 30, 45), "2026-02-05 10:30:45"),  # no zone: UTC
        ("2026-02-05T10:30:45Z", "2026-02-05 10:30:45"),
        (1770287445, "2026-02-05 10:30:45"),
    ],
)
def test_as_timestamp(value: object, expected: str) -> None:
    assert as_timestamp(value) == pytest.approx(ts(expected))


@pytest.mark.parametrize(
    "value", [datetime(1, 1, 1, tzinfo=UTC), True, -5, float("nan"), "soon", None, [1]]
)
def test_as_timestamp_is_none_for_non_times(value: object) -> None:
    assert as_timestamp(value) is None


def test_scalars_as_text_and_integers() -> None:
    texts = [as_text(v) for v in (" a ", True, 3, 2.5, None, ["x"])]
    assert texts == ["a", "true", "3", "2.5", "", ""]
    assert [as_integer(v) for v in (3, " -4 ", True, "x", 1.0)] == [3, -4, None, None, None]
    doc = {"project": "", "projectId": "p2", "project_id": None}
    assert first_field(doc, ("project_id", "project", "projectId")) == "p2"
