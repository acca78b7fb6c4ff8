"""Where a loop's events go: the local bus, or a remote tally through the spool.

Rule: ``send`` never blocks on the network and never raises: the agent's run must
not wait or fail because tally is slow or away. The remote sink spools each batch
first and delivers it on its own thread, in order, one POST per batch with the
batch's ``Idempotency-Key``; a batch leaves the spool only after a 200.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from anyio.from_thread import BlockingPortal, start_blocking_portal

from bus.config import BusConfig
from bus.contract import Bus, open_bus
from bus.errors import BusError
from bus.events import Event, encode_events, stamp
from server.loop.spool import Spool, SpoolBatch, new_batch

__all__ = ["EventSink", "LocalSink", "RemoteSink", "Say"]

#: Writes one line to stderr, prefixed ``tally loop: ``.
Say = Callable[[str], None]

#: Seconds to connect and to wait for each answer.
REQUEST_TIMEOUT_S: Final = 5.0
#: Seconds between attempts while the remote end is away (doubling up to the max).
RETRY_MIN_S: Final = 0.2
RETRY_MAX_S: Final = 5.0
#: Statuses after which the same batch would be refused again: set it aside.
_REFUSED: Final = frozenset({400, 413, 422})
_EVENTS_PATH: Final = "/api/v1/events"


class EventSink(Protocol):
    def send(self, events: list[Event]) -> None:
        """Take a batch of events (stamped with the wall clock where ``ts`` is missing)."""

    def close(self) -> None:
        """Deliver what can be delivered in bounded time, say what is left, release files."""


class LocalSink:
    """Appends each batch to the bus (``--bus``, else the files in ``data_dir``), in order.

    The bus contract is async; the loop's threads reach it through one private event
    loop (an anyio blocking portal), so the bus may be files or JetStream alike.
    """

    def __init__(self, url: str | None, data_dir: Path, config: BusConfig, say: Say) -> None:
        self._portal_cm = start_blocking_portal("asyncio")
        self._portal: BlockingPortal = self._portal_cm.__enter__()
        self._bus: Bus = open_bus(url, data_dir, config)
        self._order = threading.Lock()
        self._say = say
        self.lost = 0

    def send(self, events: list[Event]) -> None:
        try:
            with self._order:  # stamped and appended in one step: ts rises along the log
                self._portal.call(self._bus.append, stamp(events))
        except BusError as exc:
            self.lost += len(events)
            self._say(f"cannot append {len(events)} events: {exc}")

    def close(self) -> None:
        try:
            self._portal.call(self._bus.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
        if self.lost:
            self._say(f"{self.lost} events could not be appended to the log")


class RemoteSink:
    """Spools each batch, and delivers the spool to ``url``'s ``POST /api/v1/events``."""

    def __init__(
        self,
        url: str,
        spool: Spool,
        say: Say,
        *,
        token: str | None = None,
        flush_timeout_s: float = 5.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._path = parts.path.rstrip("/") + _EVENTS_PATH
        self._token = token
        self._spool = spool
        self._say = say
        self._flush_timeout_s = flush_timeout_s
        self._order = threading.Lock()
        self._wake = threading.Condition()
        self._closing = False
        self._deadline: float | None = None  # flushing: give up at this monotonic time
        self._outage = False
        self.delivered_batches = 0
        self._thread = threading.Thread(target=self._run, name="tally-loop-delivery", daemon=True)
        self._thread.start()

    # -- the loop's side ------------------------------------------------------------

    def send(self, events: list[Event]) -> None:
        with self._order:  # stamped and spooled in one step: ts rises along the spool
            self._spool.append(new_batch(stamp(events)))
        with self._wake:
            self._wake.notify()

    def close(self) -> None:
        """Flush for up to ``flush_timeout_s``, then say what is left in the spool."""
        with self._wake:
            self._deadline = time.monotonic() + self._flush_timeout_s
            self._closing = True
            self._wake.notify()
        self._thread.join(self._flush_timeout_s + REQUEST_TIMEOUT_S)
        left = self._spool.stats()
        if left.batches:
            self._say(
                f"{self.url}: {left.events} events left in {self._spool.path} "
                "(a tally loop with this spool delivers them first)"
            )
        self._spool.close()

    # -- the delivery thread ----------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_MIN_S
        while True:
            batch = self._spool.peek()
            if batch is None:
                with self._wake:
                    if self._closing:
                        return
                    if self._spool.peek() is None:
                        self._wake.wait()
                continue
            if self._past_deadline():
                return
            outcome = self._post(batch)
            match outcome:
                case 200:
                    self._spool.ack(batch)
                    self.delivered_batches += 1
                    delay = RETRY_MIN_S
                    if self._outage:
                        self._outage = False
                        self._say(f"{self.url}: reachable again, delivering the spool")
                    continue
                case status if isinstance(status, int) and status in _REFUSED:
                    self._set_aside(batch, f"HTTP {status}")
                    continue
                case _:
                    if not self._outage:
                        self._outage = True
                        left = self._spool.stats().events
                        why = "unreachable" if isinstance(outcome, str) else f"HTTP {outcome}"
                        self._say(f"{self.url}: {why}, spooling {left} events")
            with self._wake:
                self._wake.wait(self._retry_wait(delay))
            delay = min(delay * 2, RETRY_MAX_S)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _retry_wait(self, delay: float) -> float:
        if self._deadline is None:
            return delay
        return max(0.0, min(delay, self._deadline - time.monotonic()))

    def _timeout(self) -> float:
        if self._deadline is None:
            return REQUEST_TIMEOUT_S
        return max(0.05, min(REQUEST_TIMEOUT_S, self._deadline - time.monotonic()))

    def _post(self, batch: SpoolBatch) -> int | str:
        """The HTTP status of one attempt, or why there was none."""
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self._timeout())
        headers = {
            "Content-Type": "application/x-ndjson",
            "Idempotency-Key": batch.id,
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            conn.request("POST", self._path, body=encode_events(batch.events), headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            return str(exc) or type(exc).__name__
        finally:
            conn.close()

    def _set_aside(self, batch: SpoolBatch, why: str) -> None:
        """A batch the server refuses: move it to ``<spool>.rejected`` and go on."""
        rejected = self._spool.path.with_name(self._spool.path.name + ".rejected")
        with rejected.open("ab") as f:
            f.write(encode_events(batch.events))
        self._spool.ack(batch)
        self._say(f"{self.url}: {why}: {len(batch.events)} events refused, kept in {rejected}")
