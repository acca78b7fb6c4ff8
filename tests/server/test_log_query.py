"""``GET /api/v1/log``: events with their positions, filtered and paged, on both bus backends
(a real file bus, a real nats-server's stream), judged against what the bus reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.config import BusConfig
from bus.contract import Bus, open_bus
from bus.events import Event
from server import log_query
from server.http.routing import Request
from server.log_query import LogQuery, LogQueryError, read_log
from tests.support.buses import bus_url
from tests.support.workload import mixed_events

pytestmark = pytest.mark.anyio

__all__ = ["bus_url"]  # the fixture, used by name


async def filled(bus: Bus, n: int = 600) -> list[tuple[int, dict[str, Any]]]:
    """Append ``n`` mixed events in a few batches; every ``(position, event JSON)`` read back."""
    events: list[Event] = list(mixed_events(n, seed=11))
    for i in range(0, n, 150):
        await bus.append(events[i : i + 150])
    return [
        (position, msgspec.to_builtins(event))
        async for batch in bus.read(0)
        for position, event in batch
    ]


async def pages(bus: Bus, query: LogQuery) -> list[dict[str, Any]]:
    """Every answer from ``query`` on, following ``next`` until a page comes back empty."""
    answers = []
    while True:
        answer = await read_log(bus, query)
        answers.append(answer)
        if not answer["events"]:
            return answers
        query = LogQuery(
            start=answer["next"], stop=query.stop, limit=query.limit, match=query.match
        )


async def test_pages_follow_next_through_the_whole_log(data_dir: Path, bus_url: str | None) -> None:
    async with open_bus(bus_url, data_dir, BusConfig()) as bus:
        log = await filled(bus)
        first, end = await bus.first(), await bus.end()
        answers = await pages(bus, LogQuery(start=0, limit=97))
        got = [(e["position"], e["event"]) for a in answers for e in a["events"]]
        assert got == log
        assert [len(a["events"]) for a in answers[:-1]] == [97] * 6 + [600 - 6 * 97]
        assert answers[0]["first"] == first == log[0][0]  # from=0: before it on JetStream
        assert all(a["end"] == end for a in answers)
        assert answers[-1]["next"] == end
        # `from` before the oldest position held starts there; `to` is exclusive
        positions = [p for p, _ in log]
        window = await read_log(bus, LogQuery(start=positions[3], stop=positions[7]))
        assert [e["position"] for e in window["events"]] == positions[3:7]
        assert window["next"] == positions[7]


async def test_match_keeps_events_holding_every_field(data_dir: Path, bus_url: str | None) -> None:
    async with open_bus(bus_url, data_dir, BusConfig()) as bus:
        log = await filled(bus)
        cases = {
            ("type:api_request", "status:500"): lambda e: (
                e["type"] == "api_request" and e["status"] == 500
            ),
            ("type:iteration_completed", "success:false"): lambda e: (
                e["type"] == "iteration_completed" and e["success"] is False
            ),
            ("type:run_finished",): lambda e: e["type"] == "run_finished",
            ("nosuchfield:1",): lambda e: False,
        }
        for match, holds in cases.items():
            query = LogQuery.from_target(
                "/api/v1/log?limit=1000&" + "&".join(f"match={m}" for m in match)
            )
            answer = await read_log(bus, query)
            expected = [(p, e) for p, e in log if holds(e)]
            assert [(e["position"], e["event"]) for e in answer["events"]] == expected, match
            assert expected or match == ("nosuchfield:1",)


async def test_a_request_looks_at_a_bounded_stretch(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_query, "MAX_SCAN_EVENTS", 250)
    async with open_bus(None, data_dir, BusConfig()) as bus:
        log = await filled(bus)
        answers = await pages(bus, LogQuery(match=(("type", "nothing"),)))
    assert [a["events"] for a in answers] == [[]]
    assert answers[0]["next"] == log[250][0]  # nothing matched yet; go on from there


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=0", "limit: must be 1 to 1000, got 0"),
        ("limit=1001", "limit: must be 1 to 1000, got 1001"),
        ("limit=ten", "limit: expected a whole number, got 'ten'"),
        ("from=-1", "from: must not be negative, got -1"),
        ("to=x", "to: expected a whole number, got 'x'"),
        ("from=1&from=2", "from: given 2 times, expected once"),
        ("match=type", "match: expected FIELD:VALUE, got 'type'"),
        ("from=1", "from: offset 1 is not the start of a line"),
    ],
)
async def test_bad_parameters_are_400_naming_them(data_dir: Path, query: str, error: str) -> None:
    async with open_bus(None, data_dir, BusConfig()) as bus:
        await filled(bus, 10)
        with pytest.raises(LogQueryError) as info:
            await read_log(bus, LogQuery.from_target(f"/api/v1/log?{query}"))
        response = await log_query.handle_log(
            bus, Request("GET", "/api/v1/log?limit=1", "/api/v1/log", {}, [], b"", "t")
        )
    assert str(info.value) == error and info.value.http_status == 400
    assert response.status == 200 and len(json.loads(response.body)["events"]) == 1
