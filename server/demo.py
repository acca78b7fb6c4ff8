"""A synthetic workload for `tally serve --demo`: live numbers for a newcomer.

Conductor runs, message-bus traffic, API requests and two Ralph loops, a
small batch every ``period_s`` (one a second), appended through the same group committer as
HTTP ingest. Seeded, so two demos tell the same story. On an empty log the
demo first writes the past hour of the same story (``seed_history``: a batch
every ``PERIOD_S`` of event time, as live, some 30,000 events), so the
history the live page draws is there at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Final

import anyio
import anyio.abc
import msgspec

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
    ResourceSample,
    RunFinished,
    RunQueued,
    RunStarted,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from server.live.group_commit import GroupCommitter

__all__ = ["demo_batches", "run_demo", "seed_history"]

#: How much past the demo writes on an empty log.
HISTORY_S: Final = 3600.0
#: One batch per this much time, live and in the past hour alike, so rates agree at "now".
PERIOD_S: Final = 1.0
#: Past batches appended per submission.
_SEED_CHUNK: Final = 120

AGENTS = ("claude", "codex", "gemini")
PROJECTS = ("website", "billing")
MESSAGE_TYPES = ("FACT", "PROGRESS", "DECISION", "QUESTION")


class _Loop:
    def __init__(self, loop_id: str) -> None:
        self.loop_id = loop_id
        self.iteration = 0
        self.session = 0
        self.context = 10.0
        self.passing = 5


def demo_batches(seed: int = 7) -> Iterator[list[Event]]:
    """An endless stream of small batches; events carry no ts (the writer stamps them)."""
    rng = random.Random(seed)
    loops = [_Loop("ralph-docs"), _Loop("ralph-api")]
    running: list[tuple[str, str, str]] = []
    run_no = 0
    first: list[Event] = [LoopStarted(loop_id=loop.loop_id) for loop in loops]
    for loop in loops:
        first.append(SessionStarted(loop_id=loop.loop_id, session_id=f"{loop.loop_id}-s0"))
    yield first
    while True:
        batch: list[Event] = []
        if rng.random() < 0.5:
            run_no += 1
            run = (f"run-{run_no:05d}", rng.choice(PROJECTS), rng.choice(AGENTS))
            batch.append(RunQueued(run_id=run[0], project=run[1], agent=run[2]))
            batch.append(RunStarted(run_id=run[0], project=run[1], agent=run[2]))
            running.append(run)
        if running and rng.random() < (0.45 if len(running) < 12 else 0.6):  # about 12 active
            run_id, project, agent = running.pop(0)
            failed = rng.random() < 0.15
            batch.append(
                RunFinished(
                    run_id=run_id,
                    project=project,
                    agent=agent,
                    status="failed" if failed else "completed",
                    exit_code=1 if failed else 0,
                    duration_s=rng.lognormvariate(3.5, 1.0),
                )
            )
        if rng.random() < 0.05:
            batch.append(AgentFallback(from_type="claude", to_type="codex"))
        for _ in range(rng.randint(0, 4)):
            batch.append(
                BusMessage(
                    project=rng.choice(PROJECTS),
                    task=f"task-{rng.randint(1, 5)}",
                    msg_type=rng.choice(MESSAGE_TYPES),
                )
            )
        for _ in range(rng.randint(1, 3)):
            batch.append(
                ApiRequest(
                    method=rng.choice(("GET", "GET", "GET", "POST")),
                    status=rng.choice((200, 200, 200, 201, 404, 500)),
                    path="/api/v1/runs",
                    duration_s=rng.expovariate(40.0),
                )
            )
        loop = rng.choice(loops)
        batch.extend(_loop_step(loop, rng))
        yield batch


def _loop_step(loop: _Loop, rng: random.Random) -> list[Event]:
    out: list[Event] = []
    loop.iteration += 1
    progress = rng.random() < 0.6
    out.append(
        IterationCompleted(
            loop_id=loop.loop_id,
            iteration=loop.iteration,
            duration_s=rng.lognormvariate(1.0, 0.8),
            success=rng.random() < 0.85,
            made_progress=progress,
            progress_score=round(rng.random(), 3) if progress else None,
            files_changed=rng.randint(0, 6) if progress else 0,
        )
    )
    loop.context = min(100.0, loop.context + rng.uniform(3, 12))
    out.append(ContextUsage(loop_id=loop.loop_id, percent=round(loop.context, 1)))
    if loop.context > 85:
        old = f"{loop.loop_id}-s{loop.session}"
        out.append(ContextReboot(loop_id=loop.loop_id, session_id=old, percent=loop.context))
        out.append(
            SessionEnded(loop_id=loop.loop_id, session_id=old, duration_s=rng.uniform(60, 900))
        )
        loop.session += 1
        loop.context = 8.0
        out.append(
            SessionStarted(loop_id=loop.loop_id, session_id=f"{loop.loop_id}-s{loop.session}")
        )
    if loop.iteration % 3 == 0:
        loop.passing = max(0, min(40, loop.passing + rng.randint(-1, 3)))
        failed = rng.randint(0, 2)
        out.append(
            TestsReported(
                loop_id=loop.loop_id,
                passed=loop.passing,
                failed=failed,
                total=loop.passing + failed,
                flaky=rng.randint(0, 1),
            )
        )
    out.append(
        ResourceSample(
            loop_id=loop.loop_id,
            rss_bytes=rng.randint(200, 900) * 1024 * 1024,
            cpu_percent=round(rng.uniform(5, 180), 1),
        )
    )
    return out


async def seed_history(
    committer: GroupCommitter,
    batches: Iterator[list[Event]],
    *,
    now: float,
    history_s: float = HISTORY_S,
    period_s: float = PERIOD_S,
) -> int:
    """Append the next batches of ``batches`` stamped one per ``period_s`` over the
    ``history_s`` before ``now``; how many events."""
    count = int(history_s // period_s)
    events: list[Event] = []
    written = 0
    for i in range(count):
        ts = now - history_s + i * period_s
        events.extend(msgspec.structs.replace(ev, ts=ts) for ev in next(batches))
        if (i + 1) % _SEED_CHUNK == 0 or i + 1 == count:
            await committer.submit(events)
            written += len(events)
            events = []
    return written


async def _empty(bus: Bus) -> bool:
    """Whether the log holds no line at all (its first batch, if any, says)."""
    async for batch in bus.read(await bus.first()):
        return not (batch.events or batch.corrupt or batch.unknown)
    return True


async def run_demo(
    committer: GroupCommitter,
    *,
    period_s: float = PERIOD_S,
    seed: int = 7,
    history_s: float = HISTORY_S,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Write the past ``history_s`` if the log is empty (then report started), then a demo
    batch every ``period_s`` until cancelled."""
    batches = demo_batches(seed)
    bus = committer.bus
    if history_s > 0 and await _empty(bus):
        await seed_history(committer, batches, now=time.time(), history_s=history_s)
    task_status.started()
    for batch in batches:
        await committer.submit(batch)
        await anyio.sleep(period_s)
