"""One client socket driven through h11 request/response cycles, every phase bounded.
Rule: whatever a connection does (garbage, stalls, crashes) is answered and ends on that connection.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio
import anyio.abc
import h11
import msgspec
from anyio.abc import SocketAttribute

from server.http.routing import Handler, Request, Response

__all__ = ["HttpConnection", "HttpLimits"]

logger = logging.getLogger("tally.http")  # one logger for the whole HTTP layer

_READ_BYTES: Final = 64 * 1024
_WRITE_SLICE: Final = 256 * 1024
_LINGER_S: Final = 1.0  # after an error reply: half-close and drain, so no RST eats the reply
_LINGER_BYTES: Final = 1024 * 1024
_BODYLESS: Final = frozenset({204, 304})
_PEER_GONE: Final = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    TimeoutError,  # a send that did not drain within the write deadline
    OSError,
)


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on what one client may cost the server; each names the status it produces."""

    max_header_bytes: int = 16 * 1024  # 431
    max_body_bytes: int = 16 * 1024 * 1024  # 413
    request_timeout_s: float = 10.0  # 408 (from accept or first byte); also bounds each write
    keepalive_timeout_s: float = 75.0  # idle keep-alive connections are closed silently
    max_connections: int = 1024  # 503 with Retry-After past it
    shutdown_grace_s: float = 10.0
    handler_timeout_s: float = 60.0  # 503 when a handler has not answered by then
    stream_send_timeout_s: float = 60.0  # a streaming client that stalls this long is dropped

    def __post_init__(self) -> None:
        for field in self.__struct_fields__:
            if not getattr(self, field) > 0:
                raise ValueError(f"HttpLimits.{field} must be positive")


@dataclasses.dataclass(frozen=True, slots=True)
class _Refusal:
    """A request the layer answers itself (400, 408, 413, 431, ...) before closing."""

    status: int
    method: str


class HttpConnection:
    """One client socket driven through h11 request/response cycles."""

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        handler: Handler,
        limits: HttpLimits,
        report: Callable[[str, int], None],
        closing: Callable[[], bool],
    ) -> None:
        self._stream = stream
        self._handler = handler
        self._limits = limits
        self._report = report
        self._closing = closing
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._client = _client_of(stream)
        self._interruptible: anyio.CancelScope | None = None  # idle wait or response stream
        self._peer_gone = False
        self._linger = False
        self._sending_since: float | None = None  # start of a stream chunk's send still pending

    def interrupt(self) -> None:
        """Shutdown: end an idle wait or a streaming response now; in-flight requests go on."""
        if self._interruptible is not None:
            self._interruptible.cancel()

    async def run(self) -> None:
        try:
            await self._cycles()
        except _PEER_GONE as exc:
            logger.debug("connection %s dropped: %r", self._client, exc)
        except Exception:
            logger.exception("connection %s failed", self._client)
        finally:
            await self._close()

    async def refuse(self) -> None:
        """Over max_connections: answer 503 with Retry-After without reading, then close."""
        self._linger = True
        reply = Response.text(503, "too many connections\n")
        reply.headers.extend([("retry-after", "1"), ("connection", "close")])
        try:
            await self._send_response("", reply)
        except _PEER_GONE:
            pass
        except Exception:
            logger.exception("refusing connection %s failed", self._client)
        finally:
            await self._close()

    async def _cycles(self) -> None:
        deadline = anyio.current_time() + self._limits.request_timeout_s
        first = True
        while not self._closing():
            if not await self._await_bytes(deadline if first else None):
                return
            if not first:
                deadline = anyio.current_time() + self._limits.request_timeout_s
            first = False
            match await self._read_request(deadline):
                case None:
                    return
                case _Refusal(status=status, method=method):
                    self._linger = True
                    reply = Response.text(status, f"{_reason(status).decode()}\n")
                    reply.headers.append(("connection", "close"))
                    await self._send_response(method, reply)
                    return
                case Request() as request:
                    response = await self._respond(request)
                    if not await self._send_response(request.method, response):
                        return
            if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
                return
            self._h11.start_next_cycle()

    async def _await_bytes(self, deadline: float | None) -> bool:
        """Idle phase: wait for the first byte of a request; False means close quietly."""
        pending, closed = self._h11.trailing_data
        if pending:
            return True
        if closed:
            return False
        if deadline is None:
            deadline = anyio.current_time() + self._limits.keepalive_timeout_s
        with anyio.CancelScope(deadline=deadline) as scope:
            self._interruptible = scope
            try:
                data = await self._stream.receive(_READ_BYTES)
            except anyio.EndOfStream:
                return False
            finally:
                self._interruptible = None
            self._h11.receive_data(data)
            return True
        return False

    async def _read_request(self, deadline: float) -> Request | _Refusal | None:
        method = ""
        with anyio.CancelScope(deadline=deadline):
            try:
                head = await self._next_event()
                if not isinstance(head, h11.Request):
                    return None  # ConnectionClosed between requests
                method = head.method.decode("ascii").upper()
                if _head_size(head) > self._limits.max_header_bytes:
                    return _Refusal(431, "")  # h11 only bounds heads that arrive incomplete
                declared = _content_length(head)
                if declared is not None and declared > self._limits.max_body_bytes:
                    return _Refusal(413, method)
                if self._h11.client_is_waiting_for_100_continue:
                    await self._send_event(h11.InformationalResponse(status_code=100, headers=[]))
                body = bytearray()
                while True:
                    match await self._next_event():
                        case h11.Data(data=chunk):
                            body += chunk
                            if len(body) > self._limits.max_body_bytes:
                                return _Refusal(413, method)
                        case h11.EndOfMessage():
                            return _build_request(head, bytes(body), self._client)
                        case _:
                            return None
            except h11.RemoteProtocolError as exc:
                if self._h11.trailing_data[1]:
                    return None  # the peer hung up mid-request: nobody left to answer
                logger.info("bad request from %s: %s", self._client, exc)
                return _Refusal(exc.error_status_hint, method)
        return _Refusal(408, method)

    async def _next_event(self) -> object:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self._stream.receive(_READ_BYTES)
            except anyio.EndOfStream:
                data = b""
            self._h11.receive_data(data)

    async def _respond(self, request: Request) -> Response:
        with anyio.move_on_after(self._limits.handler_timeout_s):
            try:
                response = await self._handler(request)
            except Exception:
                logger.exception("handler failed on %s %s", request.method, request.target)
                return Response.text(500, "internal server error\n")
            if isinstance(response, Response):
                return response
            logger.error("handler returned %r for %s %s", response, request.method, request.path)
            return Response.text(500, "internal server error\n")
        logger.error("handler timed out on %s %s", request.method, request.target)
        return Response.text(503, "handler timed out\n")

    async def _send_response(self, method: str, response: Response) -> bool:
        """Send one response; False when the peer went away mid-stream."""
        to_close = response.stream
        try:
            try:
                head = h11.Response(
                    status_code=response.status,
                    headers=self._final_headers(method, response),
                    reason=_reason(response.status),
                )
            except (h11.LocalProtocolError, ValueError, TypeError):
                logger.exception("handler produced an invalid response for %s", method)
                response = Response.text(500, "internal server error\n")
                head = h11.Response(
                    status_code=500,
                    headers=self._final_headers(method, response),
                    reason=_reason(500),
                )
            self._report(method, head.status_code)
            await self._send_event(head)
            if method != "HEAD" and head.status_code not in _BODYLESS:
                if response.stream is not None:
                    return await self._send_stream(response.stream)
                for start in range(0, len(response.body), _WRITE_SLICE):
                    chunk = response.body[start : start + _WRITE_SLICE]
                    await self._send_event(h11.Data(data=chunk))
            await self._send_event(h11.EndOfMessage())
            return True
        finally:
            if to_close is not None:
                await _aclose_quietly(to_close)

    def _final_headers(self, method: str, response: Response) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        declared: str | None = None
        for name, value in response.headers:
            key = name.lower()
            if key == "content-length":
                declared = value
            elif key != "transfer-encoding":
                headers.append((key, value))
        present = {key for key, _ in headers}
        if "date" not in present:
            headers.append(("date", email.utils.formatdate(usegmt=True)))
        if "server" not in present:
            headers.append(("server", "tally"))
        if response.status not in _BODYLESS and response.stream is None:
            if method == "HEAD" and not response.body and declared is not None:
                headers.append(("content-length", declared))  # a HEAD handler may state it
            else:
                headers.append(("content-length", str(len(response.body))))
        if self._closing() and "connection" not in present:
            headers.append(("connection", "close"))
        return headers

    async def _send_stream(self, stream: AsyncIterator[bytes]) -> bool:
        """Relay chunks until the stream ends, the peer leaves or shutdown interrupts it."""
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                self._interruptible = scope
                if self._closing():
                    scope.cancel()
                tg.start_soon(self._watch_peer, scope)
                tg.start_soon(self._watch_stall, scope)
                try:
                    async for chunk in stream:
                        if chunk:
                            # No deadline scope per chunk (a timer per frame per subscriber):
                            # _watch_stall drops the stream once one send is pending too long.
                            data = self._h11.send(h11.Data(data=chunk))
                            if data:
                                self._sending_since = anyio.current_time()
                                await self._stream.send(data)
                                self._sending_since = None
                except _PEER_GONE:
                    self._peer_gone = True
                except Exception:
                    logger.exception("response stream failed for %s", self._client)
                    self._peer_gone = True  # truncated: close without the final chunk
                finally:
                    self._interruptible = None
                    self._sending_since = None
            tg.cancel_scope.cancel()
        if self._peer_gone:
            return False
        await self._send_event(h11.EndOfMessage())
        return True

    async def _watch_peer(self, scope: anyio.CancelScope) -> None:
        """While streaming, notice a hang-up at once; keep any pipelined bytes for h11."""
        received = 0
        while received <= self._limits.max_header_bytes:
            try:
                data = await self._stream.receive(_READ_BYTES)
            except _PEER_GONE:
                self._peer_gone = True
                scope.cancel()
                return
            self._h11.receive_data(data)
            received += len(data)
        await anyio.sleep_forever()

    async def _watch_stall(self, scope: anyio.CancelScope) -> None:
        """While streaming, end the stream once a chunk has not drained for the send timeout."""
        limit = self._limits.stream_send_timeout_s
        while True:
            since = self._sending_since
            wait = limit if since is None else since + limit - anyio.current_time()
            if wait <= 0:
                logger.info("stream to %s stalled for %.0f s: dropped", self._client, limit)
                self._peer_gone = True
                scope.cancel()
                return
            await anyio.sleep(wait)

    async def _send_event(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            with anyio.fail_after(self._limits.request_timeout_s):
                await self._stream.send(data)

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._linger:
                with anyio.move_on_after(_LINGER_S):
                    try:
                        await self._stream.send_eof()
                        drained = 0
                        while drained < _LINGER_BYTES:
                            drained += len(await self._stream.receive(_READ_BYTES))
                    except _PEER_GONE:
                        pass
            await self._stream.aclose()


def _build_request(head: h11.Request, body: bytes, client: str) -> Request:
    target = head.target.decode("latin-1")
    if target.startswith("/"):
        raw_path, _, raw_query = target.partition("?")
    else:  # absolute-form ("http://host/p?q") or asterisk-form ("*")
        parts = urlsplit(target)
        raw_path, raw_query = parts.path or target, parts.query
    return Request(
        method=head.method.decode("ascii").upper(),
        target=target,
        path=unquote(raw_path),
        query=dict(parse_qsl(raw_query, keep_blank_values=True)),
        headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers],
        body=body,
        client=client,
    )


def _head_size(head: h11.Request) -> int:
    """Bytes of the request line and header lines as sent (h11 strips only whitespace)."""
    line = len(head.method) + len(head.target) + len(b" HTTP/1.1\r\n") + 1
    return line + sum(len(name) + len(value) + 4 for name, value in head.headers) + 2


def _content_length(head: h11.Request) -> int | None:
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)  # h11 has already validated it
    return None


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _client_of(stream: anyio.abc.SocketStream) -> str:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except anyio.TypedAttributeLookupError:
        return ""
    return str(address[0]) if isinstance(address, tuple) else str(address)


async def _aclose_quietly(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(_LINGER_S):
        try:
            await aclose()
        except Exception:
            logger.exception("closing a response stream failed")
