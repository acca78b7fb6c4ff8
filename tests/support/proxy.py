"""A real TCP proxy in front of `tally serve` that can lose answers.

`AnswerLosingProxy(upstream_port, lose=predicate)` listens on an ephemeral port and
relays each HTTP/1.1 request (one per connection) to the upstream server; when
`lose(request_body)` is true the upstream's answer is read and dropped, and the
client's connection closed: the server did the work, the client never heard.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP message from ``sock``: (head with its blank line, body by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the body")
        body += chunk
    return head + b"\r\n\r\n", body


class AnswerLosingProxy:
    def __init__(self, upstream_port: int, lose: Callable[[bytes], bool]) -> None:
        self._upstream = upstream_port
        self._lose = lose
        self.lost: list[bytes] = []  # request bodies whose answers were dropped
        self.relayed = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            try:
                head, body = _read_message(client)
                with socket.create_connection(("127.0.0.1", self._upstream)) as upstream:
                    upstream.sendall(head + body)
                    answer_head, answer_body = _read_message(upstream)
                self.relayed += 1
                if self._lose(body):
                    self.lost.append(body)
                    return  # the answer is lost: close without a word
                client.sendall(answer_head + answer_body)
            except OSError:
                return

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
