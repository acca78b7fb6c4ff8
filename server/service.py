"""`tally serve`: wire the bus, worker, hub and HTTP server, then run until a signal.

On SIGINT or SIGTERM: stop accepting, finish in-flight requests, write a
final checkpoint, close the bus, return (the command exits 0). Several servers
may fold one JetStream stream, each with its own data directory (checkpoints).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.abc

from bus.contract import Bus, open_bus
from bus.errors import TallyError
from bus.filebus import FileBus
from server.app import App
from server.conductor.bridge import ConductorBridge
from server.config import TallyConfig
from server.demo import run_demo
from server.http.connection import HttpLimits
from server.http.server import HttpServer
from server.live.group_commit import GroupCommitter
from server.live.sse import SseHub
from server.live.worker import ProjectionWorker
from server.otlp.receiver import OtlpReceiver

__all__ = ["ServeOptions", "is_loopback", "serve"]

log = logging.getLogger("tally.serve")

HUB_TICK_S = 0.05  # at most one diff of the projection per this period
HUB_POLL_S = 0.005  # how often the hub looks for a newly folded offset


class ServeError(TallyError):
    """Raised when the server refuses to start as asked (a non-loopback address without a token)."""

    exit_code = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    data_dir: Path
    config: TallyConfig
    host: str
    bus_url: str | None = None
    port: int
    demo: bool = False
    token: str | None = None
    protect_reads: bool = False
    handle_signals: bool = True
    conductor_root: Path | None = None
    #: A second port serving the same app, for OTLP exporters (``--otlp-port``).
    otlp_port: int | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _every(period_s: float, action: Callable[[], Awaitable[None]]) -> None:
    while True:
        await anyio.sleep(period_s)
        await action()


async def _tick_hub(hub: SseHub, offset: Callable[[], int]) -> None:
    """Diff soon after a fold (within HUB_POLL_S), not on a fixed grid: at most once per tick."""
    last_offset, last_tick = -1, -math.inf
    while True:
        await anyio.sleep(HUB_POLL_S)
        now = anyio.current_time()
        if now - last_tick < HUB_TICK_S or offset() == last_offset:
            continue
        last_offset, last_tick = offset(), now
        hub.tick()


def _durability(bus: Bus, config: TallyConfig) -> str:
    """What an acknowledged append survives, as the start-up log line says it."""
    if isinstance(bus, FileBus):
        return f"durability {config.bus.durability}"
    return "durability the stream's (an acknowledged append is stored by JetStream)"


async def serve(
    options: ServeOptions, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    if not is_loopback(options.host) and options.token is None:
        raise ServeError(
            f"refusing to listen on non-loopback address {options.host!r} without --token-file: "
            "anyone who can reach it could append events"
        )
    config = options.config
    options.data_dir.mkdir(parents=True, exist_ok=True)
    bus = open_bus(options.bus_url or config.bus.url, options.data_dir, config.bus_config())
    async with bus:
        await _serve(options, bus, task_status=task_status)


async def _serve(
    options: ServeOptions, bus: Bus, *, task_status: anyio.abc.TaskStatus[int]
) -> None:
    config = options.config
    on_files = bus.url.startswith("file:")
    worker = ProjectionWorker(
        options.data_dir,
        bus,
        config.projection_config(),
        checkpoint_every_events=config.server.checkpoint_every_events,
        checkpoint_every_s=config.server.checkpoint_every_s,
        retain_bytes=config.bus.retain_bytes if on_files else None,
        retain_age_s=config.bus.retain_age_s if on_files else None,
        keep_base=not on_files and (config.bus.nats.max_bytes > 0 or config.bus.nats.max_age_s > 0),
        hold_every_bytes=config.bus.segment_bytes // 2,  # so every segment's start is held
    )
    hub = SseHub(
        lambda: worker.projection.families(),  # noqa: PLW0108 (restore replaces it)
        lambda: worker.projection.offset,
        buffer_series=config.server.sse_buffer_series,
        heartbeat_s=config.server.sse_heartbeat_s,
        default_interval_s=config.server.sse_default_interval_s,
    )
    committer = GroupCommitter(bus)
    bridge = None
    if options.conductor_root is not None:  # refuse to start while another process imports
        bridge = ConductorBridge(
            options.conductor_root, options.data_dir, bus, append=committer.submit
        )
        await bridge.open()
        log.info("importing conductor-loop message buses under %s", options.conductor_root)
    app = App(
        worker,
        committer,
        hub,
        token=options.token,
        protect_reads=options.protect_reads,
        conductor=bridge,
        otlp=OtlpReceiver(committer, max_pending_events=config.otlp.max_pending_events),
        schema=config.bus_config().schema,
    )
    limits = HttpLimits(
        max_connections=config.server.max_connections,
        stream_send_timeout_s=config.server.sse_stall_timeout_s,
    )
    http = HttpServer(
        app, host=options.host, port=options.port, limits=limits, on_response=app.count_response
    )
    servers = [http]
    if options.otlp_port is not None:
        servers.append(
            HttpServer(
                app,
                host=options.host,
                port=options.otlp_port,
                limits=limits,
                on_response=app.count_response,
            )
        )
    try:
        async with anyio.create_task_group() as services:
            await services.start(committer.run)
            await services.start(worker.run)
            if bridge is not None:
                services.start_soon(partial(bridge.run, follow=True))
            services.start_soon(_tick_hub, hub, lambda: worker.projection.offset)
            services.start_soon(app.history.run)  # keyframes for /api/v1/history
            if isinstance(bus, FileBus) and config.bus.durability == "interval":
                services.start_soon(_every, config.bus.fsync_interval_s, bus.sync)
            if options.handle_signals:
                services.start_soon(_on_signal, servers)
            if options.demo:  # started once its past hour is written (on an empty log)
                await services.start(run_demo, committer)
            port = await services.start(http.serve)
            print(f"tally listening on {_url(options.host, port)}", flush=True)
            for extra in servers[1:]:
                otlp_port = await services.start(extra.serve)
                print(f"tally OTLP receiver on {_url(options.host, otlp_port)}", flush=True)
            log.info("data dir %s, bus %s, %s", options.data_dir, bus.url, _durability(bus, config))
            task_status.started(port)
            for server in servers:
                await server.wait_closed()
            services.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            try:
                checkpoint = await worker.checkpoint()
                if checkpoint is not None:
                    log.info("final checkpoint at offset %d", checkpoint.offset)
            finally:
                if bridge is not None:
                    bridge.close()


async def _on_signal(servers: list[HttpServer]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            print(f"tally: {signal.Signals(signum).name}, shutting down", file=sys.stderr)
            for server in servers:
                server.shutdown()
            return
