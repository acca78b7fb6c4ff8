"""Requests and responses as plain values, exact-path routing and gzip negotiation.
No sockets here: everything is a function of a Request and a Response (server.http.server
does the I/O).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Final

import msgspec

__all__ = ["Handler", "Request", "Response", "Router", "accepts_gzip", "gzip_if_accepted"]

_JSON: Final = msgspec.json.Encoder()
_GZIP_LEVEL: Final = 6
_BODYLESS: Final = frozenset({204, 304})


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request with its body fully read; header names are lower-case."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes
    client: str

    def header(self, name: str) -> str | None:
        """Values of header `name` (any case) joined by ", ", or None when absent."""
        wanted = name.lower()
        values = [value for key, value in self.headers if key == wanted]
        return ", ".join(values) if values else None


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """What a handler returns: a whole body, or a byte stream sent with chunked encoding.

    The server closes `stream` (aclose) once it is done with it: ended, client gone, or shutdown.
    """

    status: int
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def text(
        cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        return cls(status, [("content-type", content_type)], text.encode())

    @classmethod
    def json(cls, status: int, obj: object) -> Response:
        return cls(status, [("content-type", "application/json")], _JSON.encode(obj))

    @classmethod
    def empty(cls, status: int) -> Response:
        return cls(status)


Handler = Callable[[Request], Awaitable[Response]]


class Router:
    """Exact-path dispatch: unknown path 404, known path with another method 405 with Allow.

    A GET route also answers HEAD (the handler sees method "HEAD"; the server drops the body).
    """

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}

    def add(self, path: str, methods: Iterable[str], handler: Handler) -> None:
        wanted = [method.upper() for method in methods]
        if not wanted:
            raise ValueError(f"route {path!r} needs at least one method")
        table = self._routes.setdefault(path, {})
        for method in wanted:
            if method in table:
                raise ValueError(f"route {method} {path!r} is already registered")
            table[method] = handler

    def allowed(self, path: str) -> list[str]:
        """Methods answered on `path`, sorted; empty when the path is unknown."""
        table = self._routes.get(path, {})
        methods = set(table)
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    async def __call__(self, request: Request) -> Response:
        table = self._routes.get(request.path)
        if table is None:
            return Response.text(404, "not found\n")
        handler = table.get(request.method)
        if handler is None and request.method == "HEAD":
            handler = table.get("GET")
        if handler is None:
            response = Response.text(405, "method not allowed\n")
            response.headers.append(("allow", ", ".join(self.allowed(request.path))))
            return response
        return await handler(request)


def gzip_if_accepted(request: Request, response: Response, *, min_bytes: int = 1024) -> Response:
    """Gzip a whole body of at least `min_bytes` when Accept-Encoding allows gzip (q > 0).

    Such a response varies by Accept-Encoding whatever the outcome, so it gets `Vary`. A HEAD
    handler must build the same body as for GET so the gzipped Content-Length is reported.
    """
    if (
        response.stream is not None
        or len(response.body) < min_bytes
        or response.status in _BODYLESS
        or any(name.lower() == "content-encoding" for name, _ in response.headers)
    ):
        return response
    headers = _with_vary(response.headers, "Accept-Encoding")
    if not accepts_gzip(request.header("accept-encoding")):
        return dataclasses.replace(response, headers=headers)
    body = gzip.compress(response.body, compresslevel=_GZIP_LEVEL, mtime=0)
    headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
    headers.append(("content-encoding", "gzip"))
    return dataclasses.replace(response, headers=headers, body=body)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when an Accept-Encoding value gives gzip (or `*` without gzip) a q-value above 0."""
    if accept_encoding is None:
        return False
    gzip_q: float | None = None
    star_q: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        q = _qvalue(params)
        match coding.strip().lower():
            case "gzip" | "x-gzip":
                gzip_q = q if gzip_q is None else max(gzip_q, q)
            case "*":
                star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def _qvalue(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if math.isfinite(q) else 0.0
    return 1.0


def _with_vary(headers: list[tuple[str, str]], field: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    merged = False
    for name, value in headers:
        if name.lower() == "vary" and not merged:
            merged = True
            listed = {item.strip().lower() for item in value.split(",")}
            if field.lower() not in listed and "*" not in listed:
                out.append((name, f"{value}, {field}"))
                continue
        out.append((name, value))
    if not merged:
        out.append(("vary", field))
    return out
