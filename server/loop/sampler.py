"""Resource samples of the agent's whole process tree, taken on a thread every interval.

Rule: memory is the sum of the resident set sizes of the child and all its
descendants at the moment of the sample (pages shared between them count once per
process); CPU is the tree's CPU time spent since the previous sample over the wall
time between them, in percent of one core (200 = two cores busy). psutil reads the
processes, on every platform it supports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

__all__ = ["ProcessTreeSampler", "TreeSample", "cpu_seconds"]


class TreeSample:
    """One sample: resident bytes and CPU percent of the tree."""

    __slots__ = ("cpu_percent", "rss_bytes")

    def __init__(self, rss_bytes: int, cpu_percent: float) -> None:
        self.rss_bytes = rss_bytes
        self.cpu_percent = cpu_percent


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of ``proc`` and of the children it has waited for, in seconds."""
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


class ProcessTreeSampler:
    """Samples the tree rooted at ``pid`` every ``interval_s`` until ``stop()``.

    Each process is known by (pid, create time), so a reused pid is a new process.
    The first sample comes one interval after ``start()``; its CPU is measured from
    then.
    """

    def __init__(
        self, pid: int, interval_s: float, on_sample: Callable[[TreeSample], None]
    ) -> None:
        self._root_pid = pid
        self._interval_s = interval_s
        self._on_sample = on_sample
        self._stopped = threading.Event()
        self._cpu: dict[tuple[int, float], float] = {}
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._thread = threading.Thread(target=self._run, name="tally-loop-sampler", daemon=True)
        self._last = time.monotonic()

    def start(self) -> None:
        self.sample()  # the baseline: CPU times as of now
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            sample = self.sample()
            if sample is not None and not self._stopped.is_set():
                self._on_sample(sample)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self._root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        out = []
        for proc in procs:
            try:
                key = (proc.pid, proc.create_time())
            except psutil.Error:
                continue
            out.append(self._procs.setdefault(key, proc))
        return out

    def sample(self) -> TreeSample | None:
        """Sample the tree now; ``None`` when it is gone."""
        now = time.monotonic()
        rss = 0
        cpu_delta = 0.0
        seen: dict[tuple[int, float], float] = {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    rss += proc.memory_info().rss
                    cpu = cpu_seconds(proc)
            except psutil.Error:  # exited between listing and reading
                continue
            seen[key] = cpu
            cpu_delta += max(cpu - self._cpu.get(key, 0.0), 0.0)
        elapsed = now - self._last
        self._last = now
        self._cpu = seen
        self._procs = {k: p for k, p in self._procs.items() if k in seen}
        if not seen:
            return None
        percent = 100.0 * cpu_delta / elapsed if elapsed > 0 else 0.0
        return TreeSample(rss_bytes=rss, cpu_percent=percent)
