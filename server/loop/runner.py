"""The loop: run the agent once per iteration and write the events around each run.

Rule: tally observes and never steers the agent: the agent's exit code is kept, its
stdin, stdout and stderr are its own, and nothing tally observes (git, reports,
hooks, the remote tally) can fail an iteration or stop the loop; such trouble is
one line on stderr. The loop stops only for the reasons in ``StopReason``.

Per iteration, in order: ``session_started``, ``resource_sample`` every interval
while the agent runs, then one batch: ``context_usage`` (when the agent reported
it), ``iteration_completed``, ``tests_reported`` (when a report was read),
``session_ended`` and ``context_reboot`` (each run is a fresh context).
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from bus.events import (
    ContextReboot,
    ContextUsage,
    Event,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    ResourceSample,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from server.loop import git
from server.loop.child import Child, exit_status
from server.loop.context import CONTEXT_PARSERS, ContextParser, context_window
from server.loop.junit import ReportError, TestCounts, parse_junit, parse_tests_output
from server.loop.options import LoopOptions
from server.loop.sampler import ProcessTreeSampler, TreeSample
from server.loop.sinks import EventSink, Say

__all__ = ["LoopRunner", "StopReason"]

#: The signals tally forwards to the running child, and stops the loop on.
FORWARDED: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopReason(enum.StrEnum):
    """Why a loop stopped: ``loop_stopped.reason`` (a signal is ``signal:SIGINT`` etc.)."""

    MAX_ITERATIONS = "max_iterations"
    STOP_FILE = "stop_file"
    UNTIL_SUCCESS = "until_success"
    MAX_FAILURES = "max_failures"
    SIGNAL = "signal"


@dataclass
class _Streaks:
    successes: int = 0
    failures: int = 0

    def record(self, success: bool) -> None:
        if success:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1


class _FileStamp:
    """A file's identity and change time, to tell a fresh report from last iteration's."""

    @staticmethod
    def of(path: Path) -> tuple[int, int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class LoopRunner:
    """Runs ``options.argv`` once per iteration until a stop reason, sending events to ``sink``."""

    def __init__(self, options: LoopOptions, sink: EventSink, say: Say) -> None:
        self.options = options
        self._sink = sink
        self._say = say
        self._run_id = uuid.uuid4().hex[:8]
        self._signal: int | None = None
        self._wakeup = threading.Event()
        self._child: Child | None = None
        self._context_percent: float | None = None
        self.iterations = 0

    # -- signals ---------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = self._signal or signum
        self._wakeup.set()
        child = self._child
        if child is not None:
            child.signal(signum)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        old = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run the loop; tally's exit status: the last run's, or 128 + N after signal N."""
        o = self.options
        streaks = _Streaks()
        status = 0
        with self._signals():
            self._sink.send([LoopStarted(loop_id=o.loop_id)])
            while True:
                reason = self._before_iteration()
                if reason is not None:
                    break
                self.iterations += 1
                success, returncode = self._iteration(self.iterations)
                status = exit_status(returncode)
                streaks.record(success)
                reason = self._after_iteration(streaks)
                if reason is not None:
                    break
                if o.pause_s > 0:
                    self._wakeup.wait(o.pause_s)
            self._sink.send([LoopStopped(loop_id=o.loop_id, reason=reason)])
        return 128 + self._signal if self._signal is not None else status

    def _signal_reason(self) -> str | None:
        if self._signal is None:
            return None
        return f"{StopReason.SIGNAL}:{signal.Signals(self._signal).name}"

    def _before_iteration(self) -> str | None:
        o = self.options
        if (reason := self._signal_reason()) is not None:
            return reason
        if o.stop_file is not None and o.stop_file.exists():
            return StopReason.STOP_FILE
        return None

    def _after_iteration(self, streaks: _Streaks) -> str | None:
        o = self.options
        if (reason := self._signal_reason()) is not None:
            return reason
        if o.until_success is not None and streaks.successes >= o.until_success:
            return StopReason.UNTIL_SUCCESS
        if o.max_failures is not None and streaks.failures >= o.max_failures:
            return StopReason.MAX_FAILURES
        if o.max_iterations is not None and self.iterations >= o.max_iterations:
            return StopReason.MAX_ITERATIONS
        return None

    # -- one iteration ------------------------------------------------------------------

    def _iteration(self, iteration: int) -> tuple[bool, int]:
        """Run the agent once and write its events; (success, the agent's returncode)."""
        o = self.options
        loop_id = o.loop_id
        session_id = f"{self._run_id}-{iteration}"
        before = self._repo_snapshot()
        report_stamp = _FileStamp.of(o.junit) if o.junit is not None else None
        parser: ContextParser | None = (
            CONTEXT_PARSERS[o.context_from]() if o.context_from is not None else None
        )
        self._sink.send([SessionStarted(loop_id=loop_id, session_id=session_id)])
        started = time.monotonic()
        child = Child(
            o.argv,
            tee=parser.feed if parser is not None else None,
            env=self._env(iteration),
            foreground=True,
        )
        self._child = child
        if self._signal is not None:  # arrived while the child was being started
            child.signal(self._signal)
        sampler = ProcessTreeSampler(child.pgid, o.sample_every_s, self._sample)
        sampler.start()
        try:
            returncode = child.wait()
        finally:
            self._child = None
            sampler.stop()
        duration = time.monotonic() - started
        if returncode == -signal.SIGINT and self._signal is None:
            self._signal = signal.SIGINT  # Ctrl-C at the terminal went to the agent alone
        interrupted = self._signal is not None

        events: list[Event] = []
        if parser is not None and (percent := self._context(parser)) is not None:
            self._context_percent = percent
            events.append(ContextUsage(loop_id=loop_id, percent=percent))
        success = returncode == 0
        if o.success_cmd is not None and not interrupted:
            success = self._hook_status(o.success_cmd, iteration, returncode) == 0
        changes = self._changes(before)
        score = None
        if o.progress_cmd is not None and not interrupted:
            score = self._progress_score(o.progress_cmd, iteration, returncode)
        events.append(
            IterationCompleted(
                loop_id=loop_id,
                iteration=iteration,
                duration_s=duration,
                success=success,
                made_progress=changes.made_progress if changes is not None else False,
                progress_score=score,
                files_changed=len(changes.files) if changes is not None else 0,
            )
        )
        counts = self._tests(iteration, returncode, report_stamp, interrupted)
        if counts is not None:
            events.append(
                TestsReported(
                    loop_id=loop_id,
                    passed=counts.passed,
                    failed=counts.failed,
                    total=counts.total,
                    flaky=counts.flaky,
                )
            )
        events += [
            SessionEnded(loop_id=loop_id, session_id=session_id, duration_s=duration),
            ContextReboot(
                loop_id=loop_id, session_id=session_id, percent=self._context_percent or 0.0
            ),
        ]
        self._sink.send(events)
        return success, returncode

    def _env(self, iteration: int, returncode: int | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "TALLY_LOOP_ID": self.options.loop_id,
            "TALLY_ITERATION": str(iteration),
        }
        if returncode is not None:
            env["TALLY_EXIT_CODE"] = str(exit_status(returncode))
        return env

    def _sample(self, sample: TreeSample) -> None:
        self._sink.send(
            [
                ResourceSample(
                    loop_id=self.options.loop_id,
                    rss_bytes=sample.rss_bytes,
                    cpu_percent=sample.cpu_percent,
                )
            ]
        )

    # -- what is observed ------------------------------------------------------------------

    def _context(self, parser: ContextParser) -> float | None:
        reading = parser.reading()
        if reading is None:
            self._say(f"{self.options.context_from}: no token usage in the agent's output")
            return None
        window = self.options.context_window or reading.window or context_window(reading.model)
        return reading.percent(window)

    def _repo_snapshot(self) -> git.RepoSnapshot | None:
        if self.options.repo is None:
            return None
        try:
            return git.snapshot(self.options.repo)
        except git.GitError as exc:
            self._say(f"--repo {self.options.repo}: {exc}")
            return None

    def _changes(self, before: git.RepoSnapshot | None) -> git.Changes | None:
        if self.options.repo is None or before is None:
            return None
        try:
            return git.changes_since(self.options.repo, before)
        except git.GitError as exc:
            self._say(f"--repo {self.options.repo}: {exc}")
            return None

    def _hook(self, cmd: str, iteration: int, returncode: int, *, capture: bool) -> Child:
        child = Child(
            cmd,
            shell=True,
            env=self._env(iteration, returncode),
            capture=capture,
            stdout_to_stderr=not capture,
        )
        self._child = child
        try:
            child.wait()
        finally:
            self._child = None
        return child

    def _hook_status(self, cmd: str, iteration: int, returncode: int) -> int:
        return exit_status(self._hook(cmd, iteration, returncode, capture=False).proc.returncode)

    def _progress_score(self, cmd: str, iteration: int, returncode: int) -> float | None:
        child = self._hook(cmd, iteration, returncode, capture=True)
        text = child.output.decode(errors="replace").strip()
        try:
            score = float(text.split()[-1]) if text else math.nan
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            self._say(f"--progress-cmd printed {text[:80]!r}, not a number: no progress score")
            return None
        return score

    def _tests(
        self,
        iteration: int,
        returncode: int,
        report_stamp: tuple[int, int, int, int] | None,
        interrupted: bool,
    ) -> TestCounts | None:
        o = self.options
        try:
            if o.junit is not None:
                stamp = _FileStamp.of(o.junit)
                if stamp is None:
                    self._say(f"--junit {o.junit}: no report")
                    return None
                if stamp == report_stamp:
                    return None  # not rewritten this iteration: no new test run
                return parse_junit(o.junit.read_bytes())
            if o.tests_cmd is not None and not interrupted:
                child = self._hook(o.tests_cmd, iteration, returncode, capture=True)
                return parse_tests_output(child.output)
        except (OSError, ReportError) as exc:
            what = f"--junit {o.junit}" if o.junit is not None else "--tests-cmd"
            self._say(f"{what}: {exc}; no tests reported")
        return None
