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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

import msgspec

from bus.reader import BusReader
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.partition import LIFECYCLE, TRAFFIC, Part, PartFold, merge
from server.replay import fold_reader, replay

__all__ = ["MIN_PARALLEL_BYTES", "replay_parallel"]

log = logging.getLogger("tally.replay")

#: Below this many bytes of log, one pass is faster than forking (measured: ~30 ms).
MIN_PARALLEL_BYTES: Final = 8 << 20

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(PartFold)


def _fold_part(
    data_dir: Path,
    part: Part,
    *,
    config: ProjectionConfig,
    until_offset: int,
    until_ts: float | None,
    progress: Callable[[int, int], None] | None = None,
) -> PartFold:
    projection = fold_reader(
        Projection(config, ticks=part.ticks),
        BusReader(data_dir, quarantine=False, decoder=part.decoder),
        until_offset=until_offset,
        until_ts=until_ts,
        progress=progress,
    )
    return PartFold(part=part.name, state=projection.export_state())


def _child(
    conn: Connection,
    data_dir: Path,
    config: ProjectionConfig,
    until_offset: int,
    until_ts: float | None,
) -> None:
    try:
        conn.send_bytes(
            _encoder.encode(
                _fold_part(
                    data_dir, LIFECYCLE, config=config, until_offset=until_offset, until_ts=until_ts
                )
            )
        )
    finally:
        conn.close()


def replay_parallel(
    data_dir: Path,
    *,
    config: ProjectionConfig,
    until_offset: int | None = None,
    until_ts: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    min_bytes: int = MIN_PARALLEL_BYTES,
) -> Projection:
    """``replay(...)`` folded on two cores where that is exact and worth it."""
    end = BusReader(data_dir, quarantine=False).end_offset()
    until = end if until_offset is None else min(until_offset, end)

    def one_pass() -> Projection:
        return replay(
            data_dir, config=config, until_offset=until, until_ts=until_ts, progress=progress
        )

    if (
        until < min_bytes
        or (os.cpu_count() or 1) < 2
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return one_pass()
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_child, args=(send, data_dir, config, until, until_ts), daemon=True
    )
    child.start()
    send.close()
    try:
        mine = _fold_part(
            data_dir,
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
