"""MemoryWire on its own: backpressure, retries, dead-letter accounting, drain and close."""

from __future__ import annotations

import asyncio

import pytest

from fluxmix.errors import TransportError
from fluxmix.message import Message
from fluxmix.scenario import Endpoint, Scenario, WireSpec
from fluxmix.transports.base import Delivery
from fluxmix.transports.memory import MemoryBroker, MemoryWire
from tests.support.polling import wait_until


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
    assert broker.status().to_json()["wires_created"] == 2
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
    assert wire.status().to_json()["in_queue"] == 4 and wire.status().to_json()["capacity"] == 4

    rec.gate.set()
    await producer
    before = wire.stats.received
    assert await wire.drain() == 20 - before  # the rest is handled during the drain
    await consumer
    assert rec.handled == list(range(1, 21))
    assert max(depths) <= 4
    st = wire.stats
    assert (st.sent, st.received, st.dropped, st.failed) == (20, 20, 0, 0)


async def test_forwarded_dead_letter_is_not_a_drop_and_a_failing_one_is_kept_until_close() -> None:
    wire = MemoryWire(_spec(max_deliver=1))
    rec = Recorder(fail=99, forward=True)
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    await wire.send(_msg(1))
    await wire.drain()
    await consumer
    assert (wire.stats.dead_lettered, wire.stats.dropped) == (1, 0)

    # A dead_letter that keeps raising keeps the message in hand (tried again later, never a
    # silent drop); only closing the wire gives it up, counted as dropped like anything in hand.
    wire2 = MemoryWire(_spec(max_deliver=1, retry_delay=0))
    calls = 0

    async def boom(msg: Message, exc: BaseException) -> bool:
        nonlocal calls
        calls += 1
        raise TransportError("error wire gone")

    consumer2 = asyncio.create_task(wire2.consume(Delivery(rec.handle, boom, rec.flush)))
    await wire2.send(_msg(2))
    await wait_until(lambda: calls >= 1, what="the first dead-lettering")
    assert (wire2.stats.dead_lettered, wire2.stats.dropped, wire2.stats.received) == (0, 0, 0)
    await wire2.close()
    assert consumer2.done()
    assert (wire2.stats.dead_lettered, wire2.stats.dropped, wire2.stats.received) == (0, 1, 0)


def test_backoff_grows_and_is_capped() -> None:
    wire = MemoryWire(_spec(retry_delay=0.05))
    assert [wire.retry.backoff(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert wire.retry.backoff(30) == 5.0
    assert MemoryWire(_spec(retry_delay=10)).retry.backoff(4) == 10


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


class BatchRecorder(Recorder):
    """A Delivery with handle_batch, as the runtime gives one: records each batch's size and
    fails (every attempt) the seqs in `fail_seqs`."""

    def __init__(self, fail_seqs: set[int] = frozenset(), **kw: object) -> None:  # type: ignore[assignment]
        super().__init__(**kw)  # type: ignore[arg-type]
        self.fail_seqs = fail_seqs
        self.batches: list[int] = []
        self.depth_seen: list[int] = []
        self.wire: MemoryWire | None = None

    async def handle(self, msg: Message) -> None:
        self.attempts[msg.id] = self.attempts.get(msg.id, 0) + 1
        if msg.body["seq"] in self.fail_seqs:
            raise RuntimeError(f"seq {msg.body['seq']} refused")
        self.handled.append(msg.body["seq"])

    async def handle_batch(self, msgs: list[Message], cursor: object) -> tuple[int, Exception | None]:
        await self.gate.wait()
        self.batches.append(len(msgs))
        start = cursor.started  # type: ignore[attr-defined]
        for i, msg in enumerate(msgs):
            cursor.started = start + i + 1  # type: ignore[attr-defined]
            assert self.wire is not None
            self.depth_seen.append(self.wire.depth)
            try:
                await self.handle(msg)
            except Exception as exc:
                return i, exc
        return len(msgs), None

    def delivery(self) -> Delivery:
        return Delivery(self.handle, self.dead_letter, self.flush, handle_batch=self.handle_batch)


async def test_batches_keep_order_and_the_bound_and_a_failing_message_fails_alone() -> None:
    wire = MemoryWire(_spec(queue_size=8, max_deliver=3, retry_delay=0))
    rec = BatchRecorder(fail_seqs={5, 13})
    rec.wire = wire
    rec.gate.clear()
    consumer = asyncio.create_task(wire.consume(rec.delivery()))
    depths: list[int] = []

    async def produce() -> None:
        for n in range(1, 41):
            await wire.send(_msg(n))
            depths.append(wire.depth)

    producer = asyncio.create_task(produce())
    await wait_until(lambda: wire.stats.sent == 8)
    for _ in range(20):
        await asyncio.sleep(0)
    assert wire.stats.sent == 8 and wire.depth == 8  # a batch taken but not started still counts as queued
    rec.gate.set()
    await producer
    await wire.drain()
    await consumer
    assert max(rec.batches) > 1  # the consumer took what was there
    assert max(depths + rec.depth_seen) <= 8  # the bound holds per message, batch or not
    assert rec.handled == [n for n in range(1, 41) if n not in (5, 13)]  # order kept around the failures
    assert [seq for seq, _ in rec.dead] == [5, 13]
    assert rec.attempts["5"] == 3 and rec.attempts["13"] == 3  # retried alone...
    assert all(rec.attempts[str(n)] == 1 for n in range(1, 41) if n not in (5, 13))  # ...neighbours once
    st = wire.stats
    assert (st.sent, st.received, st.failed, st.redelivered, st.dead_lettered) == (40, 40, 6, 4, 2)
