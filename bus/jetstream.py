"""The bus contract on a NATS JetStream stream (``nats://HOST:PORT[,…]/STREAM``), with nats-py.

Rule: one appended batch is one message on subject ``tally.STREAM`` whose payload
is the batch's JSONL lines, exactly the bytes the file bus would write. An
event's position is ``sequence << 20 | line index``; a batch's ``end`` (what a
checkpoint stores) is ``(sequence + 1) << 20``. Reading decodes payloads with
the file bus's ``LineDecoder``: corrupt lines (from a foreign producer) go to
``<data-dir>/quarantine.jsonl`` keyed by position, unknown types are counted.

A batch larger than the connection's ``max_payload`` (or than ``2**20 - 1``
lines) is split at line boundaries into several messages, published as one
JetStream *atomic batch* (ADR-50, nats-server >= 2.12, ``allow_atomic`` on the
stream; nats-py 2.16 has no API for it, so the ``Nats-Batch-*`` headers are set
here): the server stores all of them, at consecutive sequences, or none. Limits
of the server apply: at most 1,000 messages a batch (so about 1,000 x
``max_payload`` bytes), 50 batches in flight per stream, and a batch idle for
10 s is abandoned (nothing stored). A stream without ``allow_atomic`` that
tally may not update refuses split batches (``BusError``); a single message is
atomic anyway.

De-duplication is JetStream's (``Nats-Msg-Id``, the stream's
``duplicate_window``): a duplicate single message is acknowledged with the
first one's sequence; a split batch carries the id on its first message, the
server refuses the whole batch as a duplicate, and the first batch is found by
scanning the headers of the messages stored within the window. Either way the
answer is the first append's positions, counted from its stored payloads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Self
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    Header,
    PubAck,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from bus.config import DEFAULT_CONFIG, BusConfig
from bus.errors import BusError, BusFull, BusUnavailable
from bus.events import Event, encode_events, stamp
from bus.lines import Batch, LineDecoder, ReadStats
from bus.quarantine import Quarantine

__all__ = ["LINE_BITS", "JetStreamBus", "parse_nats_url"]

log = logging.getLogger("tally.bus")

#: A position is ``sequence << LINE_BITS | line index``.
LINE_BITS: Final = 20
_LINE_MASK: Final = (1 << LINE_BITS) - 1
#: Lines a message may hold; the last index is where an over-long message's excess is quarantined.
_MAX_LINES: Final = _LINE_MASK
_MAX_BATCH_MESSAGES: Final = 1000
#: Room left in ``max_payload`` for the headers of a message.
_HEADER_ROOM: Final = 1024
_BATCH_MESSAGES_HEADER: Final = "Tally-Batch-Messages"
_DUPLICATE_IN_BATCH: Final = 10201
#: JetStream's error codes for "no room": the server's or account's storage limits
#: (insufficient resources, storage or memory resources exceeded)...
_NO_ROOM: Final = frozenset({10023, 10028, 10047})
#: ...and a store failure, which is "no room" when a stream limit was hit
#: ("maximum bytes exceeded", "maximum messages exceeded" under discard=new).
_STORE_FAILED: Final = 10077
_POLL_S: Final = 1.0


def parse_nats_url(url: str) -> tuple[list[str], str]:
    """``nats://HOST:PORT[,HOST:PORT…]/STREAM`` -> (server URLs, stream name); else ``BusError``.

    Several comma-separated hosts are several nodes of one cluster: the client
    tries them in the order written (the first to answer wins) and moves on to
    the next when its node is lost. A user (``USER:PASSWORD@``, a comma in it
    percent-encoded) before the first host applies to all of them.
    """
    parts = urlsplit(url)
    stream = parts.path.strip("/")
    userinfo, _, netloc = parts.netloc.rpartition("@")
    # a user goes before the first host only: "h1,u@h2" is no valid list
    hosts = netloc.split(",") if "," not in userinfo else [""]
    servers = []
    for host in hosts:
        try:
            node = urlsplit(f"nats://{host}")
            valid = parts.scheme == "nats" and bool(node.hostname) and node.netloc == host
            node.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            valid = False
        if not valid:
            raise BusError(f"bus URL {url!r}: expected nats://HOST:PORT[,HOST:PORT…]/STREAM")
        servers.append(f"nats://{userinfo}@{host}" if userinfo else f"nats://{host}")
    if not stream or any(c in stream for c in " \t.*>/\\"):
        raise BusError(f"bus URL {url!r}: the stream name is missing or not valid")
    return servers, stream


def _refused(url: str, exc: nats.js.errors.APIError) -> BusError:
    """The error of an append the server refused: ``BusFull`` when it has no room for it."""
    description = exc.description or type(exc).__name__
    full = exc.err_code in _NO_ROOM or (
        exc.err_code == _STORE_FAILED and description.startswith("maximum ")
    )
    if full:
        return BusFull(f"bus {url}: the stream is full ({description}); nothing was appended")
    return BusError(f"bus {url}: append refused: {description}; nothing was appended")


def check_encoded(data: bytes, count: int) -> None:
    """``ValueError`` unless ``data`` is exactly ``count`` ``\\n``-terminated lines."""
    if data and data[-1:] != b"\n":
        raise ValueError("encoded batch must end with b'\\n'")
    lines = data.count(b"\n")
    if lines != count:
        raise ValueError(f"expected {count} lines, got {lines}")


def _split(data: bytes, max_bytes: int) -> list[bytes]:
    """``data`` cut at line ends into pieces of at most ``max_bytes`` and ``_MAX_LINES`` lines."""
    if len(data) <= max_bytes and data.count(b"\n") <= _MAX_LINES:
        return [data]
    pieces = []
    start = 0
    while start < len(data):
        stop = min(start + max_bytes, len(data))
        if stop < len(data):
            cut = data.rfind(b"\n", start, stop) + 1
            if cut <= start:
                raise BusError(f"an event of the batch is larger than max_payload ({max_bytes})")
            stop = cut
        if data.count(b"\n", start, stop) > _MAX_LINES:
            stop = start
            for _ in range(_MAX_LINES):
                stop = data.index(b"\n", stop) + 1
        pieces.append(data[start:stop])
        start = stop
    return pieces


def _line_count(payload: bytes) -> int:
    lines = payload.count(b"\n")
    return lines + 1 if payload and payload[-1:] != b"\n" else lines


def _skip_lines(payload: bytes, n: int) -> bytes:
    """``payload`` without its first ``n`` lines."""
    pos = 0
    for _ in range(n):
        pos = payload.find(b"\n", pos) + 1
        if pos == 0:
            return b""
    return payload[pos:]


def _node(nc: Client) -> str:
    """``HOST:PORT`` of the node ``nc`` is connected to (never a password)."""
    where = nc.connected_url
    if where is None or where.hostname is None:
        return "no node"
    host = f"[{where.hostname}]" if ":" in where.hostname else where.hostname
    return f"{host}:{where.port}"


class JetStreamBus:
    """The log in one JetStream stream; connects on ``__aenter__`` or first use."""

    def __init__(
        self,
        url: str,
        data_dir: Path,
        config: BusConfig = DEFAULT_CONFIG,
    ) -> None:
        self.servers, self.stream = parse_nats_url(url)
        self.url = url
        self.subject = f"tally.{self.stream}"
        self.data_dir = data_dir
        self.config = config
        self.stats = ReadStats()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connect_lock = anyio.Lock()
        self._closed = False
        self._quarantine = Quarantine(data_dir)

    # -- connection ------------------------------------------------------------

    async def _context(self) -> JetStreamContext:
        if self._closed:
            raise BusError(f"the bus {self.url} is closed")
        if self._js is not None:
            return self._js
        async with self._connect_lock:
            if self._js is None:
                self._js = await self._connect()
        return self._js

    async def _connect(self) -> JetStreamContext:
        url = self.url
        connected = False
        last_error: list[str] = []

        async def on_error(exc: Exception) -> None:
            reason = str(exc) or type(exc).__name__
            if connected:
                log.warning("bus %s: %s", url, reason)
            else:
                last_error[:] = [reason]
                log.debug("bus %s: %s", url, reason)

        async def on_disconnected() -> None:
            if connected and not self._closed:
                log.warning("bus %s: disconnected", url)

        async def on_reconnected() -> None:
            log.info("bus %s: reconnected to %s", url, _node(nc))

        options = self.config.nats
        nc = Client()
        try:
            # nats-py retries the first connection as it would a reconnection (forever
            # here, so a running server rides out a restart of NATS): bound it
            with anyio.fail_after(options.connect_timeout_s):
                await nc.connect(
                    self.servers,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    connect_timeout=max(1, round(options.connect_timeout_s)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    allow_reconnect=True,
                    dont_randomize=True,  # the URL's hosts in the order written
                    name="tally",
                )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            with anyio.CancelScope(shield=True):
                await nc.close()
            reason = last_error[0] if last_error else str(exc) or type(exc).__name__
            raise BusUnavailable(url, reason) from None
        connected = True
        log.info("bus %s: connected to %s", url, _node(nc))
        self._nc = nc
        js = nc.jetstream(timeout=options.request_timeout_s)
        try:
            await self._ensure_stream(js)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await nc.close()
            self._nc = None
            raise
        return js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        options = self.config.nats
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=self.stream,
                subjects=[self.subject],
                storage=StorageType.FILE,
                num_replicas=options.replicas,
                max_bytes=options.max_bytes,
                max_age=options.max_age_s,
                discard=DiscardPolicy(options.discard),
                duplicate_window=self.config.dedup_window_s,
                allow_atomic=True,
            )
            try:
                await js.add_stream(config)
            except nats.errors.Error as exc:
                raise BusError(f"bus {self.url}: cannot create the stream: {exc}") from None
            return
        except nats.errors.Error as exc:
            raise BusUnavailable(self.url, str(exc) or type(exc).__name__) from None
        if not info.config.allow_atomic:
            try:
                await js.update_stream(info.config.evolve(allow_atomic=True))
            except nats.errors.Error as exc:  # split batches will be refused
                log.warning("bus %s: cannot allow atomic batches on the stream: %s", self.url, exc)

    async def _info(self) -> StreamInfo:
        js = await self._context()
        try:
            return await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise BusError(f"bus {self.url}: the stream {self.stream} does not exist") from None
        except nats.errors.Error as exc:
            raise BusUnavailable(self.url, str(exc) or type(exc).__name__) from None

    # -- appending -------------------------------------------------------------

    async def append(self, events: Sequence[Event], *, msg_id: str | None = None) -> list[int]:
        """Append ``events`` as one batch, all or nothing; the positions of the events."""
        if not events:
            await self._context()
            return []
        data = encode_events(stamp(list(events)))
        return await self.append_encoded(data, len(events), msg_id=msg_id)

    async def append_encoded(
        self, data: bytes, count: int, *, msg_id: str | None = None
    ) -> list[int]:
        """Append ``count`` events already encoded as JSONL; their positions."""
        check_encoded(data, count)
        js = await self._context()
        if not count:
            return []
        assert self._nc is not None
        pieces = _split(data, self._nc.max_payload - _HEADER_ROOM)
        try:
            if len(pieces) == 1:
                headers = {Header.MSG_ID.value: msg_id} if msg_id is not None else None
                ack = await js.publish(self.subject, data, headers=headers)
                if ack.duplicate:
                    return await self._positions(ack.seq, 1)
                return list(range(ack.seq << LINE_BITS, (ack.seq << LINE_BITS) + count))
            first = await self._publish_atomic(pieces, msg_id)
        except nats.js.errors.APIError as exc:
            if exc.err_code == _DUPLICATE_IN_BATCH and msg_id is not None:
                return await self._positions_of_id(msg_id)
            raise _refused(self.url, exc) from None
        except nats.errors.Error as exc:
            raise BusUnavailable(self.url, str(exc) or type(exc).__name__) from None
        positions: list[int] = []
        for seq, piece in enumerate(pieces, first):
            base = seq << LINE_BITS
            positions += range(base, base + piece.count(b"\n"))
        return positions

    async def _publish_atomic(self, pieces: list[bytes], msg_id: str | None) -> int:
        """Publish ``pieces`` as one atomic batch; the sequence of the first."""
        if len(pieces) > _MAX_BATCH_MESSAGES:
            raise BusError(
                f"bus {self.url}: batch too large ({len(pieces)} messages of max_payload; "
                f"at most {_MAX_BATCH_MESSAGES})"
            )
        assert self._nc is not None
        batch_id = uuid.uuid4().hex
        response: dict[str, Any] = {}
        timeout = self.config.nats.request_timeout_s
        for n, piece in enumerate(pieces, 1):
            headers = {Header.BATCH_ID.value: batch_id, Header.BATCH_SEQUENCE.value: str(n)}
            if n == 1:
                headers[_BATCH_MESSAGES_HEADER] = str(len(pieces))
                if msg_id is not None:
                    headers[Header.MSG_ID.value] = msg_id
            if n == len(pieces):
                headers[Header.BATCH_COMMIT.value] = "1"
            reply = await self._nc.request(self.subject, piece, timeout=timeout, headers=headers)
            if reply.data:
                response = json.loads(reply.data)
                if "error" in response:
                    raise nats.js.errors.APIError.from_error(response["error"])
        ack = PubAck.from_response(response)
        return ack.seq - len(pieces) + 1

    async def _positions(self, first: int, messages: int) -> list[int]:
        """Positions of the lines of ``messages`` stored messages from sequence ``first``."""
        js = await self._context()
        positions: list[int] = []
        for seq in range(first, first + messages):
            msg = await js.get_msg(self.stream, seq)
            base = seq << LINE_BITS
            positions += range(base, base + _line_count(msg.data or b""))
        return positions

    async def _positions_of_id(self, msg_id: str) -> list[int]:
        """The positions of the split batch whose first message carries ``msg_id``."""
        js = await self._context()
        since = datetime.now(UTC) - timedelta(seconds=self.config.dedup_window_s + 60)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            headers_only=True,
        )
        info = await self._info()
        last = info.state.last_seq
        sub = await js.subscribe(self.subject, ordered_consumer=True, config=config)
        try:
            while True:
                msg = await sub.next_msg(timeout=self.config.nats.request_timeout_s)
                meta = msg.metadata
                headers = msg.headers or {}
                if headers.get(Header.MSG_ID.value) == msg_id:
                    count = int(headers.get(_BATCH_MESSAGES_HEADER, "1"))
                    return await self._positions(meta.sequence.stream, count)
                if meta.sequence.stream >= last or meta.num_pending == 0:
                    break
        except nats.errors.TimeoutError:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()
        raise BusError(f"bus {self.url}: {msg_id!r} is a duplicate of a batch no longer held")

    # -- reading ---------------------------------------------------------------

    def _lines(self, decoder: msgspec.json.Decoder[Any] | None) -> LineDecoder:
        schema = self.config.schema
        if decoder is None and schema.decls:  # declared types: their union (else the built-in)
            decoder = schema.decoder
        return LineDecoder(
            quarantine=self._quarantine, decoder=decoder, stats=self.stats, known=schema.classes
        )

    async def read(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        decoder: msgspec.json.Decoder[Any] | None = None,
    ) -> AsyncIterator[Batch]:
        """Batches from ``start`` to the last message stored now (or before ``end``)."""
        info = await self._info()
        stop = info.state.last_seq
        if end is not None:
            stop = min(stop, (end - 1) >> LINE_BITS)
        if max(1, start >> LINE_BITS) > stop or info.state.messages == 0:
            return
        lines = self._lines(decoder)
        async for msg, seq, pending in self._messages(start):
            if seq > stop:
                return
            yield self._decode(lines, msg.data, seq, start, end)
            if seq >= stop or pending == 0:
                return

    async def follow(self, start: int = 0) -> AsyncIterator[Batch]:
        """Batches from ``start`` on, forever: the backlog, then each append as it lands."""
        lines = self._lines(None)
        async for msg, seq, _ in self._messages(start, forever=True):
            yield self._decode(lines, msg.data, seq, start, None)

    async def _messages(
        self, start: int, *, forever: bool = False
    ) -> AsyncIterator[tuple[Msg, int, int]]:
        """``(message, sequence, pending after it)`` from the message holding ``start`` on.

        Each ``next_msg`` runs in a task of its own, so every message yields to the loop.
        """
        js = await self._context()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start >> LINE_BITS),
        )
        try:
            sub: Subscription = await js.subscribe(
                self.subject, ordered_consumer=True, config=config
            )
        except nats.errors.Error as exc:
            raise BusUnavailable(self.url, str(exc) or type(exc).__name__) from None
        try:
            idle_since = time.monotonic()
            while True:
                try:
                    msg = await sub.next_msg(timeout=_POLL_S)
                except nats.errors.TimeoutError:
                    if not forever and time.monotonic() - idle_since > _POLL_S:
                        info = await self._info()  # was the rest deleted meanwhile?
                        if info.state.messages == 0:
                            return
                    continue
                except nats.errors.ConnectionClosedError:
                    raise BusError(f"the bus {self.url} is closed") from None
                idle_since = time.monotonic()
                meta = msg.metadata
                yield msg, meta.sequence.stream, meta.num_pending
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    def _decode(
        self, lines: LineDecoder, payload: bytes, seq: int, start: int, end: int | None
    ) -> Batch:
        """The batch of message ``seq``: its lines at or past ``start``, before ``end``."""
        base = seq << LINE_BITS
        skip = start - base if start > base else 0
        batch_end = base + _LINE_MASK + 1
        if skip:
            payload = _skip_lines(payload, skip)
        if payload and payload[-1:] != b"\n":  # a foreign producer's last line
            payload += b"\n"
        if end is not None and end < batch_end:
            keep = end - base - skip
            payload = payload[: len(payload) - len(_skip_lines(payload, keep))]
            batch_end = end
        excess = b""
        # a payload shorter than _MAX_LINES bytes cannot hold too many lines: skip the count
        if len(payload) > _MAX_LINES - skip and skip + payload.count(b"\n") > _MAX_LINES:
            excess = _skip_lines(payload, _MAX_LINES - skip)
            payload = payload[: len(payload) - len(excess)]
        batch = lines.decode(payload, base + skip, batch_end, indexed=True)
        if excess:  # only a foreign producer writes such a message
            reason = f"message {seq} has more than {_MAX_LINES} lines; the rest are skipped"
            lines.reject([(base + _MAX_LINES, reason, excess)])
            batch.corrupt += 1
            lines.stats.corrupt += 1
        return batch

    # -- the log's shape -------------------------------------------------------

    async def end(self) -> int:
        """``(last sequence + 1) << 20``: where a reader that read everything resumes."""
        info = await self._info()
        return (info.state.last_seq + 1) << LINE_BITS

    async def first(self) -> int:
        """The position of the first message still held."""
        info = await self._info()
        return info.state.first_seq << LINE_BITS

    async def size(self) -> int:
        """The stream's stored bytes (payloads, headers and per-message overhead)."""
        info = await self._info()
        return info.state.bytes

    async def messages(self) -> int:
        """How many messages (appended batches) the stream holds."""
        info = await self._info()
        return info.state.messages

    async def identity(self, position: int) -> str:
        """The stream's name and creation time: a re-created stream is another log."""
        info = await self._info()
        created = info.created
        stamp_ = created.isoformat() if isinstance(created, datetime) else str(created)
        return f"nats:{self.stream}:{stamp_}"

    # -- retention -------------------------------------------------------------

    async def cut_point(self, position: int) -> int:
        """The start of the message holding ``position``: where ``drop_before`` can cut."""
        info = await self._info()
        seq = max(position >> LINE_BITS, info.state.first_seq)
        return min(seq, max(info.state.last_seq, 1)) << LINE_BITS

    async def drop_before(self, position: int) -> list[str]:
        """Purge the messages wholly before ``position`` (never the last); what went.

        The stream's own limits (``max_bytes``, ``max_age``) delete on their own;
        this is ``tally compact``'s cut.
        """
        info = await self._info()
        first = info.state.first_seq
        seq = min(position >> LINE_BITS, info.state.last_seq)
        if info.state.messages == 0 or seq <= first:
            return []
        js = await self._context()
        try:
            await js.purge_stream(self.stream, seq=seq)
        except nats.errors.Error as exc:
            raise BusUnavailable(self.url, str(exc) or type(exc).__name__) from None
        return [f"messages {first} to {seq - 1} of the stream {self.stream}"]

    # -- lifetime --------------------------------------------------------------

    async def sync(self) -> None:
        """Nothing to do: an acknowledged publish is stored (as the stream's storage keeps it)."""
        await self._context()

    async def aclose(self) -> None:
        """Close the connection; idempotent."""
        self._closed = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with anyio.CancelScope(shield=True):
                await nc.close()

    async def __aenter__(self) -> Self:
        await self._context()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"JetStreamBus({self.url!r})"
