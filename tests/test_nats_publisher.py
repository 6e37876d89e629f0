"""The durable publisher's fast-ingest batches broken mid-send, against a real nats-server: the
server is frozen (SIGSTOP) while a batch is being written, the client declares the connection
stale, and the batch's next publish fails on the client's full reconnect buffer. Then the server
either crashes (what the batch had sent is lost) or resumes (it is stored, and resent copies are
de-duplicated): either way every message arrives once and in the order it was sent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fluxmix.errors import NatsUnavailableError
from fluxmix.message import Message, source_id
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.transports.embedded import EmbeddedNats
from fluxmix.transports.nats import NatsWire, stream_name

from tests.support.nats import nats_unavailable
from tests.support.polling import wait_until
from tests.support.wires import Collector, broker_for, make_scenario, make_wire

pytestmark = pytest.mark.nats

TOTAL = 500  # one fast batch (FAST_MAX)
# 500 x 64 kB is far more than loopback socket buffers hold, so the frozen server stops the
# client's writes mid-batch; the small client buffer then fails a publish while it reconnects.
PAD = "x" * 64_000
CLIENT = {"ping_interval": 0.25, "max_outstanding_pings": 2, "pending_size": 256 * 1024}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    embedded = EmbeddedNats(tmp_path / "nats")  # keeps its port across a restart
    try:
        await embedded.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    try:
        yield embedded
    finally:
        if embedded.pid is not None:
            os.kill(embedded.pid, signal.SIGCONT)  # a frozen server would not stop on SIGTERM
        await embedded.stop()


def big_messages(name: str) -> list[Message]:
    return [Message(id=source_id(name, "src", i), body={"seq": i, "pad": PAD}, origin="src.out") for i in range(TOTAL)]


async def freeze_during_a_batch(server: EmbeddedNats, wire: NatsWire, batch: list[Message]) -> asyncio.Task[None]:
    """Freeze the server, start sending `batch` and return once the client has declared the
    connection stale (the batch is stuck in the middle, waiting for the socket)."""
    await wire.send(Message(id=source_id("warm", "up", 0), body={"seq": -1}, origin="src.out"))
    await wire.flush()  # the publisher is started; the wire holds seq -1
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    sending = asyncio.create_task(wire.send_batch(batch))
    await wait_until(lambda: not wire.publisher.conn.is_connected, timeout=10)
    assert not sending.done(), "the batch was sent whole before the server froze: nothing broke"
    return sending


async def thaw(server: EmbeddedNats, how: str) -> None:
    assert server.pid is not None
    if how == "crash":  # what was in the frozen server's socket buffers is lost
        await server.kill()
        await server.start()
    else:  # the server reads and stores what the batch had sent
        os.kill(server.pid, signal.SIGCONT)


async def first_seen_in_order(url: str, scenario: Scenario, spec: WireSpec, want: int) -> list[int]:
    """Consume the wire like a de-duplicating sink (each seq once, in the order first seen), on
    a connection of its own with the default pings: the producer's eager stale-connection
    check would also drop this one under load, and what was delivered to the dropped connection
    would come back only after the ack wait."""
    async with broker_for(url) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        collector = Collector()
        task = asyncio.create_task(wire.consume(collector.delivery()))
        await wait_until(lambda: len({m.body["seq"] for m in collector.handled}) >= want, timeout=60)
        await asyncio.sleep(0.3)  # nothing more arrives
        await wire.drain()
        await asyncio.wait_for(task, 10)
        await wire.close()
    return list(dict.fromkeys(m.body["seq"] for m in collector.handled))


@pytest.mark.parametrize("how", ["crash", "resume"])
async def test_a_fast_batch_broken_mid_send_is_resent_in_order_and_once(
    server: EmbeddedNats, unique_name: str, how: str
) -> None:
    """What the broken batch had sent is sent again first (same ids, in order), then the rest:
    nothing behind the break overtakes it, and JetStream stores each message once."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    assert server.url is not None
    # flush_timeout: the client gives up a forced flush into the frozen socket, so the batch goes
    # on writing into its reconnect buffer until a publish fails (without it the batch waits)
    async with broker_for(server.url, ack_timeout=2.0, connect_options={**CLIENT, "flush_timeout": 0.5}) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        sending = await freeze_during_a_batch(server, wire, big_messages(unique_name))
        await wait_until(lambda: wire.publisher.broken_batches == 1, timeout=10)
        await thaw(server, how)
        await asyncio.wait_for(sending, 60)
        await asyncio.wait_for(wire.flush(), 60)
        assert wire.publisher.broken_batches == 1 and wire.publisher.refused == 0
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert info.state.messages == TOTAL + 1  # each stored once
        await wire.close()
        assert await first_seen_in_order(server.url, scenario, spec, TOTAL + 1) == [-1, *range(TOTAL)]


async def test_a_cancel_that_breaks_a_fast_batch_ends_the_send_and_a_replay_loses_nothing(
    server: EmbeddedNats, unique_name: str
) -> None:
    """A producer cancelled while its batch waits for a dead connection (a stop past its
    timeout) ends at once, though nats-py swallows the cancel inside its flush and the batch
    breaks on the next publish instead; the source replays the batch later, same ids."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    assert server.url is not None
    async with broker_for(server.url, ack_timeout=2.0, connect_options=CLIENT) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        batch = big_messages(unique_name)
        sending = await freeze_during_a_batch(server, wire, batch)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(sending, 5)  # not held until the server comes back
        assert wire.publisher.broken_batches == 1
        await thaw(server, "crash")
        await wire.send_batch(batch)  # the replay (same ids)
        await asyncio.wait_for(wire.flush(), 60)
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert info.state.messages == TOTAL + 1  # each stored once
        await wire.close()
        assert await first_seen_in_order(server.url, scenario, spec, TOTAL + 1) == [-1, *range(TOTAL)]
