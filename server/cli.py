"""The `tally` command line: one `main`, the one place errors become exit codes.

Exit codes: 0 success; 1 a runtime failure, or corrupt lines in the log
(`check`); 2 bad input or usage (nothing was appended). Every error is one or
more stderr lines `tally COMMAND: what was wrong`, its exit code the error's own
(``TallyError.exit_code``); argparse reports malformed arguments the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import msgspec

from bus.contract import Bus, open_bus
from bus.errors import OffsetError, TallyError
from bus.events import Event, event_json_schema
from bus.lines import Batch
from bus.quarantine import QUARANTINE_NAME
from bus.validate import events_from_body, events_from_jsonl, events_from_pairs
from bus.writer import DEFAULT_CONFIG as DEFAULT_BUS
from projections.exposition.formats import FORMATS
from server.config import TallyConfig, load_config

__all__ = ["main"]

DEFAULT_DATA_DIR: Final = "./tally-data"

_json: Final = msgspec.json.Encoder()


class UsageError(TallyError):
    """Raised when a command's arguments are wrong or do not fit together."""

    exit_code = 2


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("TALLY_DATA_DIR") or DEFAULT_DATA_DIR)


def _log_dir(args: argparse.Namespace) -> Path:
    """The data directory of a command that only reads the log: it must exist."""
    data_dir = _data_dir(args)
    if not data_dir.is_dir():
        raise UsageError(f"no data directory at {data_dir} (see --data-dir)")
    return data_dir


def _config(args: argparse.Namespace) -> TallyConfig:
    return load_config(_data_dir(args))


def _bus_url(args: argparse.Namespace, config: TallyConfig) -> str | None:
    """``--bus``, else ``$TALLY_BUS`` (read in ``main``), else ``[bus] url``; ``None``: files."""
    return args.bus or args.bus_env or config.bus.url


def _open_bus(args: argparse.Namespace, config: TallyConfig | None = None) -> Bus:
    """The bus this command works on (not opened yet: ``async with`` it)."""
    config = config if config is not None else _config(args)
    return open_bus(_bus_url(args, config), _data_dir(args), config.bus_config())


def _offset(text: str) -> int:
    """An argparse type: a byte offset of the log, ``0`` or more."""
    try:
        offset = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte offset") from None
    if offset < 0:
        raise argparse.ArgumentTypeError(f"{offset} is negative: offsets start at 0")
    return offset


def _port(text: str) -> int:
    """An argparse type: a TCP port number, 0 (pick a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


# -- emit -------------------------------------------------------------------


def _read_emit_input(args: argparse.Namespace, config: TallyConfig) -> list[Event]:
    schema = config.bus_config().schema  # the built-ins and the declared [[event_types]]
    if args.json is not None:
        if args.type or args.pairs:
            raise UsageError("give either --json or TYPE key=value..., not both")
        return events_from_body(args.json.encode(), schema=schema)
    if args.type == "-":
        if args.pairs:
            raise UsageError("'-' reads JSONL from stdin and takes no key=value pairs")
        return events_from_jsonl(sys.stdin.buffer.read(), schema=schema)
    if not args.type:
        raise UsageError("give TYPE key=value..., --json '{...}', or - for JSONL on stdin")
    return [events_from_pairs(args.type, args.pairs, schema=schema)]


def cmd_emit(args: argparse.Namespace) -> int:
    import anyio

    config = _config(args)
    events = _read_emit_input(args, config)  # validates everything before any byte is written
    if args.id is not None and not args.id:
        raise UsageError("--id must not be empty")
    bus = _open_bus(args, config)

    async def run() -> list[int]:
        async with bus:
            return await bus.append(events, msg_id=args.id)

    offsets = anyio.run(run)
    sys.stdout.write("".join(f"{offset}\n" for offset in offsets))
    return 0


# -- check ------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    import anyio

    from bus.scan import LogReport, missing_log, scan_log

    data_dir = _data_dir(args)
    bus = _open_bus(args)
    where = missing_log(bus)
    if where is not None:
        raise UsageError(f"no bus at {where} (see --data-dir)")

    async def run() -> LogReport:
        async with bus:
            return await scan_log(bus)

    report = anyio.run(run)
    quarantine = str(data_dir / QUARANTINE_NAME)
    if args.json:
        doc = {"data_dir": str(data_dir), **msgspec.to_builtins(report), "quarantine": quarantine}
        if report.segments is None:
            doc["bus"] = bus.url
        sys.stdout.write(_json.encode(doc).decode() + "\n")
    else:
        lines = [f"data dir        {data_dir}"]
        if report.segments is not None:
            lines.append(f"segments        {report.segments}")
        else:
            lines.append(f"bus             {bus.url}")
        if report.messages is not None:
            lines.append(f"messages        {report.messages}")
        lines += [
            f"bytes           {report.bytes}",
            f"events          {report.events}",
            *(f"  {tag:<22}{n}" for tag, n in report.events_by_type.items()),
            f"corrupt lines   {report.corrupt_lines}"
            + (f" (see {quarantine})" if report.corrupt_lines else ""),
            f"unknown events  {report.unknown_events}",
            *(f"  {tag:<22}{n}" for tag, n in report.unknown_types.items()),
        ]
        if report.torn_tail is not None:
            lines.append(f"torn tail       {'yes' if report.torn_tail else 'no'}")
        sys.stdout.write("\n".join(lines) + "\n")
    return 1 if report.corrupt_lines else 0


# -- tail -------------------------------------------------------------------


def _tail_lines(batch: Batch) -> bytes:
    out = bytearray()
    for offset, event in batch:
        record = msgspec.to_builtins(event)
        out += _json.encode({"offset": offset, **record})
        out += b"\n"
    return bytes(out)


def cmd_tail(args: argparse.Namespace) -> int:
    import anyio

    _log_dir(args)
    bus = _open_bus(args)
    out = sys.stdout.buffer

    async def run() -> None:
        async with bus:
            position = args.from_offset if args.from_offset is not None else await bus.first()
            try:
                async for batch in bus.read(position):
                    out.write(_tail_lines(batch))
                    position = batch.end
            except OffsetError as exc:
                raise UsageError(f"--from-offset: {exc}") from exc
            out.flush()
            if args.follow:
                async for batch in bus.follow(position):
                    out.write(_tail_lines(batch))
                    out.flush()

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(run)
    return 0


# -- schema -----------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    union = _config(args).bus_config().schema.union  # the built-ins and [[event_types]]
    doc = _json.encode(event_json_schema(union))
    sys.stdout.write(msgspec.json.format(doc, indent=2).decode())
    sys.stdout.write("\n")
    return 0


# -- replay -----------------------------------------------------------------


#: Replays that finish sooner than this need no progress line.
PROGRESS_AFTER_S: Final = 1.0


def _progress_printer() -> Callable[[int, int], None]:
    import time

    started = time.monotonic()
    shown = False

    def progress(done: int, end: int) -> None:
        nonlocal shown
        if not shown and time.monotonic() - started < PROGRESS_AFTER_S:
            return
        shown = True
        pct = 100.0 * done / end if end else 100.0
        sys.stderr.write(f"\rreplaying ({pct:5.1f}%)")
        if done >= end:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return progress


def _until_offset(bus: Bus, until: int | None) -> int | None:
    """``--until-offset``: a position from the log's start to its end."""
    if until is None:
        return None
    import anyio

    async def run() -> int:
        async with bus:
            return await bus.end()

    end = anyio.run(run)
    if until > end:
        raise UsageError(f"--until-offset {until} is beyond the end of the log ({end})")
    return until


def _step_seconds(text: str) -> float:
    from projections.replay import DurationError, parse_duration

    try:
        step_s = parse_duration(text)
    except DurationError as exc:
        raise UsageError(f"--step: {exc}") from exc
    if not step_s > 0:
        raise UsageError(f"--step: {text!r} is not a positive duration")
    return step_s


def cmd_replay(args: argparse.Namespace) -> int:
    from projections.exposition.formats import render
    from server.replay import replay, replay_steps

    data_dir = _log_dir(args)
    tally_config = _config(args)
    config = tally_config.projection_config()
    bus_url = _bus_url(args, tally_config)
    until_offset = _until_offset(_open_bus(args, tally_config), args.until_offset)
    until_ts = args.until_ts
    if until_ts is not None and not math.isfinite(until_ts):
        raise UsageError("--until-ts must be a finite Unix time")
    if args.step is not None:
        if args.format not in (None, "openmetrics"):
            raise UsageError("--step writes OpenMetrics; drop --format or use openmetrics")
        body = replay_steps(
            data_dir,
            config=config,
            bus_url=bus_url,
            bus_config=tally_config.bus_config(),
            step_s=_step_seconds(args.step),
            until_offset=until_offset,
            until_ts=until_ts,
        )
        sys.stdout.buffer.write(body)
        return 0
    progress = _progress_printer() if sys.stderr.isatty() else None
    jobs = args.jobs if args.jobs is not None else min(2, os.cpu_count() or 1)
    if jobs > 1:
        from server.parallel import replay_parallel as replay
    projection = replay(
        data_dir,
        config=config,
        bus_url=bus_url,
        bus_config=tally_config.bus_config(),
        until_offset=until_offset,
        until_ts=until_ts,
        progress=progress,
    )
    sys.stdout.buffer.write(
        render(projection.families(), args.format or "prometheus", loops=projection.loops())
    )
    return 0


# -- compact ----------------------------------------------------------------


def cmd_compact(args: argparse.Namespace) -> int:
    import anyio

    from server.live.compact import compact

    data_dir = _log_dir(args)
    config = _config(args)
    older_than = None
    if args.older_than is not None:
        from projections.replay import DurationError, parse_duration

        try:
            older_than = parse_duration(args.older_than)
        except DurationError as exc:
            raise UsageError(f"--older-than: {exc}") from exc
    retain_bytes = retain_age = None
    if args.before is None and older_than is None:
        retain_bytes, retain_age = config.bus.retain_bytes, config.bus.retain_age_s
        if retain_bytes is None and retain_age is None:
            raise UsageError(
                "give --before POSITION or --older-than DURATION "
                "(or set [bus] retain_bytes or retain_age in tally.toml)"
            )
    bus = _open_bus(args, config)

    async def run() -> None:
        async with bus:
            done = await compact(
                data_dir,
                bus,
                config.projection_config(),
                before=args.before,
                older_than_s=older_than if older_than is not None else retain_age,
                retain_bytes=retain_bytes,
            )
        for name in done.removed:
            sys.stdout.write(f"removed {name}\n")
        base = done.base
        if base is None:
            sys.stdout.write("nothing to compact: no cut point past the start of the log\n")
        else:
            state = "new base" if done.created else "base (unchanged)"
            sys.stdout.write(
                f"{state} at position {base.offset}, event time {base.clock:.3f}: {base.path}\n"
            )

    anyio.run(run)
    return 0


# -- import -----------------------------------------------------------------


def _conductor_root(what: str, path: str | None) -> Path | None:
    if path is None:
        return None
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"{what} {root} is not a directory")
    return root


def cmd_import_conductor(args: argparse.Namespace) -> int:
    import anyio

    from server.conductor.bridge import BlockReport, ConductorBridge

    root = _conductor_root("conductor-loop runs root", args.root)
    assert root is not None
    data_dir = _data_dir(args)
    data_dir.mkdir(parents=True, exist_ok=True)

    def report(block: BlockReport) -> None:
        sys.stderr.write(f"tally import: {block.path}:{block.line}: {block.reason}\n")

    bus = _open_bus(args)
    bridge = ConductorBridge(root, data_dir, bus, report=report)

    async def run() -> None:
        async with bus:
            await bridge.run(follow=args.follow)

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(run)
    stats = bridge.stats
    sys.stdout.write(
        f"imported {stats.messages} messages ({stats.events} events) from {stats.files} files; "
        f"{stats.duplicates} already imported, {stats.unparseable} unparseable, "
        f"{stats.pending} pending\n"
    )
    return 0


# -- serve ------------------------------------------------------------------


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read --token-file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"--token-file {path} is empty")
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import anyio

    from server.service import ServeOptions, serve

    config = _config(args)
    options = ServeOptions(
        data_dir=_data_dir(args),
        config=config,
        bus_url=_bus_url(args, config),
        host=args.host if args.host is not None else config.server.host,
        port=args.port if args.port is not None else config.server.port,
        demo=args.demo,
        token=_read_token(args.token_file) if args.token_file else None,
        protect_reads=args.protect_reads,
        conductor_root=_conductor_root("--conductor-root", args.conductor_root),
        otlp_port=args.otlp_port if args.otlp_port is not None else config.otlp.port,
    )
    if options.protect_reads and options.token is None:
        raise UsageError("--protect-reads needs --token-file")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def run() -> None:
        await serve(options)

    anyio.run(run)
    return 0


# -- loop -------------------------------------------------------------------


def cmd_loop(args: argparse.Namespace) -> int:
    from server.loop import loop_options
    from server.loop.command import run_loop

    options = loop_options(args, data_dir=_data_dir(args), cwd=Path.cwd())
    if args.token_file:
        options = options.with_token(_read_token(args.token_file))
    config = _config(args)
    if options.url is not None:
        return run_loop(options, DEFAULT_BUS)
    return run_loop(options, config.bus_config(), _bus_url(args, config))


# -- parser -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"data directory (default: $TALLY_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    common.add_argument(
        "--bus",
        metavar="URL",
        help="the log: file:PATH or nats://HOST:PORT[,HOST:PORT...]/STREAM "
        "(default: $TALLY_BUS, else [bus] url in tally.toml, else file:DATA_DIR/bus)",
    )
    parser = argparse.ArgumentParser(
        prog="tally", description="Event-sourced metrics for agent orchestration."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emit = sub.add_parser(
        "emit",
        parents=[common],
        help="validate and append events to the bus",
        description="Append events. Everything is validated first: on bad input nothing is "
        "appended and the exit code is 2. Prints the offset of each appended event.",
    )
    emit.add_argument("type", nargs="?", help="event type, or - to read JSONL from stdin")
    emit.add_argument("pairs", nargs="*", metavar="key=value", help="event fields")
    emit.add_argument("--json", metavar="JSON", help="one JSON object or an array of them")
    emit.add_argument(
        "--id",
        metavar="ID",
        help="a message id: the same id again (within the bus's de-dup window) appends nothing "
        "and prints the first append's positions",
    )
    emit.set_defaults(func=cmd_emit, parser=emit)

    check = sub.add_parser(
        "check",
        parents=[common],
        help="verify the log: counts, corrupt lines, torn tail (exit 1 if corrupt)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=cmd_check, parser=check)

    tail = sub.add_parser("tail", parents=[common], help="print events as JSONL with offsets")
    tail.add_argument(
        "--from-offset", type=_offset, metavar="N", help="default: the first event the log holds"
    )
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.set_defaults(func=cmd_tail, parser=tail)

    schema = sub.add_parser("schema", parents=[common], help="print the events' JSON Schema")
    schema.set_defaults(func=cmd_schema, parser=schema)

    replay = sub.add_parser(
        "replay", parents=[common], help="rebuild metrics from the log and print them"
    )
    replay.add_argument(
        "--until-offset", type=_offset, metavar="N", help="events starting before N"
    )
    replay.add_argument("--until-ts", type=float, metavar="T", help="events with ts <= T")
    replay.add_argument("--format", choices=tuple(FORMATS), help="default prometheus")
    replay.add_argument(
        "--step",
        metavar="DURATION",
        help="OpenMetrics history, one sample set per step (30s, 1m, 1h) for promtool backfill",
    )
    replay.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        help="processes to fold with (default 2 on a machine with 2 or more CPUs)",
    )
    replay.set_defaults(func=cmd_replay, parser=replay)

    compact = sub.add_parser(
        "compact",
        parents=[common],
        help="cut the log: a base snapshot at the cut, the segments before it removed",
        description="Write a base snapshot at the highest cut point (a segment's start; a "
        "message's on JetStream) at or before the point given, then remove (or move to "
        "[bus] archive_dir) the log before it. Replays and restarts start from the base. "
        "Without options, applies [bus] retain_bytes and retain_age.",
    )
    point = compact.add_mutually_exclusive_group()
    point.add_argument(
        "--before", type=_offset, metavar="POSITION", help="cut at or before this position"
    )
    point.add_argument(
        "--older-than",
        metavar="DURATION",
        help="cut before the first event younger than DURATION (7d, 12h) behind the log's "
        "newest event time",
    )
    compact.set_defaults(func=cmd_compact, parser=compact)

    srv = sub.add_parser("serve", parents=[common], help="run the HTTP server and live projection")
    srv.add_argument("--host", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=_port, help="port (default 9469; 0 picks a free one)")
    srv.add_argument("--demo", action="store_true", help="append a synthetic live workload")
    srv.add_argument(
        "--otlp-port",
        type=_port,
        metavar="PORT",
        help="also serve on PORT, for OTLP/HTTP exporters (4318 by convention)",
    )
    srv.add_argument(
        "--token-file", metavar="FILE", help="require 'Authorization: Bearer <token>' on POSTs"
    )
    srv.add_argument(
        "--protect-reads", action="store_true", help="require the token on read endpoints too"
    )
    srv.add_argument(
        "--conductor-root",
        metavar="ROOT",
        help="also import conductor-loop message buses under ROOT (e.g. ~/.run-agent/runs)",
    )
    srv.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    srv.set_defaults(func=cmd_serve, parser=srv)

    imp = sub.add_parser("import", help="append events from another tool's files")
    imp_sub = imp.add_subparsers(dest="source", required=True, metavar="SOURCE")
    conductor = imp_sub.add_parser(
        "conductor",
        parents=[common],
        help="conductor-loop message buses under a runs root",
        description="Append every message of the conductor-loop message buses under ROOT "
        "exactly once (positions in DATA_DIR/conductor/positions.json). Unparseable blocks "
        "are reported on stderr with file and line; a summary line goes to stdout.",
    )
    conductor.add_argument("root", metavar="ROOT", help="runs root, e.g. ~/.run-agent/runs")
    conductor.add_argument(
        "--follow", "-f", action="store_true", help="keep importing new messages and files"
    )
    conductor.set_defaults(func=cmd_import_conductor, parser=conductor)

    from server.loop.options import add_loop_arguments

    loop = sub.add_parser(
        "loop",
        parents=[common],
        help="run a command as a Ralph loop and write its loop metrics' events",
        description="Run CMD once per iteration (stdin, stdout, stderr and exit code its own) "
        "and append the Ralph-loop events around each run: to the local bus, or with --url "
        "to a remote tally through a spool that loses nothing while it is away.",
    )
    add_loop_arguments(loop)
    loop.set_defaults(func=cmd_loop, parser=loop)
    return parser


def _tally_error(exc: BaseException) -> TallyError | None:
    """The ``TallyError`` behind ``exc``: itself, or the one a task group wrapped it in."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, TallyError) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command: argparse.ArgumentParser = args.parser
    if extra:  # reported by the command's own parser, so that the message names it
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    args.bus_env = os.environ.get("TALLY_BUS") or None
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        error = _tally_error(exc)
        if error is None:
            raise
        for line in str(error).splitlines() or [type(error).__name__]:
            sys.stderr.write(f"{command.prog}: {line}\n")
        return error.exit_code
    return code
