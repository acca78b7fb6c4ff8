"""The conductor-loop bridge on real files: exactly once across reruns, crashes, rotation, rewrites.

Fixtures are written the way conductor-loop writes them (entries of a YAML header between
``---`` lines and a body; one-line ``[ts] TYPE: body`` records; run-info.yaml per run) and
count what they wrote, so every test compares the bus with an independent tally.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from bus.config import BusConfig
from bus.contract import Bus, open_bus
from bus.events import BusMessage, Event, RunFinished, RunStarted
from bus.reader import BusReader
from server.conductor.bridge import BlockReport, BridgeStats, ConductorBridge
from server.conductor.files import discover
from server.conductor.positions import BridgeBusy, positions_path
from tests.support.serverproc import samples, tally, tally_server

pytestmark = pytest.mark.anyio

T0 = 1_771_600_000.0  # 2026-02-20T15:06:40Z


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class Runs:
    """A conductor-loop runs root that counts every message it writes."""

    root: Path
    messages: Counter[str] = field(default_factory=Counter)  # by type
    ids: list[str] = field(default_factory=list)  # msg_ids of entries written with one
    agents: Counter[str] = field(default_factory=Counter)  # RUN_START by run-info agent
    completed: int = 0
    failed: int = 0
    serial: int = 0

    def bus(self, project: str, task: str = "") -> Path:
        name = "TASK-MESSAGE-BUS.md" if task else "PROJECT-MESSAGE-BUS.md"
        path = self.root / project / task / name if task else self.root / project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, path: Path, text: str, newline: str = "\n") -> None:
        with open(path, "ab") as f:
            f.write(text.replace("\n", newline).encode())

    def entry_text(
        self, msg_type: str, project: str, task: str = "", run_id: str = "", body: str = "x"
    ) -> str:
        self.serial += 1
        msg_id = f"MSG-20260220-155454-{self.serial:09d}-PID00042-0001"
        self.ids.append(msg_id)
        self.messages[msg_type] += 1
        header = f"msg_id: {msg_id}\nts: {iso(T0 + self.serial)}\ntype: {msg_type}\n"
        header += f"project_id: {project}\n"
        header += f"task_id: {task}\n" if task else ""
        header += f"run_id: {run_id}\n" if run_id else ""
        lead = "\n" if self.serial > 1 else ""
        return f"{lead}---\n{header}---\n{body}\n"

    def entry(self, path: Path, msg_type: str, project: str, task: str = "", **kw: Any) -> None:
        newline = kw.pop("newline", "\n")
        self.write(path, self.entry_text(msg_type, project, task, **kw), newline)

    def record(self, path: Path, msg_type: str, body: str, newline: str = "\n") -> None:
        self.serial += 1
        self.messages[msg_type] += 1
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(T0 + self.serial))
        self.write(path, f"[{when}] {msg_type}: {body}\n", newline)

    def run(self, project: str, task: str, run_id: str, agent: str, exit_code: int | None) -> None:
        """RUN_START, then RUN_STOP or RUN_CRASH unless ``exit_code`` is None; run-info.yaml."""
        path = self.bus(project, task)
        self.entry(path, "RUN_START", project, task, run_id=run_id, body="run started")
        self.agents[agent] += 1
        start, end = T0 + self.serial, T0 + self.serial + 42
        status, end_text = "running", "0001-01-01T00:00:00Z"
        if exit_code is not None:
            kind = "RUN_STOP" if exit_code == 0 else "RUN_CRASH"
            body = f"run stopped with code {exit_code}"
            self.entry(path, kind, project, task, run_id=run_id, body=body)
            status = "completed" if exit_code == 0 else "failed"
            end_text = iso(end)
            self.completed += exit_code == 0
            self.failed += exit_code != 0
        info = self.root / project / task / "runs" / run_id / "run-info.yaml"
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text(
            f"version: 1\nrun_id: {run_id}\nproject_id: {project}\ntask_id: {task}\n"
            f"agent: {agent}\npid: 4242\nstatus: {status}\nstart_time: {iso(start)}\n"
            f"end_time: {end_text}\nexit_code: {-1 if exit_code is None else exit_code}\n"
        )

    @property
    def total(self) -> int:
        return sum(self.messages.values())


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    root = tmp_path / "runs"
    root.mkdir()
    return Runs(root)


def bus_events(data_dir: Path) -> list[Event]:
    reader = BusReader(data_dir, quarantine=False)
    return [ev for batch in reader.read_from(0) for ev in batch.events]


def messages_of(data_dir: Path) -> list[BusMessage]:
    return [ev for ev in bus_events(data_dir) if isinstance(ev, BusMessage)]


def bus_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((data_dir / "bus").glob("*.jsonl")))


async def import_root(
    root: Path, data_dir: Path, bridge_class: type[ConductorBridge] = ConductorBridge
) -> tuple[BridgeStats, list[BlockReport]]:
    reports: list[BlockReport] = []
    async with file_bus(data_dir) as bus:
        bridge = bridge_class(root, data_dir, bus, report=reports.append)
        stats = await bridge.run()
    return stats, reports


def file_bus(data_dir: Path) -> Bus:
    return open_bus(None, data_dir, BusConfig())


def mixed_project(runs: Runs) -> Path:
    """One project bus in both styles with a broken header and stray rules; one task with runs."""
    project_bus = runs.bus("web")
    runs.write(project_bus, "# Web - Message Bus\n\n**Start**: $(date)\n\n---\n\n")
    runs.record(project_bus, "DECISION", "Max parallel agents: 16")
    runs.record(project_bus, "FACT", "Task docs-user started (PID: 87913)")
    runs.write(project_bus, "[2026-02-05 12:51:53] ==========\n")
    runs.messages["INFO"] += 1
    runs.entry(project_bus, "FACT", "web", body="prose\n\n## heading\n- item")
    runs.write(project_bus, "\n---\nmsg_id: MSG-BROKEN\ntype: [unclosed\n---\nbroken body\n")
    runs.entry(project_bus, "QUESTION", "web")
    runs.record(project_bus, "PROGRESS", "after the entries")
    runs.run("web", "task-a", "run-1", "codex", 0)
    runs.run("web", "task-a", "run-2", "claude", 3)
    runs.run("web", "task-b", "run-3", "claude", None)
    runs.record(runs.bus("web", "task-b"), "FACT", "still running")
    return project_bus


# -- one import --------------------------------------------------------------------------


async def test_import_counts_both_styles_and_run_records(runs: Runs, data_dir: Path) -> None:
    project_bus = mixed_project(runs)
    stats, reports = await import_root(runs.root, data_dir)
    events = bus_events(data_dir)
    messages = [ev for ev in events if isinstance(ev, BusMessage)]
    assert Counter(m.msg_type for m in messages) == runs.messages
    assert (stats.messages, stats.unparseable, stats.files) == (runs.total, 1, 3)
    assert set(runs.ids) <= {m.msg_id for m in messages}
    assert len({m.msg_id for m in messages}) == len(messages)  # records got distinct ids
    broken_line = project_bus.read_text().split("\n").index("msg_id: MSG-BROKEN")
    assert [(r.path, r.line) for r in reports] == [(project_bus, broken_line)]
    assert "not valid YAML" in reports[0].reason

    started = [ev for ev in events if isinstance(ev, RunStarted)]
    finished = [ev for ev in events if isinstance(ev, RunFinished)]
    assert Counter(ev.agent for ev in started) == runs.agents
    assert [(ev.run_id, ev.agent, ev.status, ev.exit_code) for ev in finished] == [
        ("run-1", "codex", "completed", 0),
        ("run-2", "claude", "failed", 3),
    ]
    assert [ev.duration_s for ev in finished] == [42.0, 42.0]
    assert {(m.project, m.task) for m in messages} == {
        ("web", ""),
        ("web", "task-a"),
        ("web", "task-b"),
    }
    first_entry = next(m for m in messages if m.msg_id == runs.ids[0])
    assert first_entry.ts == T0 + int(first_entry.msg_id.split("-")[3])  # its serial


async def test_import_twice_changes_nothing(runs: Runs, data_dir: Path) -> None:
    mixed_project(runs)
    await import_root(runs.root, data_dir)
    before = bus_bytes(data_dir)
    stats, reports = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.events, reports) == (0, 0, [])
    assert bus_bytes(data_dir) == before


async def test_crlf_files(runs: Runs, data_dir: Path) -> None:
    path = runs.bus("p", "t")
    runs.record(path, "FACT", "one", newline="\r\n")
    runs.entry(path, "RUN_START", "p", "t", run_id="r", newline="\r\n")
    runs.record(path, "FACT", "two", newline="\r\n")
    stats, _ = await import_root(runs.root, data_dir)
    assert Counter(m.msg_type for m in messages_of(data_dir)) == runs.messages
    assert stats.pending == 0


# -- incomplete entries, rotation, restarts, rewrites --------------------------------------


async def test_partial_final_entry_is_counted_once_when_complete(
    runs: Runs, data_dir: Path
) -> None:
    path = runs.bus("p", "t")
    runs.record(path, "FACT", "first")
    text = runs.entry_text("RUN_START", "p", "t", run_id="r1")
    cut = text.index("type:")
    runs.write(path, text[:cut])  # the header is still being written
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.pending) == (1, 1)
    runs.write(path, text[cut:])
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.pending) == (1, 0)
    stats, _ = await import_root(runs.root, data_dir)
    assert stats.messages == 0
    assert Counter(m.msg_type for m in messages_of(data_dir)) == runs.messages


async def test_rotation_to_archived_midway(runs: Runs, data_dir: Path) -> None:
    path = runs.bus("p", "t")
    for n in range(3):
        runs.entry(path, "FACT", "p", "t", body=f"before {n}")
    await import_root(runs.root, data_dir)
    runs.entry(path, "FACT", "p", "t", body="written just before the rotation")
    runs.record(path, "INFO", "and a record")
    path.rename(path.with_name(f"{path.name}.20260220-160000.archived"))
    runs.entry(path, "FACT", "p", "t", body="first of the new file")
    runs.record(path, "PROGRESS", "second of the new file")
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.files, stats.rewritten) == (4, 2, 0)
    messages = messages_of(data_dir)
    assert len(messages) == runs.total
    assert len({m.msg_id for m in messages}) == runs.total
    assert Counter(m.msg_id for m in messages if m.msg_id.startswith("MSG-")) == Counter(runs.ids)


class CrashBeforeSave(ConductorBridge):
    """Appends, then dies before the positions are saved (the crash window)."""

    def _commit(self, plan: Any, end: int) -> None:
        raise RuntimeError("simulated crash between append and save")


async def test_restart_mid_file_after_a_crash_counts_once(runs: Runs, data_dir: Path) -> None:
    path = runs.bus("p", "t")
    runs.entry(path, "FACT", "p", "t")
    await import_root(runs.root, data_dir)
    for n in range(5):
        runs.record(path, "FACT", f"in the crash window {n}")
    runs.run("p", "t", "r1", "codex", 0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        await import_root(runs.root, data_dir, CrashBeforeSave)
    assert len(messages_of(data_dir)) == runs.total  # appended, position not saved
    runs.record(path, "FACT", "after the restart")
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.duplicates) == (1, 7)
    events = bus_events(data_dir)
    assert Counter(m.msg_type for m in events if isinstance(m, BusMessage)) == runs.messages
    assert len([ev for ev in events if isinstance(ev, RunFinished)]) == 1
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.duplicates) == (0, 0)


async def test_recovered_ids_survive_a_second_crash_while_following(
    runs: Runs, data_dir: Path
) -> None:
    path = runs.bus("p", "t")
    runs.entry(path, "FACT", "p", "t")
    await import_root(runs.root, data_dir)
    runs.entry(path, "FACT", "p", "t", body="last entry of the file")
    with pytest.raises(RuntimeError, match="simulated crash"):
        await import_root(runs.root, data_dir, CrashBeforeSave)
    runs.record(runs.bus("p", "t2"), "FACT", "in another file")
    async with file_bus(data_dir) as bus:
        follower = ConductorBridge(runs.root, data_dir, bus)
        await follower.open()
        await follower.poll(quiet=False)  # first look: the last entry is not settled yet
        follower.close()  # ... and the process dies here
    assert len(messages_of(data_dir)) == 3
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.duplicates) == (0, 1)
    assert Counter(m.msg_type for m in messages_of(data_dir)) == runs.messages


class LostAcknowledgement(ConductorBridge):
    """The append lands but its answer is lost, and the landed ids are not seen in time
    (a JetStream acknowledgement that timed out while the message was stored)."""

    lost = 0

    async def _recheck(self) -> None:
        pass

    async def _bus_append(self, events: list[Event], msg_id: str | None) -> list[int]:
        positions = await super()._bus_append(events, msg_id)
        if not self.lost:
            self.lost += 1
            raise TimeoutError("acknowledgement lost")
        return positions


async def test_a_retried_pass_is_appended_once_by_its_msg_id(runs: Runs, data_dir: Path) -> None:
    path = runs.bus("p", "t")
    for n in range(3):
        runs.record(path, "FACT", f"fact {n}")
    runs.entry(path, "RUN_START", "p", "t", run_id="r1")
    async with file_bus(data_dir) as bus:
        bridge = LostAcknowledgement(runs.root, data_dir, bus)
        await bridge.open()
        try:
            with pytest.raises(TimeoutError):
                await bridge.poll(quiet=True)
            await bridge.poll(quiet=True)  # the same files and ids: the same msg_id
        finally:
            bridge.close()
    assert Counter(m.msg_type for m in messages_of(data_dir)) == runs.messages
    assert len(bus_events(data_dir)) == runs.total + 1  # and one run_started


async def test_truncated_file_is_read_again_without_recounting(runs: Runs, data_dir: Path) -> None:
    path = runs.bus("p", "t")
    for n in range(4):
        runs.record(path, "FACT", f"old {n}")
    await import_root(runs.root, data_dir)
    path.write_bytes(b"")  # truncated in place: same inode
    runs.entry(path, "FACT", "p", "t", body="new after truncation")
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.rewritten) == (1, 1)
    kept = path.read_text()
    path.write_bytes(b"")  # rewritten in place: a new entry first, then the kept one again
    runs.entry(path, "DECISION", "p", "t", body="written first this time")
    runs.write(path, kept)
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.duplicates, stats.rewritten) == (1, 1, 1)
    assert Counter(m.msg_type for m in messages_of(data_dir)) == runs.messages


async def test_file_replaced_by_a_copy_keeps_its_position(runs: Runs, data_dir: Path) -> None:
    path = runs.bus("p", "t")
    runs.entry(path, "FACT", "p", "t")
    runs.record(path, "FACT", "one")
    await import_root(runs.root, data_dir)
    copy = path.with_name("edited.tmp")
    copy.write_bytes(path.read_bytes())
    runs.record(copy, "FACT", "added by an editor that saves by rename")
    copy.replace(path)  # a new inode under the same name
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.rewritten) == (1, 0)
    assert len(messages_of(data_dir)) == runs.total


async def test_hundreds_of_task_files(runs: Runs, data_dir: Path) -> None:
    for n in range(300):
        task = f"task-20260220-1200{n:03d}-t"
        path = runs.bus("big", task)
        runs.entry(path, "RUN_START", "big", task, run_id=f"r{n}")
        runs.record(path, "FACT", f"fact {n}")
    runs.entry(runs.bus("big"), "DECISION", "big")
    assert len(discover(runs.root)) == 301
    stats, _ = await import_root(runs.root, data_dir)
    assert (stats.messages, stats.files) == (runs.total, 301)
    assert Counter(m.msg_type for m in messages_of(data_dir)) == runs.messages
    before = bus_bytes(data_dir)
    stats, _ = await import_root(runs.root, data_dir)
    assert stats.messages == 0
    assert bus_bytes(data_dir) == before


async def test_a_second_bridge_on_the_same_data_dir_is_refused(runs: Runs, data_dir: Path) -> None:
    async def append(events: list[Event], msg_id: str | None) -> list[int]:
        raise AssertionError("never called")

    bus = file_bus(data_dir)
    first = ConductorBridge(runs.root, data_dir, bus, append=append)
    await first.open()
    try:
        with pytest.raises(BridgeBusy):
            await ConductorBridge(runs.root, data_dir, bus, append=append).open()
    finally:
        first.close()
    assert positions_path(data_dir).is_file()


# -- following ------------------------------------------------------------------------------


async def wait_for_messages(data_dir: Path, count: int, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while len(messages_of(data_dir)) < count:
            await anyio.sleep(0.02)


async def test_follow_picks_up_new_messages_and_files(runs: Runs, data_dir: Path) -> None:
    path = runs.bus("p", "t")
    runs.record(path, "FACT", "before the start")
    async with file_bus(data_dir) as bus:
        bridge = ConductorBridge(runs.root, data_dir, bus)
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: bridge.run(
                follow=True, poll_interval_s=0.05, task_status=task_status
            ))  # fmt: skip
            await wait_for_messages(data_dir, 1)
            runs.entry(path, "RUN_START", "p", "t", run_id="r1")
            await wait_for_messages(data_dir, 2)
            runs.record(runs.bus("p", "t2"), "FACT", "a new task file")
            await wait_for_messages(data_dir, 3)
            text = runs.entry_text("FACT", "p", "t")
            runs.write(path, text[:-6])  # the body is being written
            await anyio.sleep(0.3)
            assert len(messages_of(data_dir)) == 3
            runs.write(path, text[-6:])
            await wait_for_messages(data_dir, 4)
            await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
    messages = messages_of(data_dir)
    assert Counter(m.msg_type for m in messages) == runs.messages
    assert bridge.stats.messages == 4


# -- the real command line ------------------------------------------------------------------


def test_cli_import_then_replay_matches_the_fixture(runs: Runs, tmp_path: Path) -> None:
    mixed_project(runs)
    for n in range(20):
        runs.run("api", f"task-{n:02d}", f"run-api-{n}", ("codex", "gemini")[n % 2], n % 3)
    data_dir = tmp_path / "data"
    proc = tally(data_dir, "import", "conductor", str(runs.root))
    summary = proc.stdout.decode()
    assert summary.startswith(f"imported {runs.total} messages")
    assert "1 unparseable" in summary
    assert "PROJECT-MESSAGE-BUS.md:22: header is not valid YAML" in proc.stderr.decode()

    metrics = samples(tally(data_dir, "replay", "--format", "prometheus").stdout.decode())
    assert metrics["conductor_messagebus_appends_total"] == runs.total
    assert metrics["conductor_completed_runs_total"] == runs.completed
    assert metrics["conductor_failed_runs_total"] == runs.failed
    agent_runs = {
        key.split('"')[1]: value
        for key, value in metrics.items()
        if key.startswith("conductor_agent_runs_total{")
    }
    assert agent_runs == runs.agents

    again = tally(data_dir, "import", "conductor", str(runs.root))
    assert again.stdout.decode().startswith("imported 0 messages (0 events)")
    assert again.stderr == b""


def test_cli_import_needs_a_directory(tmp_path: Path) -> None:
    proc = tally(tmp_path / "data", "import", "conductor", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2
    assert b"is not a directory" in proc.stderr


def test_serve_with_conductor_root_shows_new_messages(runs: Runs, tmp_path: Path) -> None:
    path = runs.bus("p", "t")
    runs.record(path, "FACT", "already there")
    with tally_server(tmp_path / "data", "--conductor-root", str(runs.root)) as server:
        wait_metric(server.metrics, "conductor_messagebus_appends_total", 1)
        runs.entry(path, "RUN_START", "p", "t", run_id="r1")
        wait_metric(server.metrics, "conductor_messagebus_appends_total", 2)
        runs.record(path, "PROGRESS", "one more")
        wait_metric(server.metrics, "conductor_messagebus_appends_total", 3)
        assert samples(server.metrics())['conductor_agent_runs_total{agent_type="unknown"}'] == 1
        deadline = time.monotonic() + 5.0
        while (status := server.status()["conductor"])["messages"] != 3:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert status["root"] == str(runs.root)
        assert (status["unparseable"], status["files"]) == (0, 1)
    assert positions_path(tmp_path / "data").is_file()


def wait_metric(render: Any, name: str, value: float, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := samples(render()).get(name)) != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {seen}, never {value}")
        time.sleep(0.05)


def test_discover_skips_other_files_and_runs(runs: Runs) -> None:
    runs.bus("p", "t")
    runs.write(runs.bus("p", "t"), "")
    (runs.root / "p" / "t" / "runs" / "r1").mkdir(parents=True)
    (runs.root / "p" / "t" / "runs" / "r1" / "MESSAGE-BUS.md").write_text("deep\n")
    (runs.root / "p" / "t" / "TASK.md").write_text("prompt\n")
    (runs.root / "p" / "MESSAGE-BUS.md.20260220-160000.archived").write_text("")
    (runs.root / "p" / "MESSAGE-BUS.md.bak").write_text("")
    (runs.root / ".hidden").mkdir()
    (runs.root / ".hidden" / "MESSAGE-BUS.md").write_text("")
    os.symlink(runs.root / "p", runs.root / "link")
    found = [(f.rel, f.logical, f.project, f.task) for f in discover(runs.root)]
    assert found == [
        ("p/MESSAGE-BUS.md.20260220-160000.archived", "p/MESSAGE-BUS.md", "p", ""),
        ("p/t/TASK-MESSAGE-BUS.md", "p/t/TASK-MESSAGE-BUS.md", "p", "t"),
    ]
