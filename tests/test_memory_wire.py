"""MemoryWire on its own: backpressure, retries, dead-letter accounting, drain and close."""

from __future__ import annotations

import asyncio

import pytest

from fluxmix.errors import TransportError
from fluxmix.message import Message
from fluxmix.scenario import Endpoint, Scenario, WireSpec
from fluxmix.transports.base import Delivery
from fluxmix.transports.memory import MemoryBroker, MemoryWire
from test_runtime_helpers import wait_until


def _spec(**options: object) -> WireSpec:
    return WireSpec(Endpoint("a", "out"), Endpoint("b", "in"), "memory", dict(options))


def _msg(n: int) -> Message:
    return Message(id=str(n), body={"seq": n})


class Recorder:
    """A Delivery whose handle can be gated and made to fail."""

    def __init__(self, *, fail: int = 0, forward: bool | None = False) -> None:
        self.handled: list[int] = []
        self.dead: list[tuple[int, str]] = []
        self.flushes = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail
        self.attempts: dict[str, int] = {}
        self.forward = forward

    async def handle(self, msg: Message) -> None:
        await self.gate.wait()
        n = self.attempts[msg.id] = self.attempts.get(msg.id, 0) + 1
        if n <= self.fail:
            raise RuntimeError(f"attempt {n}")
        self.handled.append(msg.body["seq"])

    async def dead_letter(self, msg: Message, exc: BaseException) -> bool | None:
        self.dead.append((msg.body["seq"], str(exc)))
        return self.forward

    async def flush(self) -> None:
        self.flushes += 1

    def delivery(self) -> Delivery:
        return Delivery(self.handle, self.dead_letter, self.flush)


def test_broker_uses_default_and_wire_option_sizes() -> None:
    broker = MemoryBroker(queue_size=7)
    scen = Scenario(name="s", gears=(), wires=())
    assert broker.wire(scen, "h", _spec()).capacity == 7
    assert broker.wire(scen, "h", _spec(queue_size=3)).capacity == 3
    assert broker.status()["wires_created"] == 2
    with pytest.raises(TransportError):
        MemoryBroker(queue_size=0)


async def test_full_queue_blocks_the_producer_and_drops_nothing() -> None:
    wire = MemoryWire(_spec(queue_size=4))
    rec = Recorder()
    rec.gate.clear()  # the consumer takes one message and then hangs on it
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    depths: list[int] = []

    async def produce() -> None:
        for n in range(1, 21):
            await wire.send(_msg(n))
            depths.append(wire.depth)

    producer = asyncio.create_task(produce())
    await wait_until(lambda: wire.depth == 4 and wire.stats.sent == 5)
    for _ in range(20):  # give the producer every chance to overrun the bound
        await asyncio.sleep(0)
    assert not producer.done()
    assert wire.depth == 4 and wire.stats.sent == 5  # 4 queued + 1 in hand; the 6th send waits
    assert wire.status()["in_queue"] == 4 and wire.status()["capacity"] == 4

    rec.gate.set()
    await producer
    before = wire.stats.received
    assert await wire.drain() == 20 - before  # the rest is handled during the drain
    await consumer
    assert rec.handled == list(range(1, 21))
    assert max(depths) <= 4
    st = wire.stats
    assert (st.sent, st.received, st.dropped, st.failed) == (20, 20, 0, 0)


async def test_retries_then_dead_letter_counted_as_drop_when_not_forwarded() -> None:
    wire = MemoryWire(_spec(max_deliver=3, retry_delay=0))
    rec = Recorder(fail=99, forward=False)
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    await wire.send(_msg(1))
    await wire.drain()
    await consumer
    assert rec.attempts["1"] == 3
    assert rec.dead == [(1, "attempt 3")]
    st = wire.stats
    assert (st.failed, st.redelivered, st.dead_lettered, st.dropped, st.received) == (3, 2, 1, 1, 1)


async def test_retry_succeeds_before_the_last_attempt() -> None:
    wire = MemoryWire(_spec(max_deliver=5, retry_delay=0.001))
    rec = Recorder(fail=2)
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    await wire.send(_msg(1))
    await wire.drain()
    await consumer
    assert rec.handled == [1] and rec.dead == []
    assert (wire.stats.failed, wire.stats.redelivered, wire.stats.dead_lettered) == (2, 2, 0)


async def test_forwarded_dead_letter_is_not_a_drop_and_failing_dead_letter_is() -> None:
    wire = MemoryWire(_spec(max_deliver=1))
    rec = Recorder(fail=99, forward=True)
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    await wire.send(_msg(1))
    await wire.drain()
    await consumer
    assert (wire.stats.dead_lettered, wire.stats.dropped) == (1, 0)

    wire2 = MemoryWire(_spec(max_deliver=1))

    async def boom(msg: Message, exc: BaseException) -> bool:
        raise TransportError("error wire gone")

    consumer2 = asyncio.create_task(wire2.consume(Delivery(rec.handle, boom, rec.flush)))
    await wire2.send(_msg(2))
    await wire2.drain()
    await consumer2
    assert (wire2.stats.dead_lettered, wire2.stats.dropped, wire2.stats.received) == (1, 1, 1)


def test_backoff_grows_and_is_capped() -> None:
    wire = MemoryWire(_spec(retry_delay=0.05))
    assert [wire._backoff(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert wire._backoff(30) == 5.0
    assert MemoryWire(_spec(retry_delay=10))._backoff(4) == 10


async def test_drain_waits_for_the_message_in_hand_and_counts() -> None:
    wire = MemoryWire(_spec())
    rec = Recorder()
    rec.gate.clear()
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    for n in range(1, 6):
        await wire.send(_msg(n))
    drain = asyncio.create_task(wire.drain())
    await asyncio.sleep(0.01)
    assert not drain.done()  # the consumer still holds message 1
    rec.gate.set()
    assert await drain == 5
    await consumer
    assert consumer.done() and rec.handled == [1, 2, 3, 4, 5]
    assert rec.flushes >= 1  # flushed downstream when it went idle


async def test_drain_without_consumer_returns_zero() -> None:
    wire = MemoryWire(_spec())
    assert await wire.drain() == 0


async def test_close_counts_what_it_abandons_and_refuses_sends() -> None:
    wire = MemoryWire(_spec())
    rec = Recorder()
    rec.gate.clear()
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    for n in range(1, 4):
        await wire.send(_msg(n))
    await wait_until(lambda: wire.depth == 2)
    await wire.close()
    assert consumer.done()
    assert wire.stats.dropped == 3  # one in hand + two queued, never silently
    with pytest.raises(TransportError):
        await wire.send(_msg(9))


async def test_second_consumer_is_refused() -> None:
    wire = MemoryWire(_spec())
    rec = Recorder()
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    await asyncio.sleep(0)
    with pytest.raises(TransportError):
        await wire.consume(rec.delivery())
    await wire.drain()
    await consumer
