"""Real `tally serve` subprocesses and tiny HTTP/SSE clients for the server's integration tests.

`tally_server(data_dir, *args)` starts `python -m server serve --port 0 --data-dir D *args`,
reads the listening line for the port, waits for /readyz 200, and on exit sends SIGTERM and
waits. Every response a `TallyServer` receives is tallied in `responses`, so a test can
predict this process's own `conductor_api_requests_total` counts exactly.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

TALLY: Final = (sys.executable, "-m", "server")
LISTENING: Final = re.compile(rb"^tally listening on http://(?P<host>.+):(?P<port>\d+)$")
OTLP_LISTENING: Final = re.compile(rb"^tally OTLP receiver on http://(?P<host>.+):(?P<port>\d+)$")

#: Families only a running server renders (wall clock, end of bus, checkpoints, SSE).
SERVER_ONLY: Final = (
    "conductor_uptime_seconds",
    "tally_end_offset_bytes",
    "tally_checkpoint_offset_bytes",
    "tally_sse_",
    "tally_otlp_",
    "tally_append_errors_total",
)
API_REQUESTS: Final = "conductor_api_requests_total"
#: What two servers folding one log may render differently: their own process's.
PROCESS_ONLY: Final = (
    "conductor_uptime_seconds",
    "tally_sse_",
    "tally_otlp_",
    "tally_checkpoint_offset_bytes",
    "tally_append_errors_total",
    API_REQUESTS,
)


# -- the command line ----------------------------------------------------------


def tally(
    data_dir: Path, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m server ARGS --data-dir D` to completion."""
    proc = subprocess.run(
        [*TALLY, *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tally {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}"
        )
    return proc


def tail(data_dir: Path) -> list[dict[str, Any]]:
    """`tally tail`: every event of the log with its offset."""
    out = tally(data_dir, "tail").stdout
    return [json.loads(line) for line in out.splitlines()]


def bus_files(data_dir: Path) -> dict[str, bytes]:
    bus = data_dir / "bus"
    if not bus.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(bus.iterdir()) if p.suffix == ".jsonl"}


# -- HTTP ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
    host: str = "127.0.0.1",
) -> Reply:
    """One request on a fresh connection (http.client knows HEAD has no body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


# -- metrics text ------------------------------------------------------------------


def metric_name(line: str) -> str:
    """The metric (family or sample) name a text-format line is about."""
    if line.startswith("#"):
        parts = line.split(" ", 3)
        return parts[2] if len(parts) > 2 else ""
    return re.split(r"[{ ]", line, maxsplit=1)[0]


def without(text: str, prefixes: Iterable[str]) -> list[str]:
    """The lines of `text` except those (samples, HELP, TYPE) of names with these prefixes."""
    drop = tuple(prefixes)
    return [line for line in text.splitlines() if not metric_name(line).startswith(drop)]


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def api_requests(text: str) -> Counter[tuple[str, str]]:
    """conductor_api_requests_total as {(method, status): count}."""
    out: Counter[tuple[str, str]] = Counter()
    pattern = re.compile(rf'^{API_REQUESTS}{{method="([^"]*)",status="([^"]*)"}} (\S+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            out[(match[1], match[2])] = int(float(match[3]))
    return out


# -- the server process -----------------------------------------------------------------


@dataclass
class TallyServer:
    proc: subprocess.Popen[bytes]
    port: int
    host: str
    data_dir: Path
    stderr_file: IO[bytes]
    token: str | None = None
    #: With ``--otlp-port``: the second port (read from the second stdout line).
    otlp_port: int | None = None
    responses: Counter[tuple[str, str]] = field(default_factory=Counter)
    _stderr: str | None = None  # kept once the process is gone and the file closed

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        """Everything the server logged so far (all of it, after the context exited)."""
        if self._stderr is not None:
            return self._stderr
        self.stderr_file.flush()
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        timeout: float = 15.0,
    ) -> Reply:
        """A request; with `auth` and a token, the bearer header is added. Counts the reply."""
        all_headers = dict(headers or {})
        if auth and self.token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        reply = http_request(
            self.port, method, path, body=body, headers=all_headers, timeout=timeout
        )
        self.responses[(method, str(reply.status))] += 1
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: bytes = b"", **kwargs: Any) -> Reply:
        return self.request("POST", path, body=body, **kwargs)

    def post_events(self, events: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
        reply = self.post(
            "/api/v1/events",
            json.dumps(events).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert reply.status == 200, (reply.status, reply.body)
        doc: dict[str, Any] = reply.json()
        return doc

    def metrics(self) -> str:
        reply = self.get("/metrics")
        assert reply.status == 200, (reply.status, reply.body)
        return reply.text

    def status(self) -> dict[str, Any]:
        reply = self.get("/api/v1/status")
        assert reply.status == 200, (reply.status, reply.body)
        doc: dict[str, Any] = reply.json()
        return doc

    def wait_folded(self, offset: int, timeout: float = 15.0) -> dict[str, Any]:
        """Poll /api/v1/status until the projection folded up to `offset`; the status."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status()
            if doc["folded_offset"] >= offset:
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"folded_offset {doc['folded_offset']} never reached {offset}")
            time.sleep(0.02)

    def wait_caught_up(self, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the projection folded everything on the bus (lag 0)."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status()
            if doc["ready"] and doc["lag_bytes"] == 0:
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"never caught up: {doc}")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/readyz").status == 200:
                    return
            except OSError:  # it stopped listening: it is exiting, and says why on stderr
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"tally serve never became ready (exit {self.proc.poll()}):\n{self.stderr}"
                )
            time.sleep(0.02)

    def rss_bytes(self) -> int:
        """VmRSS of the server process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc/<pid>/status")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` (if still running) and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"tally serve ignored signal {sig}:\n{self.stderr}") from None

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


def _read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float) -> list[bytes]:
    """The first `count` stdout lines of `proc` (select + os.read; what follows is dropped)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no listening line from tally serve")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return (data.split(b"\n") + [b""] * count)[:count]


def start_server(
    data_dir: Path,
    *args: str,
    token: str | None = None,
    timeout: float = 30.0,
) -> TallyServer:
    """Start `tally serve` and return once it printed its listening line (maybe not ready)."""
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _cleanup
    proc = subprocess.Popen(
        [*TALLY, "serve", "--port", "0", "--data-dir", str(data_dir), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
    )
    try:
        line, *more = _read_lines(proc, 2 if "--otlp-port" in args else 1, timeout)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    match = LISTENING.match(line)
    if match is None:
        proc.kill()
        proc.wait(10)
        stderr_file.seek(0)
        raise AssertionError(
            f"unexpected first line {line!r} from tally serve:\n{stderr_file.read().decode()}"
        )
    otlp_port = None
    if "--otlp-port" in args:
        second = OTLP_LISTENING.match(more[0])
        assert second is not None, "no OTLP listening line from tally serve"
        otlp_port = int(second["port"])
    return TallyServer(
        proc=proc,
        port=int(match["port"]),
        host=match["host"].decode(),
        data_dir=data_dir,
        stderr_file=stderr_file,
        token=token,
        otlp_port=otlp_port,
    )


def _cleanup(server: TallyServer) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)
    if server.proc.stdout is not None:
        server.proc.stdout.close()
    server._stderr = server.stderr
    server.stderr_file.close()


def stop_server(server: TallyServer) -> None:
    """SIGTERM `server`, wait for it, and release its pipes (what `tally_server` does on exit)."""
    _cleanup(server)


@contextmanager
def tally_server(
    data_dir: Path,
    *args: str,
    token: str | None = None,
    ready: bool = True,
) -> Iterator[TallyServer]:
    """A running `tally serve` (ready unless `ready=False`); SIGTERM and wait on exit."""
    server = start_server(data_dir, *args, token=token)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        _cleanup(server)


# -- server-sent events -------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str = "message"
    id: str | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SseClient:
    """A raw-socket GET of an event stream: parses the head, de-chunks, splits SSE events."""

    def __init__(
        self,
        port: int,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", "Host: test", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._raw = bytearray()
        self._body = bytearray()
        self.closed = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._raw:
            self._recv(deadline)
        head, _, rest = bytes(self._raw).partition(b"\r\n\r\n")
        self._raw = bytearray(rest)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)
        }
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    def _recv(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no SSE data in time")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise EOFError("the server closed the stream")
        self._raw += data

    def _dechunk(self) -> None:
        if not self.chunked:
            self._body += self._raw
            self._raw.clear()
            return
        while True:
            line_end = self._raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self._raw[:line_end]).split(b";")[0], 16)
            if size == 0:
                self.closed = True
                return
            if len(self._raw) < line_end + 2 + size + 2:
                return
            self._body += self._raw[line_end + 2 : line_end + 2 + size]
            del self._raw[: line_end + 2 + size + 2]

    def next_event(self, timeout: float = 5.0) -> SseEvent:
        """The next block (an event, a `retry:` hint or a comment such as a heartbeat)."""
        deadline = time.monotonic() + timeout
        while True:
            self._dechunk()
            end = self._body.find(b"\n\n")
            if end >= 0:
                block = bytes(self._body[:end]).decode()
                del self._body[: end + 2]
                return _parse_block(block)
            if self.closed:
                raise EOFError("the server ended the stream")
            self._recv(deadline)

    def next_frame(self, timeout: float = 5.0) -> SseEvent:
        """The next event with data (skips retry hints and heartbeats)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.001, deadline - time.monotonic()))
            if event.data:
                return event

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_block(block: str) -> SseEvent:
    event = SseEvent()
    data: list[str] = []
    for line in block.split("\n"):
        if line.startswith(":"):
            event.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event.event = value
        elif name == "id":
            event.id = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            event.retry = int(value)
    event.data = "\n".join(data)
    return event
