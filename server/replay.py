"""Replays from a bus: fold the log from its start, as of now or the past, on any backend.

After a compaction the start is the base snapshot (``server.live.compact``): the state
before the cut, folded then; the result is byte for byte the uncompacted log's.
A point before the base (``until_offset``, or ``until_ts`` before its clock)
raises ``NotRetained``.

Rule: this module opens buses (``bus.open_bus``) and reads them through the bus
contract; the folding itself is ``projections.replay``'s, pure. The ``async``
functions take an open bus; ``replay`` and ``replay_steps`` are the command
line's: they open the bus by URL and run their own event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bus.config import DEFAULT_CONFIG, BusConfig
from bus.contract import Bus, open_bus
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.replay import StepFold, fold_batch
from server.live.compact import Base, check_until, load_base

__all__ = ["fold_bus", "replay", "replay_bus", "replay_steps", "replay_steps_bus"]


async def _base(
    bus: Bus,
    data_dir: Path | None,
    config: ProjectionConfig,
    until_offset: int | None,
    until_ts: float | None,
) -> Base | None:
    """The base snapshot in ``data_dir`` to fold on from (``None``: there is none, fold from
    the log's start); ``NotRetained`` if ``until_*`` asks for a point before it."""
    base = await load_base(data_dir, bus, config) if data_dir is not None else None
    check_until(base, until_offset, until_ts)
    return base


async def fold_bus(
    projection: Projection,
    bus: Bus,
    *,
    until_offset: int | None = None,
    until_ts: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    decoder: msgspec.json.Decoder[Any] | None = None,
) -> Projection:
    """Fold the events of ``bus`` from ``projection``'s offset (a base's; else the first one held)
    into ``projection`` (see ``replay``)."""
    total = 0
    if progress is not None:
        total = await bus.end()
        if until_offset is not None:
            total = min(total, until_offset)
    start = max(projection.offset, await bus.first())
    async for batch in bus.read(start, until_offset, decoder=decoder):
        fold_batch(projection, batch, until_ts)
        if progress is not None:
            progress(min(batch.end, total), total)
    return projection


async def replay_bus(
    bus: Bus,
    *,
    config: ProjectionConfig,
    until_offset: int | None = None,
    until_ts: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    data_dir: Path | None = None,
) -> Projection:
    """Fold ``bus`` from its start (the base snapshot in ``data_dir``, if any) (see ``replay``)."""
    base = await _base(bus, data_dir, config, until_offset, until_ts)
    return await fold_bus(
        base.projection() if base is not None else Projection(config),
        bus,
        until_offset=until_offset,
        until_ts=until_ts,
        progress=progress,
    )


def replay(
    data_dir: Path,
    *,
    config: ProjectionConfig,
    bus_url: str | None = None,
    bus_config: BusConfig = DEFAULT_CONFIG,
    until_offset: int | None = None,
    until_ts: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Projection:
    """Fold the bus at ``bus_url`` (default: the files of ``data_dir``) into a fresh projection.

    ``until_offset`` keeps the events positioned before it (on the file bus a byte
    offset); ``until_ts`` keeps the events with ``ts <= until_ts`` wherever they
    are in the log. ``progress(done, total)`` is called after each batch with
    positions. Runs its own event loop: not for use inside one.
    """

    async def run() -> Projection:
        async with open_bus(bus_url, data_dir, bus_config) as bus:
            return await replay_bus(
                bus,
                config=config,
                until_offset=until_offset,
                until_ts=until_ts,
                progress=progress,
                data_dir=data_dir,
            )

    return anyio.run(run)


async def replay_steps_bus(
    bus: Bus,
    *,
    config: ProjectionConfig,
    step_s: float,
    until_offset: int | None = None,
    until_ts: float | None = None,
    data_dir: Path | None = None,
) -> bytes:
    """OpenMetrics with the state as of every ``step_s`` of event time (``StepFold``); after a
    compaction the history goes on from the base (in ``data_dir``): the whole log's sample
    sets from the first boundary at or after the base's clock."""
    base = await _base(bus, data_dir, config, until_offset, until_ts)
    start = base.projection() if base is not None else None
    steps = StepFold(
        config=config,
        step_s=step_s,
        until_ts=until_ts,
        start=start,
        log_start=base.log_start if base is not None else None,
    )
    first = await bus.first() if start is None else max(start.offset, await bus.first())
    async for batch in bus.read(first, until_offset):
        steps.add(batch)
    return steps.render()


def replay_steps(
    data_dir: Path,
    *,
    config: ProjectionConfig,
    step_s: float,
    bus_url: str | None = None,
    bus_config: BusConfig = DEFAULT_CONFIG,
    until_offset: int | None = None,
    until_ts: float | None = None,
) -> bytes:
    """``replay_steps_bus`` of the bus at ``bus_url``; runs its own event loop."""
    StepFold(config=config, step_s=step_s)  # a bad step fails before the bus is opened

    async def run() -> bytes:
        async with open_bus(bus_url, data_dir, bus_config) as bus:
            return await replay_steps_bus(
                bus,
                config=config,
                step_s=step_s,
                until_offset=until_offset,
                until_ts=until_ts,
                data_dir=data_dir,
            )

    return anyio.run(run)
