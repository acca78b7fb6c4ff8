"""Router dispatch, gzip negotiation and the Request/Response values, without sockets."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import msgspec
import pytest

from server.http.routing import Request, Response, Router, accepts_gzip, gzip_if_accepted

pytestmark = pytest.mark.anyio


def request(
    method: str = "GET", path: str = "/", headers: list[tuple[str, str]] | None = None
) -> Request:
    return Request(
        method=method,
        target=path,
        path=path,
        query={},
        headers=headers or [],
        body=b"",
        client="127.0.0.1",
    )


async def answer(request: Request) -> Response:
    return Response.text(200, f"{request.method} {request.path}")


async def test_router_dispatches_by_exact_path_and_method() -> None:
    router = Router()
    router.add("/a", ["get"], answer)
    router.add("/b", ["POST", "PUT"], answer)
    assert (await router(request("GET", "/a"))).body == b"GET /a"
    assert (await router(request("PUT", "/b"))).body == b"PUT /b"
    assert (await router(request("GET", "/a/"))).status == 404
    assert (await router(request("GET", "/c"))).status == 404


async def test_router_405_lists_allowed_methods_and_get_implies_head() -> None:
    router = Router()
    router.add("/a", ["GET", "POST"], answer)
    router.add("/b", ["DELETE"], answer)
    got = await router(request("PUT", "/a"))
    assert got.status == 405
    assert ("allow", "GET, HEAD, POST") in got.headers
    got = await router(request("HEAD", "/b"))
    assert (got.status, dict(got.headers)["allow"]) == (405, "DELETE")
    assert router.allowed("/a") == ["GET", "HEAD", "POST"]
    assert router.allowed("/nope") == []


async def test_head_runs_the_get_handler_unless_head_is_routed() -> None:
    async def head_only(request: Request) -> Response:
        return Response.empty(204)

    router = Router()
    router.add("/a", ["GET"], answer)
    router.add("/b", ["GET"], answer)
    router.add("/b", ["HEAD"], head_only)
    assert (await router(request("HEAD", "/a"))).body == b"HEAD /a"
    assert (await router(request("HEAD", "/b"))).status == 204


def test_router_rejects_duplicate_and_empty_routes() -> None:
    router = Router()
    router.add("/a", ["GET"], answer)
    with pytest.raises(ValueError, match="already registered"):
        router.add("/a", ["get"], answer)
    with pytest.raises(ValueError, match="at least one method"):
        router.add("/b", [], answer)


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip ; q=0.000", False),
        ("gzip;q=nope", False),
        ("gzip;q=nan", False),
        ("identity", False),
        ("br, deflate", False),
        ("*", True),
        ("*;q=0", False),
        ("br, *;q=0.1", True),
        ("gzip;q=0, *", False),
        ("gzip;level=1", True),
    ],
)
def test_accepts_gzip(accept_encoding: str | None, expected: bool) -> None:
    assert accepts_gzip(accept_encoding) is expected


BODY = b"metric_total 1\n" * 200


def test_gzip_if_accepted_compresses_and_marks_the_response() -> None:
    original = Response(200, [("content-type", "text/plain"), ("content-length", "9")], BODY)
    got = gzip_if_accepted(request(headers=[("accept-encoding", "gzip")]), original)
    assert gzip.decompress(got.body) == BODY
    assert len(got.body) < len(BODY)
    assert ("content-encoding", "gzip") in got.headers
    assert ("vary", "Accept-Encoding") in got.headers
    assert all(name != "content-length" for name, _ in got.headers)
    assert original.body == BODY  # the input is left alone

    head = gzip_if_accepted(request("HEAD", headers=[("accept-encoding", "gzip")]), original)
    assert head.body == got.body  # so HEAD reports the same Content-Length


def test_gzip_if_accepted_leaves_unwanted_or_unsuitable_responses_alone() -> None:
    plain = gzip_if_accepted(request(), Response(200, [], BODY))
    assert plain.body == BODY
    assert plain.headers == [("vary", "Accept-Encoding")]

    wants = request(headers=[("accept-encoding", "gzip")])
    small = Response(200, [], b"x" * 1023)
    assert gzip_if_accepted(wants, small) is small
    assert gzip_if_accepted(wants, Response(200, [], b"x" * 1024)).body != b"x" * 1024
    assert gzip_if_accepted(wants, small, min_bytes=10).body != small.body

    encoded = Response(200, [("Content-Encoding", "br")], BODY)
    assert gzip_if_accepted(wants, encoded) is encoded
    no_content = Response(204, [], BODY)
    assert gzip_if_accepted(wants, no_content) is no_content

    async def chunks() -> AsyncIterator[bytes]:
        yield BODY

    streamed = Response(200, [], stream=chunks())
    assert gzip_if_accepted(wants, streamed) is streamed


def test_gzip_if_accepted_merges_vary() -> None:
    wants = request(headers=[("accept-encoding", "gzip")])
    got = gzip_if_accepted(wants, Response(200, [("Vary", "Accept")], BODY))
    assert ("Vary", "Accept, Accept-Encoding") in got.headers
    got = gzip_if_accepted(wants, Response(200, [("vary", "accept-encoding")], BODY))
    assert [value for name, value in got.headers if name == "vary"] == ["accept-encoding"]
    got = gzip_if_accepted(wants, Response(200, [("vary", "*")], BODY))
    assert [value for name, value in got.headers if name == "vary"] == ["*"]


def test_request_header_is_case_insensitive_and_joins_repeats() -> None:
    req = request(headers=[("accept", "a"), ("x-one", "1"), ("accept", "b")])
    assert req.header("Accept") == "a, b"
    assert req.header("X-ONE") == "1"
    assert req.header("missing") is None


def test_response_helpers() -> None:
    text = Response.text(201, "héllo")
    assert (text.status, text.body) == (201, "héllo".encode())
    assert text.headers == [("content-type", "text/plain; charset=utf-8")]
    assert Response.text(200, "<p/>", content_type="text/html").headers == [
        ("content-type", "text/html")
    ]
    doc = Response.json(400, {"error": "bad", "n": [1, 2]})
    assert msgspec.json.decode(doc.body) == {"error": "bad", "n": [1, 2]}
    assert doc.headers == [("content-type", "application/json")]
    empty = Response.empty(204)
    assert (empty.status, empty.headers, empty.body, empty.stream) == (204, [], b"", None)
    assert Response.empty(204).headers is not empty.headers  # no shared default list


@pytest.mark.parametrize(
    ("accept_encoding", "ok"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0", False),
        ("*", True),
        ("*;q=0", False),
        ("br, *;q=0.1", True),
        ("br, *;q=0.1, gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("deflate, br", False),
    ],
)
def test_accepts_gzip_codings(accept_encoding: str | None, ok: bool) -> None:
    assert accepts_gzip(accept_encoding) is ok
