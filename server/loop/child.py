"""One child process of the loop: the agent, or a hook command, in a process group of its own.

Rule: the child gets tally's stdin, stdout and stderr untouched, unless its stdout is
teed (``--context-from``) or captured (hooks). It runs in its own process group, so a
signal tally forwards reaches everything it started; when tally owns the terminal,
the agent's group is made the terminal's foreground group while it runs (as a shell
does), so the agent may read the terminal and Ctrl-C reaches it directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Final

__all__ = ["Child", "exit_status"]

#: Seconds to wait for the tee to reach the end of the agent's output after it exited
#: (a descendant that keeps the pipe open must not hold up the loop).
TEE_DRAIN_S: Final = 2.0


def exit_status(returncode: int) -> int:
    """A shell's exit status for a ``Popen.returncode``: a signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _terminal() -> int | None:
    """The fd of the terminal tally runs in the foreground of, if any (stdin's)."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def _set_foreground(fd: int, pgid: int) -> None:
    """Make ``pgid`` the terminal's foreground group; SIGTTOU blocked, as tally may be
    in the background by now."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, pgid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Child:
    """Start ``argv`` in a new process group; ``wait`` for it; ``signal`` its group."""

    def __init__(
        self,
        argv: Sequence[str] | str,
        *,
        shell: bool = False,
        env: Mapping[str, str] | None = None,
        tee: Callable[[bytes], None] | None = None,
        capture: bool = False,
        stdout_to_stderr: bool = False,
        foreground: bool = False,
    ) -> None:
        stdout: int | IO[bytes] | None = None
        if tee is not None or capture:
            stdout = subprocess.PIPE
        elif stdout_to_stderr:
            stdout = 2  # hooks print to tally's stderr, the agent's stdout stays its own
        self._terminal = _terminal() if foreground else None
        self.proc = subprocess.Popen(
            argv,
            shell=shell,
            env=env,
            stdin=subprocess.DEVNULL if capture or stdout_to_stderr else None,
            stdout=stdout,
            process_group=0,
        )
        self.pgid = self.proc.pid
        if self._terminal is not None:
            _set_foreground(self._terminal, self.pgid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGCONT)  # in case it read the terminal too soon
        self._captured = bytearray()
        self._reader: threading.Thread | None = None
        if stdout is subprocess.PIPE:
            sink = tee if tee is not None else self._captured.extend
            self._reader = threading.Thread(
                target=self._pump, args=(sink, tee is not None), daemon=True
            )
            self._reader.start()

    def _pump(self, sink: Callable[[bytes], None], echo: bool) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        echoing = echo
        while chunk := os.read(fd, 65536):
            if echoing:
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(1, view) :]
                except OSError:  # our stdout went away: keep reading for the parser
                    echoing = False
            sink(chunk)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def wait(self) -> int:
        """Wait for the child to exit (and its output to be read); its ``returncode``."""
        try:
            returncode = self.proc.wait()
        finally:
            if self._terminal is not None:
                _set_foreground(self._terminal, os.getpgrp())
        if self._reader is not None:
            self._reader.join(TEE_DRAIN_S if self.proc.stdout is not None else None)
        if self.proc.stdout is not None and (self._reader is None or not self._reader.is_alive()):
            self.proc.stdout.close()
        return returncode

    @property
    def output(self) -> bytes:
        """What a ``capture`` child printed on stdout."""
        return bytes(self._captured)
