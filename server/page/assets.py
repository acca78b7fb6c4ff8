"""The page's files, read once from the package (importlib.resources) and served as they are.

No build step and nothing from the network: ``index.html``, ``page.css``, ``page.js`` (the
data and the panels) and ``chart.js`` (one SVG line chart; both ES modules) sit beside this
module. Each answer carries a strong ETag (a hash of the bytes) and
``Cache-Control: no-cache``, so a browser revalidates and gets 304 while the file is unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

from server.http.routing import Handler, Request, Response, Router, gzip_if_accepted

__all__ = ["ASSETS", "Asset", "PageAssets"]

#: URL path -> (file in this package, content type). The page is ``/``; the rest it links.
ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page/chart.js": ("chart.js", "text/javascript; charset=utf-8"),
    "/page/page.css": ("page.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file's bytes, its content type and its ETag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')

    def answer(self, request: Request) -> Response:
        """200 with the body, or 304 when ``If-None-Match`` names this ETag."""
        headers = [("etag", self.etag), ("cache-control", "no-cache")]
        if _matches(request.header("if-none-match"), self.etag):
            return Response(304, headers)
        response = Response(200, [("content-type", self.content_type), *headers], self.body)
        return gzip_if_accepted(request, response)


class PageAssets:
    """Every asset of ``ASSETS``, loaded from the package at start."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    @classmethod
    def load(cls) -> PageAssets:
        files = resources.files("server.page")
        return cls(
            {
                path: Asset.of(files.joinpath(name).read_bytes(), ctype)
                for path, (name, ctype) in ASSETS.items()
            }
        )

    def route(self, router: Router) -> None:
        """Add ``GET`` (and so ``HEAD``) of every asset to ``router``.

        The assets hold no data, so they are never behind the token: with ``--protect-reads``
        the page asks for it and sends it on each API request (see the README).
        """
        for path, asset in self.assets.items():
            router.add(path, ["GET"], _handler(asset))


def _handler(asset: Asset) -> Handler:
    async def handle(request: Request) -> Response:
        return asset.answer(request)

    return handle


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags
