"""``tally loop``: check the options' world, pick the sink, run the loop, flush, exit.

Rule: the one entry point from ``server/cli.py``; errors before the loop starts
(no such command, ``--repo`` not a git work tree, a spool in use) stop it before any
event is written.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

from bus.writer import BusConfig
from server.loop import git
from server.loop.options import LoopOptions, LoopUsageError
from server.loop.runner import LoopRunner
from server.loop.sinks import EventSink, LocalSink, RemoteSink, Say
from server.loop.spool import Spool

__all__ = ["COMMAND_NOT_FOUND", "run_loop", "say_to_stderr"]

#: The shell's exit status for a command that cannot be found or run.
COMMAND_NOT_FOUND = 127


def say_to_stderr() -> Say:
    """A ``Say`` that writes whole lines to stderr, one thread at a time."""
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            sys.stderr.write(f"tally loop: {message}\n")
            sys.stderr.flush()

    return say


def _command_found(argv0: str) -> bool:
    if os.sep in argv0:
        return os.access(argv0, os.X_OK) and not Path(argv0).is_dir()
    return shutil.which(argv0) is not None


def _sink(options: LoopOptions, bus_config: BusConfig, bus_url: str | None, say: Say) -> EventSink:
    if options.url is None:
        return LocalSink(bus_url, options.data_dir, bus_config, say)
    assert options.spool is not None
    return RemoteSink(
        options.url,
        Spool(options.spool),
        say,
        token=options.token,
        flush_timeout_s=options.flush_timeout_s,
    )


def run_loop(
    options: LoopOptions,
    bus_config: BusConfig,
    bus_url: str | None = None,
    say: Say | None = None,
) -> int:
    """Run ``tally loop`` to its end; the exit status (see ``LoopRunner.run``).

    Events go to the bus at ``bus_url`` (``None``: the files in the data directory),
    or with ``options.url`` to a remote tally through the spool.
    """
    say = say or say_to_stderr()
    if not _command_found(options.argv[0]):
        say(f"{options.argv[0]}: command not found")
        return COMMAND_NOT_FOUND
    if options.repo is not None:
        try:
            git.check_repo(options.repo)
        except git.GitError as exc:
            raise LoopUsageError(f"--repo {options.repo}: {exc}") from None
    sink = _sink(options, bus_config, bus_url, say)
    try:
        return LoopRunner(options, sink, say).run()
    finally:
        sink.close()
