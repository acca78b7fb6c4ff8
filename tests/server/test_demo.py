"""`tally serve --demo` end to end: on an empty log it writes the past hour first, so the
history has an hour at once; on a log that has events it does not write it again."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.buses import bus_url
from tests.support.serverproc import tally_server

__all__ = ["bus_url"]  # the fixture, used by name


def test_the_demo_shows_an_hour_of_history_at_once_and_seeds_only_an_empty_log(
    data_dir: Path, bus_url: str | None
) -> None:
    started = time.time()
    with tally_server(data_dir, "--demo") as server:
        server.wait_caught_up()  # the past hour is written before the server listens
        reply = server.get("/api/v1/history?match=conductor_&match=ralph_loop_iterations_total")
        assert reply.status == 200, reply.body
        doc = reply.json()
        assert doc["step"] == 15.0 and 235 <= len(doc["timestamps"]) <= 240
        assert doc["to"] - doc["from"] == 3600.0
        completed = next(s for s in doc["series"] if s["name"] == "conductor_completed_runs_total")
        values = [p["value"] for p in completed["points"] if p is not None]
        assert values[0] < 30 and values[-1] > 1000  # an hour of runs, finishing all along
        oldest = server.get("/api/v1/log?limit=2").json()["events"]
        assert [e["event"]["type"] for e in oldest] == ["loop_started", "loop_started"]
        assert abs(oldest[0]["event"]["ts"] - (started - 3600)) < 30
        assert server.get("/api/v1/log?limit=0").json() == {
            "error": "limit: must be 1 to 1000, got 0"
        }
        assert server.get("/api/v1/history?step=0").status == 400
        seeded = sum(server.status()["events_by_type"].values())
        assert 20_000 < seeded < 50_000  # a batch a second over the hour
    with tally_server(data_dir, "--demo") as server:
        status = server.wait_caught_up()
        again = sum(status["events_by_type"].values())
        assert seeded <= again < seeded + 2000  # live batches only: no second hour
        oldest_again = server.get("/api/v1/log?limit=2").json()["events"]
        assert oldest_again == oldest
