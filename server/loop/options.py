"""``tally loop``'s options: the argparse arguments, and the checked ``LoopOptions``.

Rule: everything the loop needs is decided here, before any event is written or
any process started; an option that is wrong or does not fit with another raises
``LoopUsageError`` (exit 2) naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bus.errors import TallyError
from server.loop.context import CONTEXT_PARSERS, DEFAULT_CONTEXT_WINDOW

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT_S",
    "DEFAULT_SAMPLE_EVERY_S",
    "LoopOptions",
    "LoopUsageError",
    "add_loop_arguments",
    "loop_options",
    "spool_path",
]

DEFAULT_SAMPLE_EVERY_S: Final = 5.0
DEFAULT_FLUSH_TIMEOUT_S: Final = 5.0
SPOOL_DIR: Final = "loop-spool"


class LoopUsageError(TallyError):
    """Raised when tally loop's options are wrong or do not fit together."""

    exit_code = 2


@dataclass(frozen=True, kw_only=True)
class LoopOptions:
    """One ``tally loop`` invocation, checked."""

    argv: tuple[str, ...]
    loop_id: str
    max_iterations: int | None = None
    stop_file: Path | None = None
    until_success: int | None = None
    max_failures: int | None = None
    pause_s: float = 0.0
    repo: Path | None = None
    junit: Path | None = None
    tests_cmd: str | None = None
    success_cmd: str | None = None
    progress_cmd: str | None = None
    sample_every_s: float = DEFAULT_SAMPLE_EVERY_S
    context_from: str | None = None
    context_window: int | None = None
    # where the events go: the bus in data_dir, or url through the spool
    data_dir: Path = Path("tally-data")
    url: str | None = None
    token: str | None = None
    spool: Path | None = None
    flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S

    def with_token(self, token: str) -> LoopOptions:
        """These options with the bearer token read from ``--token-file``."""
        return dataclasses.replace(self, token=token)


def spool_path(data_dir: Path, loop_id: str) -> Path:
    """The default spool of a loop: ``<data-dir>/loop-spool/<loop-id>.jsonl`` (id quoted)."""
    return data_dir / SPOOL_DIR / (urllib.parse.quote(loop_id, safe="") + ".jsonl")


def _count(text: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return n


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        s = float(text)
    except ValueError:
        s = math.nan
    if not (math.isfinite(s) and s >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return s


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tally loop [options] -- CMD [ARGS...]``."""
    add = parser.add_argument
    add("--loop-id", metavar="ID", help="the loop's id, label loop (default: the directory's name)")
    stop = parser.add_argument_group("when to stop (default: never, until a signal)")
    stop.add_argument("--max-iterations", type=_count, metavar="N", help="after N iterations")
    stop.add_argument(
        "--stop-file", metavar="PATH", help="before the next iteration, once PATH exists"
    )
    stop.add_argument(
        "--until-success", type=_count, metavar="N", help="after N successes in a row"
    )
    stop.add_argument("--max-failures", type=_count, metavar="N", help="after N failures in a row")
    add("--pause", type=_seconds, default=0.0, metavar="SECONDS", help="between iterations")
    seen = parser.add_argument_group("what is observed")
    seen.add_argument(
        "--repo", metavar="DIR", help="git work tree: progress is new commits or changed files"
    )
    seen.add_argument("--junit", metavar="PATH", help="JUnit XML report, read after each run")
    seen.add_argument(
        "--tests-cmd",
        metavar="CMD",
        help="shell command run after each run: JUnit XML or JSON {passed,failed,total,flaky}",
    )
    seen.add_argument(
        "--success-cmd", metavar="CMD", help="shell command: exit 0 means the iteration succeeded"
    )
    seen.add_argument(
        "--progress-cmd", metavar="CMD", help="shell command printing the progress score"
    )
    seen.add_argument(
        "--sample-every",
        type=_seconds,
        default=DEFAULT_SAMPLE_EVERY_S,
        metavar="SECONDS",
        help=f"resource samples of CMD's process tree (default {DEFAULT_SAMPLE_EVERY_S:g})",
    )
    seen.add_argument(
        "--context-from",
        choices=tuple(CONTEXT_PARSERS),
        help="read context usage from CMD's stdout (teed)",
    )
    seen.add_argument(
        "--context-window",
        type=_count,
        metavar="N",
        help=f"the model's context window in tokens (default: a table, else "
        f"{DEFAULT_CONTEXT_WINDOW:,})",
    )
    remote = parser.add_argument_group("a remote tally (default: append to the local bus)")
    remote.add_argument("--url", metavar="URL", help="POST events to URL/api/v1/events")
    remote.add_argument("--token-file", metavar="FILE", help="bearer token for --url")
    remote.add_argument(
        "--spool",
        metavar="PATH",
        help="undelivered events (default DATA_DIR/loop-spool/LOOP_ID.jsonl)",
    )
    remote.add_argument(
        "--flush-timeout",
        type=_seconds,
        default=DEFAULT_FLUSH_TIMEOUT_S,
        metavar="SECONDS",
        help=f"at exit, time to deliver the spool (default {DEFAULT_FLUSH_TIMEOUT_S:g})",
    )
    add("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the agent to run")


def _url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoopUsageError(f"--url: {text!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise LoopUsageError(f"--url: {exc}") from None
    return text


def loop_options(args: argparse.Namespace, *, data_dir: Path, cwd: Path) -> LoopOptions:
    """Check ``args`` (from ``add_loop_arguments``) and make them ``LoopOptions``."""
    argv = list(args.cmd)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise LoopUsageError("give the command to run: tally loop [options] -- CMD [ARGS...]")
    if args.url is None:
        for flag, value in (("--token-file", args.token_file), ("--spool", args.spool)):
            if value is not None:
                raise LoopUsageError(f"{flag} needs --url")
    if args.junit is not None and args.tests_cmd is not None:
        raise LoopUsageError("give --junit or --tests-cmd, not both")
    if args.context_window is not None and args.context_from is None:
        raise LoopUsageError("--context-window needs --context-from")
    if not args.sample_every > 0:
        raise LoopUsageError("--sample-every must be more than 0 seconds")
    loop_id = args.loop_id if args.loop_id is not None else (cwd.name or "loop")
    if not loop_id:
        raise LoopUsageError("--loop-id must not be empty")
    repo = Path(args.repo) if args.repo is not None else None
    if repo is not None and not repo.is_dir():
        raise LoopUsageError(f"--repo {repo} is not a directory")
    url = _url(args.url) if args.url is not None else None
    spool = Path(args.spool) if args.spool is not None else None
    if url is not None and spool is None:
        spool = spool_path(data_dir, loop_id)
    return LoopOptions(
        argv=tuple(argv),
        loop_id=loop_id,
        max_iterations=args.max_iterations,
        stop_file=Path(args.stop_file) if args.stop_file is not None else None,
        until_success=args.until_success,
        max_failures=args.max_failures,
        pause_s=args.pause,
        repo=repo,
        junit=Path(args.junit) if args.junit is not None else None,
        tests_cmd=args.tests_cmd,
        success_cmd=args.success_cmd,
        progress_cmd=args.progress_cmd,
        sample_every_s=args.sample_every,
        context_from=args.context_from,
        context_window=args.context_window,
        data_dir=data_dir,
        url=url,
        spool=spool,
        flush_timeout_s=args.flush_timeout,
    )
