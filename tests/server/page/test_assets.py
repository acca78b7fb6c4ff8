"""The page's files as served by a real `tally serve`: content types, ETags, HEAD, the token.

And as shipped: each file is package data, and none of them reaches for the network.
"""

from __future__ import annotations

import fnmatch
import gzip
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.page import ASSETS, PageAssets
from tests.support.serverproc import TallyServer, tally_server

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TallyServer]:
    with tally_server(tmp_path_factory.mktemp("assets") / "tally-data") as running:
        yield running


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        ("/", "text/html; charset=utf-8", b'<script type="module" src="/page/page.js"'),
        ("/page/page.js", "text/javascript; charset=utf-8", b"/api/v1/history"),
        ("/page/chart.js", "text/javascript; charset=utf-8", b"export class LineChart"),
        ("/page/page.css", "text/css; charset=utf-8", b"prefers-color-scheme: dark"),
    ],
)
def test_each_asset_is_served_with_its_type_and_etag(
    server: TallyServer, path: str, content_type: str, needle: bytes
) -> None:
    reply = server.get(path)
    assert reply.status == 200
    assert reply.headers["content-type"] == content_type
    assert needle in reply.body
    assert reply.headers["cache-control"] == "no-cache"
    etag = reply.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{20}"', etag)
    again = server.get(path, headers={"If-None-Match": f'"other", {etag}'})
    assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)
    assert server.get(path, headers={"If-None-Match": '"other"'}).status == 200
    head = server.request("HEAD", path)
    assert (head.status, head.body) == (200, b"")
    assert head.headers["content-length"] == str(len(reply.body))


def test_assets_are_gzipped_when_accepted(server: TallyServer) -> None:
    plain = server.get("/page/page.js")
    zipped = server.get("/page/page.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == plain.body
    assert "accept-encoding" in plain.headers["vary"].lower()


def test_other_methods_and_paths(server: TallyServer) -> None:
    post = server.post("/")
    assert post.status == 405
    assert post.headers["allow"] == "GET, HEAD"
    assert server.get("/page/missing.js").status == 404
    assert server.get("/page/").status == 404


def test_the_page_is_open_while_reads_are_protected(data_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("page-token")
    args = ("--token-file", str(token_file), "--protect-reads")
    with tally_server(data_dir, *args, token="page-token") as protected:
        for path in ASSETS:
            assert protected.get(path, auth=False).status == 200, path
        assert protected.get("/api/v1/history", auth=False).status == 401
        assert protected.get("/api/v1/history").status == 200


def test_nothing_is_fetched_from_the_network() -> None:
    """Every URL in the assets is the server's own (a path) or the SVG namespace."""
    assets = PageAssets.load().assets
    assert set(assets) == set(ASSETS)
    for path, asset in assets.items():
        text = asset.body.decode()
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path, urls)
        assert "@import" not in text, path


def test_every_asset_is_package_data() -> None:
    """A non-editable install ships the files: pyproject's package-data names each one."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["server"]
    for name, _ in ASSETS.values():
        assert (REPO / "server" / "page" / name).is_file()
        assert any(fnmatch.fnmatch(f"page/{name}", p) for p in patterns), name
