"""Samples of a real process tree: memory held by a grandchild, CPU burned by a child."""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil

from server.loop.sampler import ProcessTreeSampler, TreeSample

MIB = 1 << 20
HOLD = (
    "import subprocess, sys; subprocess.run([sys.executable, '-c', "
    '\'import sys, time; b = bytearray(b"x") * (40 << 20); print(1, flush=True); '
    "time.sleep(30)'])"
)
BURN = "import time\nwhile True: pass"


def test_memory_of_the_whole_tree() -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"1\n"  # holding now
        sampler = ProcessTreeSampler(proc.pid, 60, lambda s: None)
        sampler.start()
        sample = sampler.sample()
        sampler.stop()
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()  # the grandchild, by its pid
        proc.kill()
        proc.wait()
    assert sample is not None
    assert 40 * MIB < sample.rss_bytes < 40 * MIB + 80 * MIB


def test_cpu_and_the_sample_thread() -> None:
    proc = subprocess.Popen([sys.executable, "-c", BURN])
    got: list[TreeSample] = []
    two = threading.Event()

    def on_sample(sample: TreeSample) -> None:
        got.append(sample)
        if len(got) >= 2:
            two.set()

    sampler = ProcessTreeSampler(proc.pid, 0.1, on_sample)
    try:
        sampler.start()
        assert two.wait(30)
    finally:
        sampler.stop()
        proc.kill()
        proc.wait()
    assert max(s.cpu_percent for s in got) > 10  # one busy core is about 100
    assert sampler.sample() is None  # the tree is gone
