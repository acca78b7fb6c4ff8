"""GET /api/v1/stream of a real `tally serve`: snapshot then conflated updates, prefix filters,
reconnects, and subscribers that stop reading (bounded memory, then disconnected).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.buses import bus_url
from tests.support.serverproc import SseClient, SseEvent, TallyServer, samples, tally_server

STREAM = "/api/v1/stream"

__all__ = ["bus_url"]  # the fixture, used by name


def finished(run_id: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "run_finished",
        "run_id": run_id,
        "project": "web",
        "agent": "claude",
        "status": status,
        "duration_s": 2.0,
    }


def series_key(series: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return series["name"], tuple(sorted(series["labels"].items()))


def by_key(frame: SseEvent) -> dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]]:
    return {series_key(s): s for s in frame.json()["series"]}


def value_of(frame: SseEvent, name: str) -> Any:
    [series] = [s for s in frame.json()["series"] if s["name"] == name and not s["labels"]]
    return series["value"]


def connect(server: TallyServer, query: str, **kwargs: Any) -> SseClient:
    client = SseClient(server.port, f"{STREAM}?{query}", **kwargs)
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    return client


def subscribers(server: TallyServer) -> int:
    return int(samples(server.metrics())["tally_sse_subscribers"])


def wait_subscribers(server: TallyServer, n: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while subscribers(server) != n:
        assert time.monotonic() < deadline, f"tally_sse_subscribers never became {n}"
        time.sleep(0.05)


def test_snapshot_then_only_changed_series(data_dir: Path, bus_url: str | None) -> None:
    with tally_server(data_dir) as server:
        last = server.post_events([finished("r1"), finished("r2", "failed")])["last_offset"]
        folded = server.wait_folded(last + 1)["folded_offset"]
        with connect(server, "interval=0.1") as client:
            hint = client.next_event()
            assert hint.retry is not None and hint.retry > 0
            snapshot = client.next_frame()
            assert snapshot.event == "snapshot"
            assert snapshot.id == str(folded)
            assert snapshot.json()["offset"] == folded
            before = by_key(snapshot)
            assert value_of(snapshot, "conductor_completed_runs_total") == 1
            assert value_of(snapshot, "conductor_failed_runs_total") == 1
            assert (
                "conductor_run_duration_seconds",
                (("agent", "claude"), ("status", "failed")),
            ) in before
            assert subscribers(server) == 1

            reply = server.post_events([finished("r3")])
            newest = server.wait_folded(reply["last_offset"] + 1)["folded_offset"]
            # The next frame is the update for the append: it carries the offset after it.
            update = client.next_frame(timeout=30)
            assert update.event == "update"
            assert update.id == str(newest)
            assert update.json()["offset"] == newest > reply["last_offset"] >= folded
            changed = by_key(update)
            names = {name for name, _ in changed}
            assert "conductor_completed_runs_total" in names
            assert "conductor_failed_runs_total" not in names  # unchanged series are not sent
            assert value_of(update, "conductor_completed_runs_total") == 2
            for key, series in changed.items():
                assert before.get(key) != series, key  # every series sent did change
            assert len(changed) < len(before)
        wait_subscribers(server, 0)


def test_update_ids_are_folded_offsets(data_dir: Path, bus_url: str | None) -> None:
    with tally_server(data_dir) as server, connect(server, "interval=0.1") as client:
        snapshot = client.next_frame()
        empty_end = server.status()["end_offset"]  # 0 on the files; 1 << 20 on JetStream
        assert snapshot.id == str(empty_end)
        assert snapshot.json()["offset"] == empty_end
        reply = server.post_events([finished("r1")])
        end = server.wait_folded(reply["last_offset"] + 1)["folded_offset"]
        update = client.next_frame()
        assert update.event == "update"
        assert update.id == str(end)
        assert update.json()["offset"] == end


def test_match_prefix_filters_series(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        server.post_events([finished("r1"), finished("r2", "failed")])
        server.wait_caught_up()
        with connect(server, "match=conductor_failed&interval=0.1") as client:
            snapshot = client.next_frame()
            assert snapshot.event == "snapshot"
            assert {s["name"] for s in snapshot.json()["series"]} == {"conductor_failed_runs_total"}
            server.post_events([finished("r3")])  # matches nothing: no frame
            server.post_events([finished("r4", "failed")])
            update = client.next_frame()
            assert update.event == "update"
            assert [(s["name"], s["value"]) for s in update.json()["series"]] == [
                ("conductor_failed_runs_total", 2)
            ]


def test_reconnect_with_last_event_id_starts_with_a_snapshot(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        with connect(server, "interval=0.1") as client:
            first = client.next_frame()
        assert first.id is not None
        reply = server.post_events([finished("r1"), finished("r2")])
        end = server.wait_folded(reply["last_offset"] + 1)["folded_offset"]
        with connect(server, "interval=0.1", headers={"Last-Event-ID": first.id}) as client:
            assert client.next_event().retry is not None
            again = client.next_frame()
            assert again.event == "snapshot"
            assert again.id == str(end)
            assert value_of(again, "conductor_completed_runs_total") == 2


def test_bad_intervals_are_400(data_dir: Path) -> None:
    with tally_server(data_dir) as server:
        for query in ("interval=0.05", "interval=0", "interval=-1", "interval=soon"):
            reply = server.get(f"{STREAM}?{query}")
            assert reply.status == 400, query
            assert "interval" in reply.json()["error"]
        assert subscribers(server) == 0


def stalled_subscriber(port: int) -> socket.socket:
    """Connects with a tiny receive window, asks for the stream, then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {STREAM}?interval=0.1 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock


class Drain(threading.Thread):
    """Reads a healthy subscriber's frames as they come, until stopped."""

    def __init__(self, client: SseClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.frames: list[SseEvent] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.frames.append(self.client.next_frame(timeout=0.2))
            except TimeoutError:
                continue
            except BaseException as exc:
                self.error = exc
                return


def wide_gauges(round_: int, n: int = 400, width: int = 1000) -> list[dict[str, Any]]:
    """`n` series with long label values: every round changes all of them (big frames)."""
    return [
        {
            "type": "metric",
            "name": "app_wide_value",
            "kind": "gauge",
            "op": "set",
            "value": float(round_),
            "labels": {"key": f"{i:04d}-" + "x" * width},
        }
        for i in range(n)
    ]


def frames_sent(server: TallyServer) -> int:
    return int(samples(server.metrics())["tally_sse_frames_total"])


def test_a_stalled_subscriber_costs_bounded_memory(data_dir: Path) -> None:
    from tests.support.workload import write_log

    with tally_server(data_dir) as server:
        # About 8 MB of series: a snapshot of them outgrows every socket buffer, so the stalled
        # subscriber's connection blocks on its first frame and stays blocked.
        server.post_events(wide_gauges(1, n=1000, width=8000))
        server.wait_caught_up()
        stalled = stalled_subscriber(server.port)
        healthy = connect(server, "interval=0.1&match=conductor_")
        drain = Drain(healthy)
        drain.start()
        try:
            wait_subscribers(server, 2)
            deadline = time.monotonic() + 10
            while frames_sent(server) < 2 or not drain.frames:  # both snapshots are out
                assert time.monotonic() < deadline
                time.sleep(0.05)
            baseline = peak = server.rss_bytes()

            end = write_log(data_dir, 100_000, seed=3, batch=5000)
            deadline = time.monotonic() + 30
            while True:
                peak = max(peak, server.rss_bytes())
                assert server.get("/metrics").status == 200  # scrapes keep working
                if server.status()["folded_offset"] >= end:
                    break
                assert time.monotonic() < deadline, "the fold never reached the end"
                time.sleep(0.05)

            # The healthy subscriber kept up: it sees a change made after the fold while the
            # stalled one is still connected (the guard is shorter than the 60 s stall timeout).
            reply = server.post_events([finished("after")])
            newest = str(server.wait_folded(reply["last_offset"] + 1)["folded_offset"])
            deadline = time.monotonic() + 30
            while not drain.frames or drain.frames[-1].id != newest:
                assert drain.error is None, drain.error
                assert time.monotonic() < deadline, drain.frames[-1:]
                time.sleep(0.05)
            assert len(drain.frames) > 2
            peak = max(peak, server.rss_bytes())
            assert peak - baseline < 100 * 2**20, (baseline, peak)
            # Every frame but one went to the healthy subscriber: the stalled one is still
            # stuck on its snapshot, still connected (the stall timeout is 60 s by default).
            assert frames_sent(server) == len(drain.frames) + 1
            assert subscribers(server) == 2
        finally:
            drain.halt.set()
            drain.join(5)
            healthy.close()
            stalled.close()


def test_a_stalled_subscriber_is_disconnected_after_the_stall_timeout(data_dir: Path) -> None:
    (data_dir / "tally.toml").write_text("[server]\nsse_stall_timeout_s = 2\n")
    with tally_server(data_dir) as server:
        stalled = stalled_subscriber(server.port)
        try:
            wait_subscribers(server, 1)
            started = time.monotonic()
            round_ = 0
            while subscribers(server) == 1:
                assert time.monotonic() - started < 20, "the stalled subscriber was never dropped"
                round_ += 1
                server.post_events(wide_gauges(round_))
                time.sleep(0.1)
            assert time.monotonic() - started >= 2  # not before the stall timeout
            # The server is fine: new subscribers get a snapshot with the newest values.
            with connect(server, "interval=0.1&match=app_wide") as client:
                snapshot = client.next_frame()
                assert {s["value"] for s in snapshot.json()["series"]} <= {
                    float(round_),
                    float(round_ - 1),
                }
        finally:
            stalled.close()


def tick(round_: int) -> dict[str, Any]:
    """One small gauge, set to `round_`: what the healthy subscriber below watches."""
    return {"type": "metric", "name": "app_tick", "kind": "gauge", "op": "set", "value": round_}


def test_a_stalled_subscriber_is_dropped_while_a_healthy_one_keeps_receiving(
    data_dir: Path,
) -> None:
    (data_dir / "tally.toml").write_text("[server]\nsse_stall_timeout_s = 1.0\n")
    with tally_server(data_dir) as server:
        healthy = connect(server, "interval=0.1&match=app_tick")
        drain = Drain(healthy)
        drain.start()
        stalled = stalled_subscriber(server.port)
        try:
            wait_subscribers(server, 2)
            deadline = time.monotonic() + 15
            round_ = 0
            while server.status()["sse_subscribers"] == 2:
                assert time.monotonic() < deadline, "the stalled subscriber was never dropped"
                round_ += 1
                server.post_events([*wide_gauges(round_), tick(round_)])
                time.sleep(0.1)
            assert server.status()["sse_subscribers"] == 1  # only the stalled one went
            # While the other was stuck, the healthy subscriber was sent the ticks as they came.
            ticks = [value_of(f, "app_tick") for f in drain.frames if f.event == "update"]
            assert len(ticks) >= 2, drain.frames
            assert ticks == sorted(ticks), ticks

            # And it still is: a change made after the drop reaches it.
            reply = server.post_events([tick(round_ + 1)])
            newest = str(server.wait_folded(reply["last_offset"] + 1)["folded_offset"])
            deadline = time.monotonic() + 30
            while not drain.frames or drain.frames[-1].id != newest:
                assert drain.error is None, drain.error
                assert time.monotonic() < deadline, drain.frames[-1:]
                time.sleep(0.05)
            assert value_of(drain.frames[-1], "app_tick") == round_ + 1
            assert drain.error is None, drain.error
            assert server.status()["sse_subscribers"] == 1
        finally:
            drain.halt.set()
            drain.join(5)
            healthy.close()
            stalled.close()


def jobs(ts: float, job: str, value: float = 1.0) -> dict[str, Any]:
    return {
        "type": "metric",
        "ts": ts,
        "name": "jobs_total",
        "kind": "counter",
        "value": value,
        "labels": {"job": job},
    }


def test_a_stale_series_is_announced_removed_then_returns_without_a_reset(
    data_dir: Path,
) -> None:
    """``series_ttl_s``: hidden series leave snapshots, go as ``removed``, come back as is."""
    (data_dir / "tally.toml").write_text("[projections]\nseries_ttl_s = 60\n")
    a = ("jobs_total", (("job", "a"),))
    b = ("jobs_total", (("job", "b"),))
    with tally_server(data_dir) as server:
        server.post_events([jobs(1000, "a", 5), jobs(1000, "b")])
        server.wait_caught_up()
        with connect(server, "match=jobs_total&interval=0.1") as client:
            snapshot = client.next_frame()
            assert {k: s["value"] for k, s in by_key(snapshot).items()} == {a: 5, b: 1}
            server.post_events([jobs(1030, "b"), jobs(1061, "b")])  # a: 61 s quiet
            gone = by_key(client.next_frame())
            while a not in gone:  # the two posts may come as two frames
                gone = by_key(client.next_frame())
            assert gone[a]["removed"] is True and gone[a]["value"] is None
            with connect(server, "match=jobs_total&interval=0.1") as other:
                assert {k: s["value"] for k, s in by_key(other.next_frame()).items()} == {b: 3}
            scraped = samples(server.metrics())
            assert 'jobs_total{job="a"}' not in scraped
            assert scraped['tally_stale_series{family="jobs_total"}'] == 1
            server.post_events([jobs(1062, "a", 2)])
            back = by_key(client.next_frame())
            while a not in back:
                back = by_key(client.next_frame())
            assert back[a]["value"] == 7 and "removed" not in back[a]
        scraped = samples(server.metrics())
        assert scraped['jobs_total{job="a"}'] == 7
        assert 'tally_stale_series{family="jobs_total"}' not in scraped
