"""conductor-loop's run-info.yaml: the fields metrics use, and files that cannot be read."""

from __future__ import annotations

import pytest

from server.conductor.runinfo import parse_run_info


def test_run_info_completed() -> None:
    info = parse_run_info(
        b"version: 1\nrun_id: 20260205-1030451234-12345-0\nproject_id: my-project\n"
        b"task_id: task-001\nagent: codex\npid: 12345\nstatus: completed\n"
        b"start_time: 2026-02-05T10:30:45.123Z\nend_time: 2026-02-05T10:35:50.456Z\n"
        b'exit_code: 0\ncommandline: codex --prompt "Implement feature X"\n'
    )
    assert info is not None
    assert (info.run_id, info.project, info.task, info.agent) == (
        "20260205-1030451234-12345-0",
        "my-project",
        "task-001",
        "codex",
    )
    assert (info.status, info.exit_code, info.finished) == ("completed", 0, True)
    assert info.duration_s == pytest.approx(305.333)


def test_run_info_running_and_agent_type() -> None:
    info = parse_run_info(
        b"run_id: r\nagent_type: gemini\nstatus: running\n"
        b"start_time: 2026-02-05T10:30:45Z\nend_time: 0001-01-01T00:00:00Z\nexit_code: -1\n"
    )
    assert info is not None
    assert (info.agent, info.finished, info.exit_code, info.end_time) == ("gemini", False, -1, None)
    assert info.duration_s is None


@pytest.mark.parametrize("data", [b"", b"- a list\n", b"key: [unclosed\n", b"\xff\xfe: x\n"])
def test_run_info_unreadable(data: bytes) -> None:
    info = parse_run_info(data)
    assert info is None or info.run_id == ""
