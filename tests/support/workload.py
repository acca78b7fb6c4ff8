"""A deterministic, realistic mix of every event type, for benchmarks and tests.

Rule: the same ``(n, seed, start_ts)`` always gives the same events, with ``ts``
strictly increasing; nothing here reads the clock or the environment.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Final, Literal

from bus.contract import Bus
from bus.events import (
    AgentFallback,
    ApiRequest,
    BusMessage,
    ContextReboot,
    ContextUsage,
    Event,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    MetricsReset,
    MetricUpdate,
    ResourceSample,
    RunFinished,
    RunQueued,
    RunStarted,
    SessionEnded,
    SessionStarted,
    TestsReported,
    encode_events,
)
from bus.writer import BusConfig, BusWriter

__all__ = ["MEAN_GAP_S", "RESET_PREFIX", "append_log", "mixed_events", "write_log"]

#: ``metrics_reset`` events clear the families starting with this prefix.
RESET_PREFIX: Final = "app_batch_"

_AGENTS: Final = ("claude", "codex", "gemini")
_PROJECTS: Final = ("alpha", "beta", "gamma")
_MSG_TYPES: Final = ("FACT", "PROGRESS", "DECISION", "ERROR", "QUESTION", "RUN_START")
_ROUTES: Final = ("/api/v1/runs", "/api/v1/projects", "/api/v1/messages", "/metrics", "/healthz")
_LOOPS: Final = ("ralph-a", "ralph-b", "ralph-c")

#: (kind, weight): how often each step happens.
_STEPS: Final = (
    ("api", 24.0),
    ("message", 20.0),
    ("queue", 5.0),
    ("start", 5.0),
    ("finish", 5.0),
    ("fallback", 0.6),
    ("iteration", 12.0),
    ("usage", 6.0),
    ("tests", 4.0),
    ("resources", 5.0),
    ("metric", 8.0),
    ("stop", 0.1),
)
_KINDS: Final = tuple(kind for kind, _ in _STEPS)
_WEIGHTS: Final = tuple(weight for _, weight in _STEPS)
_RESET_EVERY: Final = 2_000


@dataclass
class _Loop:
    loop_id: str
    name: str = ""  # the loop_id without its period suffix (``loop_period_s``)
    running: bool = False
    iteration: int = 0
    session: int = 0
    session_started: float = 0.0
    context: float = 5.0
    failing_tests: int = 0


@dataclass
class _Workload:
    rng: random.Random
    ts: float
    gap_scale: float = 1.0
    loop_period_s: float | None = None
    queued: deque[tuple[str, str, str]] = field(default_factory=deque)
    running: list[tuple[str, str, str, float]] = field(default_factory=list)
    runs: int = 0
    loops: list[_Loop] = field(default_factory=lambda: [_Loop(name, name) for name in _LOOPS])

    def tick(self) -> float:
        self.ts += (0.0005 + self.rng.expovariate(100.0)) * self.gap_scale
        return round(self.ts, 6)

    def steps(self) -> Iterator[Event]:
        count = 0
        while True:
            count += 1
            if count % _RESET_EVERY == _RESET_EVERY // 2:
                yield MetricsReset(ts=self.tick(), prefix=RESET_PREFIX)
                continue
            kind = self.rng.choices(_KINDS, _WEIGHTS)[0]
            yield from self.step(kind)

    def step(self, kind: str) -> Iterator[Event]:
        rng = self.rng
        match kind:
            case "api":
                yield ApiRequest(
                    ts=self.tick(),
                    method=rng.choices(("GET", "POST", "DELETE"), (8, 3, 1))[0],
                    status=rng.choices((200, 201, 204, 400, 404, 500), (60, 10, 5, 4, 6, 2))[0],
                    path=rng.choice(_ROUTES),
                    duration_s=round(rng.lognormvariate(-4.0, 1.0), 6),
                )
            case "message":
                run = rng.choice(self.running) if self.running else None
                yield BusMessage(
                    ts=self.tick(),
                    project=run[1] if run else rng.choice(_PROJECTS),
                    msg_type=rng.choice(_MSG_TYPES),
                    task=f"task-{rng.randrange(20)}",
                    run_id=run[0] if run else "",
                    msg_id=f"m{rng.getrandbits(48):012x}",
                )
            case "queue" | "start" | "finish" | "fallback":
                yield from self.conductor(kind)
            case "iteration" | "usage" | "tests" | "resources" | "stop":
                yield from self.ralph(kind, rng.choice(self.loops))
            case "metric":
                yield self.metric()

    def conductor(self, kind: str) -> Iterator[Event]:
        rng = self.rng
        if kind == "finish" and not self.running:
            kind = "start"
        if kind == "start" and not self.queued:
            kind = "queue"
        if kind == "queue":
            self.runs += 1
            run = (f"run-{self.runs:07d}", rng.choice(_PROJECTS), rng.choice(_AGENTS))
            self.queued.append(run)
            yield RunQueued(ts=self.tick(), run_id=run[0], project=run[1], agent=run[2])
        elif kind == "start":
            run_id, project, agent = self.queued.popleft()
            self.running.append((run_id, project, agent, self.ts))
            yield RunStarted(ts=self.tick(), run_id=run_id, project=project, agent=agent)
        elif kind == "finish":
            run_id, project, agent, started = self.running.pop(rng.randrange(len(self.running)))
            failed = rng.random() < 0.15
            yield RunFinished(
                ts=self.tick(),
                run_id=run_id,
                project=project,
                agent=agent,
                status="failed" if failed else "completed",
                exit_code=rng.choice((1, 2, 137)) if failed else 0,
                duration_s=round(self.ts - started + rng.uniform(1, 900), 3),
            )
        else:
            from_type, to_type = rng.sample(_AGENTS, 2)
            run_id = self.running[-1][0] if self.running else ""
            yield AgentFallback(ts=self.tick(), from_type=from_type, to_type=to_type, run_id=run_id)

    def ralph(self, kind: str, loop: _Loop) -> Iterator[Event]:
        rng = self.rng
        if not loop.running:
            loop.running = True
            if self.loop_period_s is not None:  # a loop that comes back later is another loop
                loop_id = f"{loop.name}-{int(self.ts // self.loop_period_s)}"
                if loop_id != loop.loop_id:
                    loop.loop_id, loop.iteration, loop.failing_tests = loop_id, 0, 0
            yield LoopStarted(ts=self.tick(), loop_id=loop.loop_id)
            yield from self.new_session(loop)
        match kind:
            case "iteration":
                loop.iteration += 1
                progress = rng.random() < 0.6
                yield IterationCompleted(
                    ts=self.tick(),
                    loop_id=loop.loop_id,
                    iteration=loop.iteration,
                    duration_s=round(rng.lognormvariate(1.5, 0.8), 4),
                    success=rng.random() < 0.85,
                    made_progress=progress,
                    progress_score=round(rng.random(), 3) if progress else 0.0,
                    files_changed=rng.randrange(1, 12) if progress else 0,
                )
                loop.context = min(100.0, loop.context + rng.uniform(4, 12))
            case "usage":
                percent = round(loop.context, 2)
                yield ContextUsage(ts=self.tick(), loop_id=loop.loop_id, percent=percent)
                if loop.context >= 85:
                    yield ContextReboot(
                        ts=self.tick(),
                        loop_id=loop.loop_id,
                        session_id=f"{loop.loop_id}-s{loop.session}",
                        percent=percent,
                    )
                    yield from self.end_session(loop)
                    yield from self.new_session(loop)
            case "tests":
                total = 120 + loop.iteration // 10
                loop.failing_tests = max(0, loop.failing_tests + rng.choice((-2, -1, 0, 0, 1)))
                failed = min(total, loop.failing_tests)
                yield TestsReported(
                    ts=self.tick(),
                    loop_id=loop.loop_id,
                    passed=total - failed,
                    failed=failed,
                    total=total,
                    flaky=rng.choice((0, 0, 0, 1, 2)),
                )
            case "resources":
                yield ResourceSample(
                    ts=self.tick(),
                    loop_id=loop.loop_id,
                    rss_bytes=rng.randrange(200, 900) << 20,
                    cpu_percent=round(rng.uniform(0, 180), 1),
                )
            case "stop":
                yield from self.end_session(loop)
                loop.running = False
                yield LoopStopped(ts=self.tick(), loop_id=loop.loop_id, reason="done")

    def new_session(self, loop: _Loop) -> Iterator[Event]:
        loop.session += 1
        loop.session_started = self.ts
        loop.context = self.rng.uniform(3, 10)
        yield SessionStarted(
            ts=self.tick(), loop_id=loop.loop_id, session_id=f"{loop.loop_id}-s{loop.session}"
        )

    def end_session(self, loop: _Loop) -> Iterator[Event]:
        yield SessionEnded(
            ts=self.tick(),
            loop_id=loop.loop_id,
            session_id=f"{loop.loop_id}-s{loop.session}",
            duration_s=round(self.ts - loop.session_started, 3),
        )

    def metric(self) -> MetricUpdate:
        rng = self.rng
        match rng.choice(("counter", "gauge", "histogram", "summary")):
            case "counter":
                return MetricUpdate(
                    ts=self.tick(),
                    name=rng.choice(("app_jobs_total", "app_batch_items_total")),
                    kind="counter",
                    value=float(rng.randrange(1, 5)),
                    labels={"queue": rng.choice(("fast", "slow")), "region": "eu"},
                    help="Jobs processed.",
                )
            case "gauge":
                op: Literal["set", "inc", "dec"] = rng.choice(("set", "inc", "dec"))
                return MetricUpdate(
                    ts=self.tick(),
                    name="app_queue_depth",
                    kind="gauge",
                    value=float(rng.randrange(0, 50) if op == "set" else 1),
                    labels={"queue": rng.choice(("fast", "slow"))},
                    op=op,
                )
            case "histogram":
                return MetricUpdate(
                    ts=self.tick(),
                    name="app_batch_latency_seconds",
                    kind="histogram",
                    value=round(rng.lognormvariate(-2.0, 1.0), 6),
                    labels={"stage": rng.choice(("parse", "fold", "render"))},
                )
            case _:
                return MetricUpdate(
                    ts=self.tick(),
                    name="app_payload_bytes",
                    kind="summary",
                    value=float(rng.randrange(100, 100_000)),
                    labels={"kind": rng.choice(("event", "snapshot"))},
                )


#: The mean gap between two events' ``ts`` (seconds) at ``gap_scale=1``.
MEAN_GAP_S: Final = 0.0005 + 1 / 100.0


def mixed_events(
    n: int,
    seed: int = 42,
    start_ts: float = 1_700_000_000.0,
    *,
    gap_scale: float = 1.0,
    loop_period_s: float | None = None,
) -> Iterator[Event]:
    """``n`` events of every type in a realistic mix (a ``metrics_reset`` every 2,000).

    The gaps between ``ts`` are ``gap_scale`` times the usual (``MEAN_GAP_S`` on
    average). With ``loop_period_s``, a Ralph loop that starts again in a later period
    of that length is a new loop (``ralph-a-<period>``), so loops come and go.
    """
    workload = _Workload(random.Random(seed), start_ts, gap_scale, loop_period_s)
    return islice(workload.steps(), n)


def write_log(data_dir: Path, n: int, seed: int = 42, batch: int = 1000) -> int:
    """Append ``mixed_events(n, seed)`` in batches (durability ``never``); return the end offset."""
    end = 0
    events = mixed_events(n, seed)
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        while chunk := list(islice(events, batch)):
            data = encode_events(chunk)
            end = writer.append_encoded(data, len(chunk))[0] + len(data)
    return end


async def append_log(bus: Bus, n: int, seed: int = 42, batch: int = 1000) -> int:
    """``write_log`` through the bus contract, on any backend (the same batches); the end."""
    events = mixed_events(n, seed)
    while chunk := list(islice(events, batch)):
        await bus.append_encoded(encode_events(chunk), len(chunk))
    await bus.sync()
    return await bus.end()
