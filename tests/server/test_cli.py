"""The `tally` command line, run as real subprocesses on real data directories."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bus.segments import bus_dir, list_segments
from tests.support.buses import bus_url
from tests.support.nats import NatsServer, nats_server

__all__ = ["bus_url", "nats_server"]  # the fixtures, used by name


def tally(
    data_dir: Path, *args: str, stdin: bytes | None = None, check: bool = False
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TALLY_DATA_DIR": str(data_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "server", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tally {args} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


def bus_bytes(data_dir: Path) -> dict[str, bytes]:
    if not bus_dir(data_dir).exists():
        return {}
    return {seg.path.name: seg.path.read_bytes() for seg in list_segments(bus_dir(data_dir))}


def check_json(data_dir: Path) -> dict[str, object]:
    proc = tally(data_dir, "check", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def test_emit_pairs_prints_offsets_and_check_counts(data_dir: Path) -> None:
    first = tally(data_dir, "emit", "run_started", "run_id=123", "project=web", check=True)
    second = tally(
        data_dir, "emit", "api_request", "method=GET", "status=200", "duration_s=0.2", check=True
    )
    assert first.stdout == b"0\n"
    offset = int(second.stdout)
    assert offset > 0
    tail = tally(data_dir, "tail", check=True)
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [r["offset"] for r in records] == [0, offset]
    assert records[0]["run_id"] == "123"  # a string field keeps what was typed
    assert records[1]["status"] == 200
    assert isinstance(records[0]["ts"], float)
    report = check_json(data_dir)
    assert report["events"] == 2
    assert report["events_by_type"] == {"api_request": 1, "run_started": 1}
    assert report["corrupt_lines"] == 0


def test_emit_json_and_stdin(data_dir: Path) -> None:
    tally(
        data_dir,
        "emit",
        "--json",
        '[{"type":"loop_started","loop_id":"a"},{"type":"loop_stopped","loop_id":"a"}]',
        check=True,
    )
    lines = b'{"type":"bus_message","project":"p","msg_type":"FACT"}\n' * 3
    proc = tally(data_dir, "emit", "-", stdin=lines, check=True)
    assert len(proc.stdout.splitlines()) == 3
    assert check_json(data_dir)["events"] == 5


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (["emit", "api_request", "method=GET", "status=abc"], None, b"field 'status'"),
        (["emit", "run_started", "project=p"], None, b"field 'run_id'"),
        (["emit", "no_such_type"], None, b"unknown event type"),
        (
            ["emit", "--json", '{"type":"context_usage","loop_id":"l","percent":140}'],
            None,
            b"percent",
        ),
        (
            ["emit", "-"],
            b'{"type":"loop_started","loop_id":"a"}\n{"type":"loop_started","loop_id":"b"}\n'
            b'{"type":"loop_started"}\n',
            b"line 3, field 'loop_id'",
        ),
        (["emit", "-"], b'{"type":"loop_started","loop_id":"a"}\n{not json\n', b"line 2"),
    ],
)
def test_bad_emit_exits_2_and_leaves_bus_identical(
    data_dir: Path, args: list[str], stdin: bytes | None, needle: bytes
) -> None:
    tally(data_dir, "emit", "loop_started", "loop_id=seed", check=True)
    before = bus_bytes(data_dir)
    proc = tally(data_dir, *args, stdin=stdin)
    assert proc.returncode == 2
    assert needle in proc.stderr, proc.stderr
    assert b"nothing was appended" in proc.stderr
    assert bus_bytes(data_dir) == before


def test_emit_checks_label_names_apart_from_metric_names(data_dir: Path) -> None:
    # `a:b` is a valid metric name but not a valid label name: the third line alone
    # is rejected, so it must be rejected after the first two as well
    lines = (
        b'{"type":"metric","name":"a:b","kind":"gauge","value":1}\n'
        b'{"type":"metric","name":"ok_total","kind":"counter","value":1}\n'
        b'{"type":"metric","name":"ok_total","kind":"counter","value":1,"labels":{"a:b":"x"}}\n'
    )
    for stdin, line in ((lines.splitlines(keepends=True)[2], 1), (lines, 3)):
        proc = tally(data_dir, "emit", "-", stdin=stdin)
        assert proc.returncode == 2, proc.stderr
        needle = b"tally emit: line %d, field 'labels': invalid label name 'a:b'" % line
        assert needle in proc.stderr, proc.stderr
        assert b"nothing was appended" in proc.stderr
        assert bus_bytes(data_dir) == {}


def _run_emitters(data_dir: Path, writers: int, batches: int, per_batch: int, torn: bool) -> None:
    """Each writer process runs one `tally emit -` process per batch of JSONL."""
    script = Path(__file__).parents[1] / "support" / "emitter.py"
    env = {**os.environ, "TALLY_DATA_DIR": str(data_dir)}
    args = [str(batches), str(per_batch), str(int(torn))]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(w), *args], env=env)
        for w in range(writers)
    ]
    for proc in procs:
        assert proc.wait(timeout=600) == 0


def _assert_every_writer_in_order(data_dir: Path, writers: int, per_writer: int) -> None:
    tail = tally(data_dir, "tail", check=True)
    seen: dict[str, list[int]] = {}
    for line in tail.stdout.splitlines():
        record = json.loads(line)
        seen.setdefault(record["project"], []).append(int(record["msg_id"]))
    assert sorted(seen) == [f"w{w}" for w in range(writers)]
    for ids in seen.values():
        assert ids == list(range(per_writer))


@pytest.mark.parametrize("torn", [False, True], ids=["clean", "torn-line-between-batches"])
def test_eight_concurrent_emitters(data_dir: Path, torn: bool) -> None:
    # The figure is 8 x 20,000 in batches of 1,000; the same shape at a
    # tenth of the size keeps the suite fast (benchmarks run the full size).
    writers, batches, per_batch = 8, 4, 500
    _run_emitters(data_dir, writers, batches, per_batch, torn)
    report = check_json(data_dir)
    assert report["events"] == writers * batches * per_batch
    assert report["corrupt_lines"] == (1 if torn else 0)
    assert report["torn_tail"] is False
    _assert_every_writer_in_order(data_dir, writers, batches * per_batch)
    quarantine = (data_dir / "quarantine.jsonl").read_bytes().splitlines() if torn else []
    assert len(quarantine) == (1 if torn else 0)


def test_schema_is_json_schema_of_every_type(data_dir: Path) -> None:
    proc = tally(data_dir, "schema", check=True)
    schema = json.loads(proc.stdout)
    text = json.dumps(schema)
    for tag in ("run_queued", "iteration_completed", "metric", "metrics_reset"):
        assert f'"{tag}"' in text


def test_check_reports_torn_tail_and_exit_1_on_corrupt(data_dir: Path) -> None:
    tally(data_dir, "emit", "loop_started", "loop_id=a", check=True)
    segment = list_segments(bus_dir(data_dir))[-1].path
    with segment.open("ab") as fh:
        fh.write(b"garbage that is not json\n")
        fh.write(b'{"type":"loop_started","loo')
    proc = tally(data_dir, "check", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert list(report) == [
        "data_dir",
        "segments",
        "bytes",
        "events",
        "events_by_type",
        "corrupt_lines",
        "unknown_events",
        "unknown_types",
        "torn_tail",
        "end_offset",
        "quarantine",
    ]
    assert report["data_dir"] == str(data_dir)
    assert report["quarantine"] == str(data_dir / "quarantine.jsonl")
    assert report["corrupt_lines"] == 1
    assert report["torn_tail"] is True
    assert report["events"] == 1


def test_replay_prints_folded_metrics(data_dir: Path) -> None:
    tally(data_dir, "emit", "run_started", "run_id=r1", "project=p", "agent=claude", check=True)
    tally(data_dir, "emit", "run_finished", "run_id=r1", "project=p", "status=failed", check=True)
    text = tally(data_dir, "replay", check=True).stdout.decode()
    assert "conductor_failed_runs_total 1\n" in text
    assert "conductor_active_runs_total 0\n" in text
    assert 'conductor_agent_runs_total{agent_type="claude"} 1\n' in text
    om = tally(data_dir, "replay", "--format", "openmetrics", check=True).stdout
    assert om.endswith(b"# EOF\n")


# -- bad input: exit 2, `tally COMMAND: what was wrong`, nothing appended ------------

#: (arguments, stdin, what stderr says). In arguments, {missing} is a path that does
#: not exist, {empty} an empty file, {root} an empty directory.
BAD_INPUT: list[tuple[list[str], bytes | None, bytes]] = [
    (["emit"], None, b"tally emit: give TYPE key=value..., --json"),
    (["emit", "loop_started", "--json", "{}"], None, b"tally emit: give either --json or TYPE"),
    (["emit", "-", "loop_id=a"], b"", b"tally emit: '-' reads JSONL from stdin and takes no"),
    (["emit", "-"], b"\n", b"tally emit: line 1: no events in the input"),
    (["emit", "loop_started", "loop_id"], None, b"tally emit: line 1: expected key=value"),
    (["check", "--data-dir", "{missing}"], None, b"tally check: no bus at {missing}/bus"),
    (["tail", "--from-offset", "3"], None, b"tally tail: --from-offset: offset 3 is not the start"),
    (["tail", "--from-offset", "-1"], None, b"tally tail: error: argument --from-offset: -1 is"),
    (["tail", "--from-offset", "x"], None, b"tally tail: error: argument --from-offset: 'x' is"),
    (
        ["tail", "--from-offset", "1000000"],
        None,
        b"tally tail: --from-offset: offset 1000000 is beyond the end of the log",
    ),
    (["tail", "--data-dir", "{missing}"], None, b"tally tail: no data directory at {missing}"),
    (["replay", "--data-dir", "{missing}"], None, b"tally replay: no data directory at"),
    (["replay", "--until-offset", "-5"], None, b"tally replay: error: argument --until-offset"),
    (
        ["replay", "--until-offset", "1000000"],
        None,
        b"tally replay: --until-offset 1000000 is beyond the end of the log (",
    ),
    (["replay", "--until-ts", "nan"], None, b"tally replay: --until-ts must be a finite"),
    (["replay", "--step", "5x"], None, b"tally replay: --step: invalid duration '5x'"),
    (["replay", "--step", "0"], None, b"tally replay: --step: '0' is not a positive duration"),
    (["replay", "--step", "1m", "--format", "json"], None, b"tally replay: --step writes OpenM"),
    (["replay", "--format", "xml"], None, b"tally replay: error: argument --format"),
    (["schema", "extra"], None, b"tally schema: error: unrecognized arguments: extra"),
    (["import", "conductor", "{missing}"], None, b"tally import conductor: conductor-loop runs"),
    (["import"], None, b"tally import: error: the following arguments are required: SOURCE"),
    (["serve", "--token-file", "{missing}"], None, b"tally serve: cannot read --token-file"),
    (["serve", "--token-file", "{empty}"], None, b"tally serve: --token-file {empty} is empty"),
    (["serve", "--port", "70000"], None, b"tally serve: error: argument --port: '70000' is not"),
    (["serve", "--port", "-1"], None, b"tally serve: error: argument --port: '-1' is not a port"),
    (["serve", "--protect-reads"], None, b"tally serve: --protect-reads needs --token-file"),
    (["serve", "--host", "0.0.0.0"], None, b"tally serve: refusing to listen on non-loopback"),
    (["serve", "--conductor-root", "{missing}"], None, b"tally serve: --conductor-root {missing}"),
]


def _fill(text: str, paths: dict[str, Path]) -> str:
    for name, path in paths.items():
        text = text.replace(f"{{{name}}}", str(path))
    return text


@pytest.mark.parametrize(
    ("args", "stdin", "needle"), BAD_INPUT, ids=[" ".join(case[0]) for case in BAD_INPUT]
)
def test_bad_input_exits_2_naming_what_was_wrong(
    data_dir: Path, tmp_path: Path, args: list[str], stdin: bytes | None, needle: bytes
) -> None:
    tally(data_dir, "emit", "loop_started", "loop_id=a", check=True)
    tally(data_dir, "emit", "loop_started", "loop_id=b", check=True)
    before = bus_bytes(data_dir)
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "root": tmp_path}
    paths["empty"].write_bytes(b"")
    proc = tally(data_dir, *(_fill(arg, paths) for arg in args), stdin=stdin)
    assert proc.returncode == 2, proc.stderr
    assert _fill(needle.decode(), paths).encode() in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert bus_bytes(data_dir) == before
    assert not paths["missing"].exists()


TOML_COMMANDS = [
    ["emit", "loop_started", "loop_id=a"],
    ["replay"],
    ["serve", "--port", "0"],
    ["import", "conductor", "{root}"],
]


@pytest.mark.parametrize("args", TOML_COMMANDS, ids=[case[0] for case in TOML_COMMANDS])
def test_a_bad_tally_toml_is_bad_input(data_dir: Path, tmp_path: Path, args: list[str]) -> None:
    (data_dir / "tally.toml").write_text("[bus]\nsegmnt_bytes = 5\n")
    root = tmp_path / "runs"
    root.mkdir()
    proc = tally(data_dir, *(_fill(arg, {"root": root}) for arg in args))
    assert proc.returncode == 2, proc.stderr
    prog = " ".join(args[:2] if args[0] == "import" else args[:1])
    message = f"tally {prog}: {data_dir}/tally.toml: unknown key 'segmnt_bytes' in [bus]\n"
    assert proc.stderr.decode().endswith(message), proc.stderr
    assert bus_bytes(data_dir) == {}


# -- runtime failures: exit 1, `tally COMMAND: what failed` ------------------------


def test_a_full_disk_exits_1(data_dir: Path) -> None:
    bus_dir(data_dir).mkdir()
    (bus_dir(data_dir) / "00000000000000000000.jsonl").symlink_to("/dev/full")
    proc = tally(data_dir, "emit", "loop_started", "loop_id=a")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(b"tally emit: cannot append to the log in "), proc.stderr
    assert proc.stderr.endswith(b"No space left on device; nothing was appended\n")


def test_a_taken_port_exits_1(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = tally(data_dir, "serve", "--port", str(port))
    assert proc.returncode == 1, proc.stderr
    assert f"tally serve: cannot listen on 127.0.0.1:{port}: ".encode() in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_import_while_another_process_imports_exits_1(data_dir: Path, tmp_path: Path) -> None:
    lock = data_dir / "conductor" / "LOCK"
    lock.parent.mkdir()
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = tally(data_dir, "import", "conductor", str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(b"tally import conductor: another tally process is importing")


def test_unreadable_positions_exit_1(data_dir: Path, tmp_path: Path) -> None:
    positions = data_dir / "conductor" / "positions.json"
    positions.parent.mkdir()
    positions.write_bytes(b"{not json")
    proc = tally(data_dir, "import", "conductor", str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"tally import conductor: cannot read {positions}".encode())


# -- the bus: --bus, $TALLY_BUS, [bus] url ---------------------------------------------


def test_emit_with_an_id_twice_appends_once(data_dir: Path, bus_url: str | None) -> None:
    args = ("emit", "--id", "retry-1", "loop_started", "loop_id=a")
    first = tally(data_dir, *args, check=True).stdout
    again = tally(data_dir, *args, check=True).stdout
    other = tally(data_dir, "emit", "--id", "retry-2", "loop_started", "loop_id=a", check=True)
    assert first == again != other.stdout
    records = [json.loads(line) for line in tally(data_dir, "tail", check=True).stdout.split()]
    assert [r["offset"] for r in records] == [int(first), int(other.stdout)]
    assert check_json(data_dir)["events"] == 2
    assert tally(data_dir, "emit", "--id", "", "loop_started", "loop_id=a").returncode == 2


def test_the_bus_url_comes_from_flag_then_env_then_toml(
    data_dir: Path, nats_server: NatsServer
) -> None:
    flag, env, toml = (f"{nats_server.url}/{name}" for name in ("flag", "env", "toml"))
    (data_dir / "tally.toml").write_text(f'[bus]\nurl = "{toml}"\n')

    def emit(*args: str, bus_env: str | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "TALLY_BUS"}
        if bus_env is not None:
            environ["TALLY_BUS"] = bus_env
        proc = subprocess.run(
            [sys.executable, "-m", "server", "emit", "--data-dir", str(data_dir), *args],
            capture_output=True,
            env=environ,
            timeout=60,
            check=True,
        )
        assert proc.stdout

    emit("--bus", flag, "loop_started", "loop_id=a", bus_env=env)
    emit("loop_started", "loop_id=a", bus_env=env)
    emit("loop_started", "loop_id=a")
    emit("--bus", "file:", "loop_started", "loop_id=a", bus_env=env)  # the files, explicitly
    for url in (flag, env, toml):
        report = check_json_on(data_dir, url)
        assert (report["events"], report["messages"], report["bus"]) == (1, 1, url)
    assert bus_bytes(data_dir)  # the file: bus got the fourth


def check_json_on(data_dir: Path, url: str) -> dict[str, object]:
    proc = tally(data_dir, "check", "--json", "--bus", url)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def test_check_and_tail_on_jetstream(data_dir: Path, nats_server: NatsServer) -> None:
    url = f"{nats_server.url}/cli"
    jsonl = b'{"type":"loop_started","loop_id":"a"}\n{"type":"loop_stopped","loop_id":"a"}\n'
    tally(data_dir, "emit", "--bus", url, "-", stdin=jsonl, check=True)
    offsets = tally(data_dir, "emit", "--bus", url, "loop_started", "loop_id=b", check=True)
    lines = tally(data_dir, "check", "--bus", url, check=True).stdout.decode().splitlines()
    assert lines[1:3] == [f"bus             {url}", "messages        2"]
    assert "events          3" in lines
    assert not any(line.startswith(("segments", "torn tail")) for line in lines)
    tailed = tally(data_dir, "tail", "--bus", url, "--from-offset", offsets.stdout.decode().strip())
    assert [json.loads(line)["loop_id"] for line in tailed.stdout.splitlines()] == ["b"]


DEPLOY_TOML = """
[[event_types]]
name = "deploy_finished"
fields = [
  { name = "service", type = "str" },
  { name = "duration_s", type = "float" },
  { name = "ok", type = "bool", default = true },
]
"""


def test_emit_validates_and_appends_declared_types(data_dir: Path) -> None:
    (data_dir / "tally.toml").write_text(DEPLOY_TOML)
    tally(data_dir, "emit", "deploy_finished", "service=api", "duration_s=2.5", check=True)
    tally(
        data_dir,
        "emit",
        "--json",
        '{"type":"deploy_finished","service":"web","duration_s":1,"ok":false}',
        check=True,
    )
    before = bus_bytes(data_dir)
    cases = [
        (["deploy_finished", "service=api", "duration_s=slow"], None,
         "line 1, field 'duration_s': Expected `float`, got `str`"),
        (["deploy_finished", "duration_s=1"], None,
         "line 1, field 'service': Object missing required field `service`"),
        (["-"], b'{"type":"deploy_finished","service":"a","duration_s":1}\n'
                b'{"type":"deploy_finished","service":"a","duration_s":1,"ok":"yes"}\n',
         "line 2, field 'ok': Expected `bool`, got `str`"),
        (["deploy_started", "service=api"], None, "unknown event type 'deploy_started'"),
    ]  # fmt: skip
    for args, stdin, message in cases:
        proc = tally(data_dir, "emit", *args, stdin=stdin)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr.decode(), proc.stderr
        assert "nothing was appended" in proc.stderr.decode()
    assert bus_bytes(data_dir) == before

    records = [json.loads(line) for line in tally(data_dir, "tail", check=True).stdout.splitlines()]
    assert [(r["type"], r["service"], r["ok"]) for r in records] == [
        ("deploy_finished", "api", True),
        ("deploy_finished", "web", False),
    ]
    assert all(isinstance(r["ts"], float) for r in records)
    report = check_json(data_dir)
    assert report["events_by_type"] == {"deploy_finished": 2}
    assert report["unknown_events"] == 0
    schema = json.loads(tally(data_dir, "schema", check=True).stdout)
    assert "deploy_finished" in schema["$defs"]


def test_undeclared_types_are_refused_at_write_and_skipped_in_the_log(data_dir: Path) -> None:
    proc = tally(data_dir, "emit", "deploy_finished", "service=api", "duration_s=1")
    assert proc.returncode == 2
    assert "unknown event type 'deploy_finished'" in proc.stderr.decode()
    assert bus_bytes(data_dir) == {}

    (data_dir / "tally.toml").write_text(DEPLOY_TOML)
    tally(data_dir, "emit", "deploy_finished", "service=api", "duration_s=1", check=True)
    (data_dir / "tally.toml").unlink()  # the declaration is gone: the line is unknown
    replayed = tally(data_dir, "replay", check=True).stdout.decode()
    assert "tally_unknown_events_total 1\n" in replayed
    assert 'tally_events_folded_total{type="deploy_finished"}' not in replayed


def test_a_declaration_shadowing_a_built_in_stops_serve(data_dir: Path) -> None:
    (data_dir / "tally.toml").write_text('[[event_types]]\nname = "run_started"\n')
    proc = tally(data_dir, "serve", "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.decode().endswith(
        f"tally serve: {data_dir}/tally.toml: "
        "[event_types] [0]: name: 'run_started' is a built-in event type\n"
    ), proc.stderr
