"""HttpServer over real sockets on ephemeral ports: framing, keep-alive, limits, failures,
shutdown and streaming. Responses are parsed with a client-side h11, requests often sent raw.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import h11
import msgspec
import pytest

from server.http.connection import HttpLimits
from server.http.routing import Request, Response, Router, gzip_if_accepted
from server.http.server import HttpServer

pytestmark = pytest.mark.anyio

#: How long a test waits for something that must happen before it fails: a guard against a
#: hang, never a speed target (timing belongs to benchmarks/).
GUARD_S = 30.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """A raw socket; a client-side h11 only parses what the server sends back."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.parser = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> Client:
        return cls(await anyio.connect_tcp(host, port))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Reply:
        self._next_cycle()
        all_headers = [("host", "test"), *(headers or [])]
        if body:
            all_headers.append(("content-length", str(len(body))))
        data = self.parser.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            data += self.parser.send(h11.Data(data=body))
        data += self.parser.send(h11.EndOfMessage())
        await self.stream.send(data)
        return await self.reply(method)

    async def reply(self, method: str = "GET") -> Reply:
        """Read one whole response (to a request sent raw if the parser has not seen one)."""
        self._next_cycle()
        if self.parser.our_state is h11.IDLE:
            self.parser.send(h11.Request(method=method, target="/", headers=[("host", "test")]))
            self.parser.send(h11.EndOfMessage())
        status, headers, body = 0, {}, bytearray()
        while True:
            match await self.event():
                case h11.Response(status_code=code, headers=raw):
                    status = code
                    headers = {name.decode(): value.decode() for name, value in raw}
                case h11.Data(data=chunk):
                    body += chunk
                case h11.EndOfMessage():
                    return Reply(status, headers, bytes(body))
                case h11.ConnectionClosed():
                    raise AssertionError("connection closed before the response ended")

    async def event(self) -> Any:
        while True:
            event = self.parser.next_event()
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.InformationalResponse):
                    continue
                return event
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            self.parser.receive_data(data)

    async def assert_closed(self) -> None:
        """The server ends the connection (EOF or reset) with nothing more sent; then hang up."""
        with anyio.fail_after(GUARD_S):
            while True:
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
                assert not data, f"unexpected bytes after the response: {data!r}"
        await self.stream.aclose()

    def _next_cycle(self) -> None:
        if self.parser.our_state is h11.DONE and self.parser.their_state is h11.DONE:
            self.parser.start_next_cycle()

    async def aclose(self) -> None:
        await self.stream.aclose()


def make_app() -> Router:
    router = Router()

    async def hello(request: Request) -> Response:
        return Response.text(
            200, f"{request.method} {request.path} {sorted(request.query.items())}"
        )

    async def echo(request: Request) -> Response:
        return Response(200, [("content-type", "application/octet-stream")], request.body)

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    async def slow(request: Request) -> Response:
        await anyio.sleep(float(request.query.get("s", "0.3")))
        return Response.text(200, "slow done")

    async def big(request: Request) -> Response:
        return gzip_if_accepted(request, Response.text(200, "tally " * 1000))

    async def inspect(request: Request) -> Response:
        return Response.json(
            200,
            {
                "target": request.target,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
                "accept": request.header("ACCEPT"),
                "client": request.client,
            },
        )

    router.add("/hello", ["GET"], hello)
    router.add("/echo", ["POST", "PUT"], echo)
    router.add("/boom", ["GET"], boom)
    router.add("/slow", ["GET"], slow)
    router.add("/big", ["GET"], big)
    router.add("/inspect", ["GET"], inspect)
    return router


@asynccontextmanager
async def serving(
    handler: Callable[[Request], Any] | None = None,
    *,
    host: str = "127.0.0.1",
    on_response: Callable[[str, int], None] | None = None,
    **limits: Any,
) -> AsyncIterator[HttpServer]:
    limits.setdefault("shutdown_grace_s", 2.0)
    server = HttpServer(
        handler or make_app(), host=host, limits=HttpLimits(**limits), on_response=on_response
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.serve)
        assert port == server.port
        try:
            yield server
        finally:
            server.shutdown()


async def test_get_head_post_round_trip() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        got = await client.request("GET", "/hello?a=1")
        assert got.status == 200
        assert got.body == b"GET /hello [('a', '1')]"
        assert got.headers["content-length"] == str(len(got.body))
        assert got.headers["server"] == "tally"
        assert got.headers["date"].endswith("GMT")

        head = await client.request("HEAD", "/hello?a=1")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["content-length"] == str(len(b"HEAD /hello [('a', '1')]"))

        posted = await client.request("POST", "/echo", body=b"\x00payload\xff")
        assert (posted.status, posted.body) == (200, b"\x00payload\xff")
        await client.aclose()


async def test_request_fields_are_decoded() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        got = await client.request(
            "GET",
            "/inspect?x=1&x=2&empty=&sp=a%20b",
            headers=[("Accept", "text/plain"), ("accept", "application/json"), ("X-Y", "z")],
        )
        assert got.status == 200
        fields = msgspec.json.decode(got.body)
        assert fields["target"] == "/inspect?x=1&x=2&empty=&sp=a%20b"
        assert fields["path"] == "/inspect"
        assert fields["query"] == {"x": "2", "empty": "", "sp": "a b"}
        assert ["x-y", "z"] in fields["headers"]
        assert fields["accept"] == "text/plain, application/json"
        assert fields["client"] == "127.0.0.1"

        encoded = await client.request("GET", "/%68ello")  # percent-decoded before routing
        assert encoded.status == 200
        await client.aclose()


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        for i in range(5):
            got = await client.request("GET", f"/hello?i={i}")
            assert got.status == 200
            assert got.body.endswith(f"[('i', '{i}')]".encode())
            assert "connection" not in got.headers
        await client.aclose()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        await client.send_raw(
            b"GET /hello?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfive!"
            b"HEAD /hello?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /hello?n=4 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        assert (await client.reply("GET")).body.endswith(b"[('n', '1')]")
        assert (await client.reply("POST")).body == b"five!"
        head = await client.reply("HEAD")
        assert (head.status, head.body) == (200, b"")
        assert (await client.reply("GET")).body.endswith(b"[('n', '4')]")
        await client.aclose()


async def test_http_1_0_gets_an_answer_and_a_close() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        await client.send_raw(b"GET /hello HTTP/1.0\r\n\r\n")
        got = await client.reply()
        assert got.status == 200
        assert got.body == b"GET /hello []"
        await client.assert_closed()


async def test_unknown_path_404_and_wrong_method_405_with_allow() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        assert (await client.request("GET", "/nope")).status == 404
        got = await client.request("DELETE", "/hello")
        assert got.status == 405
        assert got.headers["allow"] == "GET, HEAD"
        got = await client.request("GET", "/echo")
        assert (got.status, got.headers["allow"]) == (405, "POST, PUT")
        assert (await client.request("GET", "/hello")).status == 200  # still keep-alive
        await client.aclose()


async def test_headers_over_the_limit_get_431() -> None:
    seen: list[tuple[str, int]] = []
    async with serving(
        max_header_bytes=1024, on_response=lambda m, s: seen.append((m, s))
    ) as server:
        client = await Client.connect(server.port)
        await client.send_raw(
            b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n"
        )
        got = await client.reply()
        assert got.status == 431
        assert got.headers["connection"] == "close"
        await client.assert_closed()
        assert seen == [("", 431)]


async def test_content_length_over_the_limit_gets_413_without_reading_the_body() -> None:
    seen: list[tuple[str, int]] = []
    async with serving(max_body_bytes=1000, on_response=lambda m, s: seen.append((m, s))) as server:
        client = await Client.connect(server.port)
        # The body is never sent: the answer must come from the head alone (a server waiting
        # for the body would answer 408 at the request timeout, well inside the guard).
        await client.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
        with anyio.fail_after(GUARD_S):
            got = await client.reply("POST")
        assert got.status == 413
        await client.assert_closed()

        # With Expect: 100-continue the client gets the 413 instead of a 100.
        client = await Client.connect(server.port)
        await client.send_raw(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert (await client.reply("POST")).status == 413
        await client.assert_closed()
        assert seen == [("POST", 413), ("POST", 413)]


async def test_chunked_body_over_the_limit_gets_413() -> None:
    async with serving(max_body_bytes=1000) as server:
        client = await Client.connect(server.port)
        await client.send_raw(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(3):
            await client.send_raw(b"258\r\n" + b"x" * 600 + b"\r\n")
        got = await client.reply("POST")
        assert got.status == 413
        await client.assert_closed()

        client = await Client.connect(server.port)  # a chunked body within the limit is fine
        await client.send_raw(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        assert (await client.reply("POST")).body == b"abcde"
        await client.aclose()


async def test_expect_100_continue_within_the_limit_is_served() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        await client.send_raw(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        with anyio.fail_after(GUARD_S):  # without the 100 the server's answer would be a 408
            first = await client.stream.receive()
        assert first.startswith(b"HTTP/1.1 100 ")
        client.parser.receive_data(first)
        await client.send_raw(b"body")
        assert (await client.reply("POST")).body == b"body"
        await client.aclose()


async def test_stalled_request_gets_408_while_another_connection_is_served() -> None:
    stalled_head = b"GET /hello HTTP/1.1\r\nHost: t\r\n"  # no blank line: stalls
    seen: list[tuple[str, int]] = []
    # A stalled head holds up only its own connection (the timeout is out of reach here).
    async with serving(
        request_timeout_s=3600, on_response=lambda m, s: seen.append((m, s))
    ) as server:
        stalled = await Client.connect(server.port)
        await stalled.send_raw(stalled_head)
        other = await Client.connect(server.port)
        for _ in range(3):
            assert (await other.request("GET", "/hello")).status == 200
        assert seen == [("GET", 200)] * 3  # nothing was answered on the stalled connection
        await stalled.send_raw(b"\r\n")  # it was only waiting: ending the head serves it
        assert (await stalled.reply()).status == 200
        assert seen == [("GET", 200)] * 4
        await stalled.aclose()
        await other.aclose()

    seen.clear()
    async with serving(
        request_timeout_s=0.5, on_response=lambda m, s: seen.append((m, s))
    ) as server:
        started = anyio.current_time()
        stalled = await Client.connect(server.port)
        await stalled.send_raw(stalled_head)
        with anyio.fail_after(GUARD_S):
            got = await stalled.reply()
        assert got.status == 408
        assert anyio.current_time() - started >= 0.45  # not before the request timeout
        await stalled.assert_closed()

        # A complete head whose body stalls is a 408 too, and the method is known.
        slow_body = await Client.connect(server.port)
        await slow_body.send_raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        assert (await slow_body.reply("POST")).status == 408
        await slow_body.assert_closed()
        assert seen == [("", 408), ("POST", 408)]


async def test_silent_connection_and_idle_keep_alive_are_closed_without_a_response() -> None:
    seen: list[tuple[str, int]] = []
    async with serving(
        request_timeout_s=0.3, keepalive_timeout_s=0.3, on_response=lambda m, s: seen.append((m, s))
    ) as server:
        silent = await Client.connect(server.port)
        await silent.assert_closed()
        idle = await Client.connect(server.port)
        assert (await idle.request("GET", "/hello")).status == 200
        await idle.assert_closed()
        assert seen == [("GET", 200)]


async def test_garbage_gets_400_and_another_connection_is_unaffected() -> None:
    seen: list[tuple[str, int]] = []
    async with serving(on_response=lambda m, s: seen.append((m, s))) as server:
        other = await Client.connect(server.port)
        assert (await other.request("GET", "/hello")).status == 200
        bad = await Client.connect(server.port)
        await bad.send_raw(b"\x16\x03\x01 this is not http\r\n\r\n")
        got = await bad.reply()
        assert got.status == 400
        await bad.assert_closed()
        assert (await other.request("GET", "/hello")).status == 200
        assert seen == [("GET", 200), ("", 400), ("GET", 200)]
        await other.aclose()


async def test_handler_exception_gets_500_and_the_connection_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        with caplog.at_level(logging.ERROR, logger="tally.http"):
            got = await client.request("GET", "/boom")
        assert got.status == 500
        assert "RuntimeError: boom" in caplog.text
        assert (await client.request("GET", "/hello")).status == 200
        await client.aclose()


async def test_bad_handler_results_and_timeouts_are_contained() -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/invalid-header":
            return Response(200, [("bad\nname", "x")], b"x")
        if request.path == "/not-a-response":
            return "nope"  # type: ignore[return-value]
        await anyio.sleep(10)
        return Response.empty(204)

    async with serving(handler, handler_timeout_s=0.2) as server:
        client = await Client.connect(server.port)
        assert (await client.request("GET", "/invalid-header")).status == 500
        assert (await client.request("GET", "/not-a-response")).status == 500
        assert (await client.request("GET", "/sleepy")).status == 503
        await client.aclose()


async def test_connection_cap_answers_503_and_leaves_the_others_alone() -> None:
    seen: list[tuple[str, int]] = []
    async with serving(max_connections=2, on_response=lambda m, s: seen.append((m, s))) as server:
        first = await Client.connect(server.port)
        second = await Client.connect(server.port)
        assert (await first.request("GET", "/hello")).status == 200
        assert (await second.request("GET", "/hello")).status == 200

        third = await Client.connect(server.port)
        await third.send_raw(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        got = await third.reply()
        assert got.status == 503
        assert got.headers["retry-after"] == "1"
        await third.assert_closed()
        assert ("", 503) in seen

        assert (await first.request("GET", "/hello")).status == 200
        assert (await second.request("GET", "/hello")).status == 200

        await first.aclose()  # frees a slot
        with anyio.fail_after(GUARD_S):
            while True:
                fourth = await Client.connect(server.port)
                if (await fourth.request("GET", "/hello")).status == 200:
                    break
                await anyio.sleep(0.05)
        await second.aclose()
        await fourth.aclose()


async def test_graceful_shutdown_finishes_in_flight_work_and_refuses_new_connections() -> None:
    entered, release, returned = anyio.Event(), anyio.Event(), anyio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            entered.set()
            await release.wait()
        return Response.text(200, "done")

    # Every timeout out of reach: whatever closes or ends below, shutdown() did.
    limits = HttpLimits(shutdown_grace_s=3600, keepalive_timeout_s=3600, request_timeout_s=3600)
    server = HttpServer(handler, limits=limits)

    async def run(*, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        await server.serve(task_status=task_status)
        returned.set()

    async with anyio.create_task_group() as tg:
        port = await tg.start(run)
        idle = await Client.connect(port)
        assert (await idle.request("GET", "/fast")).status == 200
        busy = await Client.connect(port)
        await busy.send_raw(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await entered.wait()

        server.shutdown()
        await idle.assert_closed()  # idle keep-alive: closed while the busy request goes on
        with anyio.fail_after(GUARD_S):  # and the listener closes: new connections are refused
            while True:
                try:
                    probe = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    break
                await probe.aclose()
                await anyio.sleep(0.01)
        assert not returned.is_set()

        release.set()
        got = await busy.reply()
        assert (got.status, got.body) == (200, b"done")
        assert got.headers["connection"] == "close"
        await busy.assert_closed()
        with anyio.fail_after(GUARD_S):
            await returned.wait()
            await server.wait_closed()


async def test_shutdown_grace_cancels_requests_that_never_finish() -> None:
    entered, cancelled = anyio.Event(), anyio.Event()

    async def handler(request: Request) -> Response:
        entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError

    async with anyio.create_task_group() as tg:
        limits = HttpLimits(shutdown_grace_s=0.3, handler_timeout_s=3600)
        server = HttpServer(handler, limits=limits)
        port = await tg.start(server.serve)
        client = await Client.connect(port)
        await client.send_raw(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await entered.wait()
        started = anyio.current_time()
        server.shutdown()
        with anyio.fail_after(GUARD_S):  # only the grace can end the handler (never returns)
            await server.wait_closed()
        assert cancelled.is_set()
        assert anyio.current_time() - started >= 0.25  # the request had its grace first
        await client.assert_closed()  # no response: the connection just ends


class Frames:
    """A response stream fed from a memory stream; records that the server closed it."""

    def __init__(self, chunks: anyio.abc.ObjectReceiveStream[bytes], closed: anyio.Event) -> None:
        self.chunks = chunks
        self.closed = closed

    def __aiter__(self) -> Frames:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.chunks.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.chunks.close()
        self.closed.set()


def _streaming_app(
    chunks: anyio.abc.ObjectReceiveStream[bytes], closed: anyio.Event
) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        if request.path == "/stream":
            return Response(
                200, [("content-type", "text/event-stream")], stream=Frames(chunks, closed)
            )
        return Response.text(200, "plain")

    return handler


async def test_streaming_response_is_incremental_and_closed_on_disconnect() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](10)
    closed = anyio.Event()
    async with serving(_streaming_app(receive, closed)) as server, send:
        client = await Client.connect(server.port)
        await client.send_raw(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        client.parser.send(h11.Request(method="GET", target="/stream", headers=[("host", "t")]))
        client.parser.send(h11.EndOfMessage())
        head = await client.event()
        assert head.status_code == 200
        headers = dict(head.headers)
        assert headers[b"transfer-encoding"] == b"chunked"
        assert b"content-length" not in headers
        for n in range(3):
            frame = f"data: {n}\n\n".encode()
            await send.send(frame)
            with anyio.fail_after(GUARD_S):
                got = await client.event()
            assert isinstance(got, h11.Data)
            assert got.data == frame

        await client.aclose()
        with anyio.fail_after(GUARD_S):
            await closed.wait()

        other = await Client.connect(server.port)
        assert (await other.request("GET", "/plain")).body == b"plain"
        await other.aclose()


async def test_streaming_response_ends_cleanly_on_shutdown() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](10)
    closed = anyio.Event()
    async with anyio.create_task_group() as tg, send:
        server = HttpServer(_streaming_app(receive, closed), limits=HttpLimits(shutdown_grace_s=5))
        port = await tg.start(server.serve)
        client = await Client.connect(port)
        await send.send(b"data: first\n\n")
        await client.send_raw(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        client.parser.send(h11.Request(method="GET", target="/stream", headers=[("host", "t")]))
        client.parser.send(h11.EndOfMessage())
        assert (await client.event()).status_code == 200
        assert (await client.event()).data == b"data: first\n\n"

        server.shutdown()
        with anyio.fail_after(GUARD_S):
            assert isinstance(await client.event(), h11.EndOfMessage)
            await closed.wait()
            await server.wait_closed()
        await client.assert_closed()


async def test_head_of_a_streaming_response_sends_no_body_and_closes_the_stream() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](10)
    closed = anyio.Event()
    async with serving(_streaming_app(receive, closed)) as server, send:
        client = await Client.connect(server.port)
        got = await client.request("HEAD", "/stream")
        assert (got.status, got.body) == (200, b"")
        with anyio.fail_after(GUARD_S):
            await closed.wait()
        assert (await client.request("GET", "/plain")).body == b"plain"
        await client.aclose()


async def test_gzip_over_the_wire_and_head_reports_the_gzipped_length() -> None:
    async with serving() as server:
        client = await Client.connect(server.port)
        plain = await client.request("GET", "/big")
        assert "content-encoding" not in plain.headers
        assert plain.headers["vary"] == "Accept-Encoding"

        zipped = await client.request("GET", "/big", headers=[("accept-encoding", "gzip, br")])
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["content-length"] == str(len(zipped.body))
        assert gzip.decompress(zipped.body) == plain.body

        head = await client.request("HEAD", "/big", headers=[("accept-encoding", "gzip")])
        assert head.body == b""
        assert head.headers["content-encoding"] == "gzip"
        assert head.headers["content-length"] == zipped.headers["content-length"]
        await client.aclose()


async def test_on_response_is_called_once_for_every_response() -> None:
    seen: list[tuple[str, int]] = []
    async with serving(
        max_header_bytes=1024,
        max_body_bytes=100,
        request_timeout_s=0.4,
        on_response=lambda m, s: seen.append((m, s)),
    ) as server:
        client = await Client.connect(server.port)
        await client.request("GET", "/hello")
        await client.request("HEAD", "/hello")
        await client.request("GET", "/missing")
        await client.request("PATCH", "/hello")
        await client.request("GET", "/boom")
        await client.aclose()
        for raw, method in [
            (b"junk\x00\r\n\r\n", "GET"),
            (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"y" * 2000 + b"\r\n\r\n", "GET"),
            (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n", "POST"),
            (b"GET /hello HTTP/1.1\r\n", "GET"),
        ]:
            client = await Client.connect(server.port)
            await client.send_raw(raw)
            await client.reply(method)
            await client.assert_closed()
    assert seen == [
        ("GET", 200),
        ("HEAD", 200),
        ("GET", 404),
        ("PATCH", 405),
        ("GET", 500),
        ("", 400),
        ("", 431),
        ("POST", 413),
        ("", 408),
    ]


async def test_http_client_in_a_thread_keeps_the_connection_alive() -> None:
    def use_http_client(port: int) -> list[tuple[int, bytes]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        results = []
        for method, path, body in [("GET", "/hello", None), ("POST", "/echo", b"hi")]:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            results.append((response.status, response.read()))
        conn.close()
        return results

    async with serving() as server:
        results = await anyio.to_thread.run_sync(use_http_client, server.port)
    assert results == [(200, b"GET /hello []"), (200, b"hi")]


async def test_binds_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    async with serving(host="::1") as server:
        client = await Client.connect(server.port, host="::1")
        got = await client.request("GET", "/inspect")
        assert b'"client":"::1"' in got.body
        await client.aclose()


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="request_timeout_s"):
        HttpLimits(request_timeout_s=0)
