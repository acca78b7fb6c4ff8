"""JetStreamBus beyond the contract: split batches, URLs, an unreachable server, a cluster."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio
import nats
import nats.js.errors
import pytest

from bus.config import BusConfig, JetStreamConfig
from bus.contract import open_bus
from bus.errors import BusError, BusFull, BusUnavailable
from bus.events import LoopStarted, encode_events
from bus.jetstream import LINE_BITS, JetStreamBus, parse_nats_url
from tests.support.nats import NatsCluster, NatsServer, find_nats_server, nats_server

pytestmark = pytest.mark.anyio

__all__ = ["nats_server"]  # the fixture, used by name

needs_server = pytest.mark.skipif(find_nats_server() is None, reason="nats-server not installed")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222/tally", (["nats://127.0.0.1:4222"], "tally")),
        ("nats://host/T-1", (["nats://host"], "T-1")),
        (
            "nats://h1:4222,h2:4223,[::1]:4224/s",
            (["nats://h1:4222", "nats://h2:4223", "nats://[::1]:4224"], "s"),
        ),
        ("nats://u:pw@h1:1,h2:2/s", (["nats://u:pw@h1:1", "nats://u:pw@h2:2"], "s")),
    ],
)
def test_urls(url: str, expected: tuple[list[str], str]) -> None:
    assert parse_nats_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "nats://127.0.0.1:4222",
        "nats://h:1/a.b",
        "nats:///x",
        "nats://h1:1,/s",
        "nats://h1:1,,h2:2/s",
        "nats://h1:1,h2:port/s",
        "nats://h1:1,u@h2:2/s",
    ],
)
def test_bad_urls_name_the_url(url: str) -> None:
    with pytest.raises(BusError, match="bus URL"):
        parse_nats_url(url)


def test_open_bus_names_the_extra_when_nats_py_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)
    with pytest.raises(BusError, match=r"pip install 'tally\[nats\]'"):
        open_bus("nats://127.0.0.1:4222/tally", tmp_path, BusConfig())


def test_open_bus_refuses_an_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="unknown bus URL"):
        open_bus("kafka://h/t", tmp_path, BusConfig())


async def test_an_unreachable_server_is_one_clear_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    url = "nats://127.0.0.1:1/tally"
    config = BusConfig(nats=JetStreamConfig(connect_timeout_s=1))
    with caplog.at_level(logging.WARNING, logger="tally.bus"), pytest.raises(BusUnavailable) as err:
        async with JetStreamBus(url, tmp_path, config):
            pass
    assert err.value.url == url
    assert url in str(err.value)
    assert "Traceback" not in capfd.readouterr().err


@needs_server
async def test_a_batch_over_max_payload_is_split_and_lands_whole(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    events = [LoopStarted(loop_id=f"loop-{i:06d}-" + "x" * 80, ts=1.0) for i in range(30_000)]
    data = encode_events(events)  # about 3.5 MB: four messages of at most 1 MiB
    async with JetStreamBus(f"{nats_server.url}/split", tmp_path) as bus:
        positions = await bus.append_encoded(data, len(events), msg_id="big")
        sequences = sorted({pos >> LINE_BITS for pos in positions})
        assert len(sequences) > 1
        assert sequences == list(range(sequences[0], sequences[-1] + 1))
        assert await bus.append_encoded(data, len(events), msg_id="big") == positions
        read = []
        with anyio.fail_after(30):
            async for batch in bus.read(0):
                read += list(batch)
        assert read == list(zip(positions, events, strict=True))
        assert await bus.end() == (sequences[-1] + 1) << LINE_BITS


@needs_server
async def test_a_stream_on_three_nodes_survives_losing_one(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster").start()
    try:
        config = BusConfig(nats=JetStreamConfig(replicas=3))
        url = f"{cluster.urls[0]}/replicated"
        with anyio.fail_after(60):
            while True:  # the cluster elects its JetStream leader after the nodes start
                try:
                    async with JetStreamBus(url, tmp_path, config) as bus:
                        first = await bus.append([LoopStarted(loop_id="a", ts=1.0)], msg_id="a")
                    break
                except BusError:
                    await anyio.sleep(0.5)
        cluster.nodes[2].kill()
        with anyio.fail_after(60):
            # a stream whose leader was the killed node elects another; an append that
            # timed out meanwhile may still have landed: the retry's msg_id keeps it once
            while True:
                try:
                    async with JetStreamBus(url, tmp_path, config) as bus:
                        second = await bus.append([LoopStarted(loop_id="b", ts=2.0)], msg_id="b")
                        read = [pos async for batch in bus.read(0) for pos, _ in batch]
                    break
                except BusError:
                    await anyio.sleep(0.5)
        assert read == first + second
    finally:
        cluster.stop()


@needs_server
async def test_a_killed_server_keeps_every_acknowledged_append(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # R=1: an acknowledged publish was written to the store's files (not fsynced: that is
    # the server's sync_interval), so a crash of the process alone loses none of it
    url = f"{nats_server.url}/crash"
    appended = []
    async with JetStreamBus(url, tmp_path) as bus:
        for n in range(200):
            events = [LoopStarted(loop_id=f"l{n}-{k}", ts=float(n)) for k in range(5)]
            appended += zip(await bus.append(events, msg_id=f"b{n}"), events, strict=True)
        nats_server.kill()  # right after the last acknowledgement
    nats_server.start()
    with anyio.fail_after(60):
        async with JetStreamBus(url, tmp_path) as bus:
            read = [item async for batch in bus.read(0) for item in batch]
            # the de-duplication window survives too: a retry of an acknowledged batch
            # (its answer lost in the crash) lands once
            retried = [LoopStarted(loop_id="l199-0", ts=199.0)]
            assert await bus.append(retried, msg_id="b199") == [p for p, _ in appended[-5:]]
            assert await bus.messages() == 200
    assert read == appended


@needs_server
async def test_a_bus_on_several_hosts_moves_on_when_its_node_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = NatsCluster(tmp_path / "cluster").start()
    try:
        n0, n1, _ = cluster.nodes
        hosts = ",".join(url.removeprefix("nats://") for url in cluster.urls)
        url = f"nats://{hosts}/several"
        config = BusConfig(nats=JetStreamConfig(replicas=3))
        caplog.set_level(logging.INFO, logger="tally.bus")
        # not entered: its first use connects, and connects again after a failure (the
        # cluster elects its JetStream leader after the nodes start)
        bus = JetStreamBus(url, tmp_path, config)
        try:
            first = await _append_when_able(bus, "a")
            assert f"connected to 127.0.0.1:{n0.port}" in caplog.text  # the first host written
            n0.kill()
            second = await _append_when_able(bus, "b")  # the same connection, on another node
        finally:
            await bus.aclose()
        assert f"reconnected to 127.0.0.1:{n1.port}" in caplog.text
        caplog.clear()
        bus = JetStreamBus(url, tmp_path, config)  # opened while n0 is down
        try:
            third = await _append_when_able(bus, "c")
            with anyio.fail_after(60):
                read = [pos async for batch in bus.read(0) for pos, _ in batch]
        finally:
            await bus.aclose()
        assert f"connected to 127.0.0.1:{n1.port}" in caplog.text
        assert read == first + second + third
    finally:
        cluster.stop()


async def _append_when_able(bus: JetStreamBus, name: str) -> list[int]:
    """Append one event under msg_id ``name``, retrying while the cluster elects leaders."""
    with anyio.fail_after(60):
        while True:
            try:
                return await bus.append([LoopStarted(loop_id=name, ts=1.0)], msg_id=name)
            except BusError:
                await anyio.sleep(0.5)


@needs_server
async def test_a_server_out_of_storage_refuses_with_bus_full_and_recovers(tmp_path: Path) -> None:
    # the server's own JetStream limit (max_file_store), taken up by another stream
    conf = tmp_path / "small.conf"
    conf.write_text("jetstream { max_file_store: 1MB }\n")
    server = NatsServer(tmp_path / "store", extra_args=["-c", str(conf)]).start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="filler", subjects=["filler"])
        async with JetStreamBus(f"{server.url}/small", tmp_path) as bus:
            kept = await bus.append([LoopStarted(loop_id="first", ts=1.0)])
            with pytest.raises(nats.js.errors.APIError):
                for _ in range(200):  # until the server's store is full
                    await js.publish("filler", b"x" * 10_000)
            events = [LoopStarted(loop_id=f"l{i}", ts=2.0) for i in range(100)]
            with pytest.raises(BusFull) as err:
                await bus.append(events)
            assert str(err.value) == (
                f"bus {server.url}/small: the stream is full (insufficient resources); "
                "nothing was appended"
            )
            assert await bus.messages() == 1
            await js.delete_stream("filler")  # room returns: no restart, no reconnect
            positions = await bus.append(events)
            read = [item async for batch in bus.read(0) for item in batch]
            assert [p for p, _ in read] == kept + positions
        await nc.close()
    finally:
        server.stop()
