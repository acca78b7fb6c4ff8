"""A fake Ralph-loop agent: a real process that does, iteration by iteration, what a plan says.

Run as ``python fake_agent.py STATE_DIR REPO REPORT``; it counts its own runs in
``STATE_DIR/runs`` (not trusting tally), and on run N does what ``PLAN[N]`` says:
commit or change files in the git work tree REPO, write the JUnit report REPORT,
hold memory, burn CPU, print Claude Code's JSON output, write a progress score to
``STATE_DIR/score``, and exit with a code. What it read on stdin goes to
``STATE_DIR/stdin-N``. ``python fake_agent.py --sleep`` just sleeps (to be signalled);
``python fake_agent.py --step STATE_DIR`` sleeps a little and exits 0 (remote tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

MIB = 1 << 20
#: Tokens the Claude output reports on run N: 10,000 N input + 20,000 cache read +
#: 3,000 cache creation + 1,000 output.
CACHE_READ, CACHE_CREATION, OUTPUT = 20_000, 3_000, 1_000

#: run -> what it does. tests: name -> "pass" | "fail" | "flaky" (failed, passed on rerun).
PLAN: dict[int, dict[str, object]] = {
    1: {
        "commit": ["a.txt"],
        "tests": {"a": "pass", "b": "fail", "c": "fail"},
        "cpu_s": 0.5,
        "claude": "json",
        "exit": 0,
    },
    2: {
        "tests": {"a": "pass", "b": "fail", "c": "pass"},
        "hold_mib": 50,
        "claude": "stream-json",
        "exit": 1,
    },
    3: {
        "modify": ["b.txt", "c.txt"],
        "tests": {"a": "pass", "b": "pass", "c": "pass"},
        "claude": "json",
        "exit": 0,
    },
    4: {"exit": 0},  # no change, no report, no Claude output
    5: {
        "commit_all": ["d.txt"],
        "tests": {"a": "pass", "b": "pass", "c": "flaky", "d": "fail"},
        "claude": "stream-json",
        "exit": 0,
    },
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def junit(tests: dict[str, str]) -> str:
    cases = []
    for name, outcome in tests.items():
        body = {
            "pass": "",
            "fail": '<failure message="assert False">assert False</failure>',
            "flaky": '<flakyFailure message="boom" type="AssertionError">boom</flakyFailure>',
        }[outcome]
        cases.append(f'<testcase classname="tests.test_x" name="test_{name}">{body}</testcase>')
    failures = sum(o == "fail" for o in tests.values())
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        f'tests="{len(tests)}" failures="{failures}" errors="0" skipped="0">'
        + "".join(cases)
        + "</testsuite></testsuites>\n"
    )


def claude_output(run: int, style: str) -> str:
    usage = {
        "input_tokens": 10_000 * run,
        "cache_read_input_tokens": CACHE_READ,
        "cache_creation_input_tokens": CACHE_CREATION,
        "output_tokens": OUTPUT,
    }
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": f"run {run} done",
        "usage": usage,
        "modelUsage": {"claude-sonnet-4-5": {"inputTokens": 10_000, "contextWindow": 200_000}},
    }
    if style == "json":
        return json.dumps(result) + "\n"
    lines = [
        {"type": "system", "subtype": "init", "model": "claude-sonnet-4-5"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "working"}]}},
        result,
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def run(state: Path, repo: Path, report: Path) -> int:
    runs = state / "runs"
    n = int(runs.read_text()) + 1 if runs.exists() else 1
    runs.write_text(str(n))
    (state / f"stdin-{n}").write_bytes(b"" if sys.stdin.isatty() else sys.stdin.buffer.read())
    plan = PLAN[n]
    sys.stderr.write(f"agent stderr {n}\n")
    for name in plan.get("commit", []):  # type: ignore[attr-defined]
        (repo / name).write_text(f"run {n}\n")
        git(repo, "add", name)
        git(repo, "commit", "-q", "-m", f"run {n}")
    for name in plan.get("modify", []):  # type: ignore[attr-defined]
        (repo / name).write_text(f"changed by run {n}\n")
    for name in plan.get("commit_all", []):  # type: ignore[attr-defined]
        (repo / name).write_text(f"run {n}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"run {n}")
    if "tests" in plan:
        report.write_text(junit(plan["tests"]))  # type: ignore[arg-type]
    if "cpu_s" in plan:
        burn(float(plan["cpu_s"]))  # type: ignore[arg-type]
    if "hold_mib" in plan:
        held = bytearray(b"x") * (int(plan["hold_mib"]) * MIB)  # type: ignore[call-overload]
        time.sleep(1.0)
        del held
    (state / "score").write_text(f"{10 * n}\n")
    if "claude" in plan:
        sys.stdout.write(claude_output(n, str(plan["claude"])))
    sys.stdout.flush()
    return int(plan["exit"])  # type: ignore[call-overload]


def main() -> int:
    if sys.argv[1] == "--sleep":
        time.sleep(120)
        return 0
    if sys.argv[1] == "--step":
        time.sleep(float(sys.argv[2]))
        return 0
    return run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))


if __name__ == "__main__":
    sys.exit(main())
