"""Replay on two cores: the traffic part folded here, the lifecycle part in a forked child.

Rule: the result is ``server.replay.replay``'s, byte for byte, or that replay
itself. Any corrupt line in the stretch (a tick does not check the fields it skips),
a child that fails, or a platform without ``fork`` falls back to one pass; so does a
log too small to pay for the fork (``min_bytes``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

import anyio
import msgspec

from bus.config import DEFAULT_CONFIG, BusConfig
from bus.contract import open_bus
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.partition import LIFECYCLE, TRAFFIC, Part, PartFold, merge
from server.live.compact import list_bases
from server.replay import fold_bus, replay

__all__ = ["MIN_PARALLEL_BYTES", "replay_parallel"]

log = logging.getLogger("tally.replay")

#: Below this many bytes of log, one pass is faster than forking (measured: ~30 ms).
MIN_PARALLEL_BYTES: Final = 8 << 20

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(PartFold)


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a part reads from: each process opens the bus by URL on its own."""

    data_dir: Path
    url: str | None
    config: BusConfig


def _fold_part(
    source: _Source,
    part: Part,
    *,
    config: ProjectionConfig,
    until_offset: int,
    until_ts: float | None,
    progress: Callable[[int, int], None] | None = None,
) -> PartFold:
    async def run() -> Projection:
        async with open_bus(source.url, source.data_dir, source.config) as bus:
            return await fold_bus(
                Projection(config, ticks=part.ticks),
                bus,
                until_offset=until_offset,
                until_ts=until_ts,
                progress=progress,
                decoder=part.decoder,
            )

    return PartFold(part=part.name, state=anyio.run(run).export_state())


def _child(
    conn: Connection,
    source: _Source,
    config: ProjectionConfig,
    until_offset: int,
    until_ts: float | None,
) -> None:
    try:
        conn.send_bytes(
            _encoder.encode(
                _fold_part(
                    source, LIFECYCLE, config=config, until_offset=until_offset, until_ts=until_ts
                )
            )
        )
    finally:
        conn.close()


def _shape(source: _Source) -> tuple[int, int]:
    """``(end, bytes held)`` of the bus."""

    async def run() -> tuple[int, int]:
        async with open_bus(source.url, source.data_dir, source.config) as bus:
            return await bus.end(), await bus.size()

    return anyio.run(run)


def replay_parallel(
    data_dir: Path,
    *,
    config: ProjectionConfig,
    bus_url: str | None = None,
    bus_config: BusConfig = DEFAULT_CONFIG,
    until_offset: int | None = None,
    until_ts: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    min_bytes: int = MIN_PARALLEL_BYTES,
) -> Projection:
    """``replay(...)`` folded on two cores where that is exact and worth it.

    The fork happens before any event loop runs in this process; parent and child
    each open the bus by URL (on JetStream, each reads the stream over its own
    connection).
    """
    source = _Source(data_dir, bus_url, bus_config)
    end, held = _shape(source)
    until = end if until_offset is None else min(until_offset, end)

    def one_pass() -> Projection:
        return replay(
            data_dir,
            config=config,
            bus_url=bus_url,
            bus_config=bus_config,
            until_offset=until,
            until_ts=until_ts,
            progress=progress,
        )

    if (
        held < min_bytes
        or list_bases(data_dir)  # a compacted log: one pass from its base
        or config.rules  # a rule may read events of both halves: one fold holds its family
        or config.event_types  # the halves decode the built-in types only
        or (os.cpu_count() or 1) < 2
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return one_pass()
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_child, args=(send, source, config, until, until_ts), daemon=True
    )
    child.start()
    send.close()
    try:
        mine = _fold_part(
            source,
            TRAFFIC,
            config=config,
            until_offset=until,
            until_ts=until_ts,
            progress=progress,
        )
        try:
            theirs = _decoder.decode(receive.recv_bytes())
        except (EOFError, OSError, msgspec.DecodeError) as exc:
            log.warning("parallel replay: the lifecycle fold failed (%s); one pass instead", exc)
            return one_pass()
    finally:
        receive.close()
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
    if mine.state.corrupt_lines or theirs.state.corrupt_lines:
        return one_pass()  # quarantines the corrupt lines, and is exact
    log.debug("replayed %d bytes in two parts: %s and %s", until, mine.part, theirs.part)
    return merge(mine.state, theirs.state, config)
