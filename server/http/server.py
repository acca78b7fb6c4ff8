"""HTTP/1.1 server over anyio: listener, accept loop, connection cap and graceful shutdown.
Rule: the server only admits, tracks and drains connections; each one is driven by HttpConnection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from bus.errors import TallyError
from server.http.connection import HttpConnection, HttpLimits
from server.http.routing import Handler

__all__ = ["HttpServer", "ListenError"]

logger = logging.getLogger("tally.http")


class ListenError(TallyError):
    """Raised when the server cannot listen on its address and port (taken, not permitted)."""


class HttpServer:
    """Serves `handler` on host:port until shutdown(); see HttpLimits for the bounds."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: HttpLimits = HttpLimits(),  # noqa: B008 - frozen, safe to share
        on_response: Callable[[str, int], None] | None = None,
    ) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._limits = limits
        self._on_response = on_response
        self._port: int | None = None
        self._closing = False
        self._stop: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._closed: anyio.Event | None = None
        self._connections: set[HttpConnection] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with port=0); RuntimeError before serve() has bound."""
        if self._port is None:
            raise RuntimeError("HttpServer is not bound yet")
        return self._port

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report the port through task_status, serve until shutdown() has drained."""
        if self._stop is not None:
            raise RuntimeError("HttpServer.serve() may only be called once")
        self._stop, self._drained = anyio.Event(), anyio.Event()
        closed = self._closed_event()
        try:
            listener = await anyio.create_tcp_listener(
                local_host=self._host or None, local_port=self._requested_port
            )
        except OSError as exc:
            closed.set()
            where = f"{self._host}:{self._requested_port}"
            raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        except BaseException:
            closed.set()
            raise
        try:
            self._port = listener.extra(SocketAttribute.local_port)
            async with anyio.create_task_group() as connections:
                async with anyio.create_task_group() as accepting:
                    for sub in listener.listeners:
                        if isinstance(sub, anyio.abc.SocketListener):
                            accepting.start_soon(self._accept, sub, connections)
                    task_status.started(self._port)
                    if self._closing:
                        self._stop.set()
                    await self._stop.wait()
                    accepting.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await listener.aclose()  # from here on, new connections are refused
                with anyio.move_on_after(self._limits.shutdown_grace_s):
                    if self._connections:
                        await self._drained.wait()
                connections.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()
            closed.set()

    async def wait_closed(self) -> None:
        """Return once serve() has returned (after shutdown() and draining)."""
        await self._closed_event().wait()

    def _closed_event(self) -> anyio.Event:
        if self._closed is None:
            self._closed = anyio.Event()
        return self._closed

    def shutdown(self) -> None:
        """Stop accepting, close idle connections, end streams, let in-flight requests finish.

        Call it from the event loop's thread; serve() returns once drained or after the grace.
        """
        self._closing = True
        if self._stop is not None:
            self._stop.set()
        for connection in list(self._connections):
            connection.interrupt()

    async def _accept(self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:  # EMFILE and friends: back off, keep the listener
                logger.warning("accept failed: %s", exc)
                await anyio.sleep(0.1)
                continue
            connection = HttpConnection(
                stream, self._handler, self._limits, self._report, lambda: self._closing
            )
            if len(self._connections) >= self._limits.max_connections:
                tg.start_soon(connection.refuse)
                continue
            self._connections.add(connection)
            tg.start_soon(self._run, connection)

    async def _run(self, connection: HttpConnection) -> None:
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            if self._closing and not self._connections and self._drained is not None:
                self._drained.set()

    def _report(self, method: str, status: int) -> None:
        if self._on_response is None:
            return
        try:
            self._on_response(method, status)
        except Exception:
            logger.exception("on_response callback failed")
