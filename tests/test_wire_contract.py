"""The Wire contract (fluxmix/transports/base.py), run against every transport.

One test per promise, parametrized over `memory` and `standard` the way dramatiq parametrizes its
broker fixture: `transport` is a small adapter that makes wires, and a "new process" for a
durable wire. `standard` runs against a real nats-server (the `nats_url` fixture), never a mock.
What only one transport does (memory's queue internals, JetStream naming, de-duplication,
consumer re-creation) stays in test_memory_wire.py and test_nats_wire.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fluxmix.message import Message, source_id
from fluxmix.scenario import Endpoint, Scenario, WireSpec
from fluxmix.status import DurableWireStatus
from fluxmix.transports.base import Broker, Delivery, Wire
from fluxmix.transports.memory import MemoryBroker, MemoryWire
from fluxmix.transports.nats import NatsBroker, NatsWire
from tests.support.polling import wait_until
from tests.support.wires import consuming

# Polls for work on a real server on a busy machine: a correctness wait, never a timing assertion.
SERVER_WAIT = 30.0
PADDING = "x" * 900  # with the small bounds below, a few dozen messages overfill every transport


class Downstream:
    """The downstream gear as a wire sees it: records, can fail some messages, can block."""

    def __init__(self, fail: Callable[[Message], int] = lambda m: 0, forward: bool = True) -> None:
        self.handled: list[Message] = []
        self.dead: list[Message] = []
        self.attempts: Counter[str] = Counter()
        self.fail = fail  # how many first attempts of this message fail
        self.forward = forward  # dead_letter's answer: True = went to an error port
        self.dead_letter_failures = 0  # how many first dead_letter calls raise (the error port refused)
        self.dead_letter_calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_hand = asyncio.Event()
        self.flush_gate = asyncio.Event()
        self.flush_gate.set()
        self.in_flush = asyncio.Event()

    async def handle(self, message: Message) -> None:
        self.in_hand.set()
        await self.gate.wait()
        self.attempts[message.id] += 1
        if self.attempts[message.id] <= self.fail(message):
            raise RuntimeError(f"attempt {self.attempts[message.id]} of {message.id}")
        self.handled.append(message)

    async def dead_letter(self, message: Message, exc: BaseException) -> bool:
        self.dead_letter_calls += 1
        if self.dead_letter_calls <= self.dead_letter_failures:
            raise RuntimeError("the error port refused it")
        self.dead.append(message)
        return self.forward

    async def flush_downstream(self) -> None:
        self.in_flush.set()
        await self.flush_gate.wait()

    def delivery(self) -> Delivery:
        return Delivery(self.handle, self.dead_letter, self.flush_downstream)

    @property
    def seqs(self) -> list[int]:
        return [m.body["seq"] for m in self.handled]


class Transport:
    """Makes wires of one transport kind for a test, and closes everything it made."""

    kind: str
    durable: bool

    def __init__(self, name: str) -> None:
        self.name = name
        self.brokers: list[Broker] = []
        self.wires: list[Wire] = []

    def spec(self, **options: Any) -> WireSpec:
        return WireSpec(Endpoint("src", "out"), Endpoint("dst", "in"), self.kind, options)

    def messages(self, n: int, start: int = 0, padded: bool = False) -> list[Message]:
        extra = {"pad": PADDING} if padded else {}
        return [Message(id=source_id(self.name, "src", i), body={"seq": i, **extra}) for i in range(start, start + n)]

    async def wire(self, *, bounded: bool = False, ack_wait: float | None = None, **options: Any) -> Wire:
        """A wire from src.out to dst.in; `bounded`: small enough that a few dozen padded messages fill it.
        A second call with the same options is the same wire in a new process (durable wires keep
        what was not acknowledged)."""
        raise NotImplementedError

    def full(self, wire: Wire) -> bool:
        """True once a sender on this bounded wire is being held back."""
        raise NotImplementedError

    async def settled(self, wire: Wire) -> None:
        """Wait until the transport holds nothing unacknowledged for this wire (fails on timeout)."""
        raise NotImplementedError

    async def close(self) -> None:
        for wire in self.wires:
            with contextlib.suppress(Exception):
                await wire.close()
        for broker in self.brokers:
            with contextlib.suppress(Exception):
                await broker.close()


class MemoryTransport(Transport):
    kind = "memory"
    durable = False
    BOUND = 4

    async def wire(self, *, bounded: bool = False, ack_wait: float | None = None, **options: Any) -> Wire:
        if bounded:
            options["queue_size"] = self.BOUND
        broker = MemoryBroker()
        wire = broker.wire(Scenario(self.name, (), ()), "h", self.spec(**options))
        self.wires.append(wire)
        return wire

    def full(self, wire: Wire) -> bool:
        assert isinstance(wire, MemoryWire)
        return wire.depth == wire.capacity

    async def settled(self, wire: Wire) -> None:
        assert isinstance(wire, MemoryWire)
        assert wire.depth == 0 and wire.status().waiting == 0


class StandardTransport(Transport):
    kind = "standard"
    durable = True
    BATCH = 10  # messages a consumer holds at once: small, so a drain leaves most in the stream

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name)
        self.url = url

    async def wire(self, *, bounded: bool = False, ack_wait: float | None = None, **options: Any) -> Wire:
        settings: dict[str, Any] = {"batch_size": self.BATCH}
        if bounded:
            settings.update(max_bytes=16 * 1024, ack_timeout=0.5)
        if ack_wait is not None:
            settings["ack_wait"] = ack_wait
        broker = NatsBroker(self.url, **settings)
        self.brokers.append(broker)
        await broker.connect()
        spec = self.spec(**options)
        scenario = Scenario(self.name, (), (spec,))
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        self.wires.append(wire)
        return wire

    def full(self, wire: Wire) -> bool:
        assert isinstance(wire, NatsWire)
        return wire.publish_retries > 0  # the stream refused (discard new): the publisher waits and retries

    async def settled(self, wire: Wire) -> None:
        def nothing_pending() -> bool:
            status = wire.status()  # refreshes the server's consumer info in the background (at most 1/s)
            assert isinstance(status, DurableWireStatus)
            return status.pending == 0 and status.ack_pending == 0

        await wait_until(nothing_pending, timeout=SERVER_WAIT)


@pytest.fixture
async def memory_transport(unique_name: str) -> AsyncIterator[Transport]:
    transport = MemoryTransport(unique_name)
    yield transport
    await transport.close()


@pytest.fixture
async def standard_transport(nats_url: str, unique_name: str) -> AsyncIterator[Transport]:
    transport = StandardTransport(unique_name, nats_url)
    yield transport
    await transport.close()


@pytest.fixture(params=["memory", pytest.param("standard", marks=pytest.mark.nats)])
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.getfixturevalue(f"{request.param}_transport")


async def send_all(wire: Wire, messages: list[Message]) -> None:
    for message in messages:
        await wire.send(message)
    await wire.flush()


# ---------------------------------------------------------------- the promises


async def test_one_wire_delivers_every_message_once_in_order(transport: Transport) -> None:
    wire = await transport.wire()
    await send_all(wire, transport.messages(200))
    downstream = Downstream()
    async with consuming(wire, downstream):
        await wait_until(lambda: len(downstream.handled) == 200, timeout=SERVER_WAIT)
    assert downstream.seqs == list(range(200))
    assert (wire.stats.sent, wire.stats.received, wire.stats.failed, wire.stats.dropped) == (200, 200, 0, 0)
    await transport.settled(wire)


async def test_a_full_wire_holds_the_sender_back_and_loses_nothing(transport: Transport) -> None:
    wire = await transport.wire(bounded=True)
    sent = transport.messages(60, padded=True)
    producer = asyncio.create_task(send_all(wire, sent))
    await wait_until(lambda: transport.full(wire) or producer.done(), timeout=SERVER_WAIT)
    for _ in range(20):  # every chance to overrun the bound
        await asyncio.sleep(0)
    assert not producer.done()  # no consumer yet: the sender waits instead of buffering without bound
    downstream = Downstream()
    async with consuming(wire, downstream):
        await asyncio.wait_for(producer, SERVER_WAIT)
        await wait_until(lambda: len(downstream.handled) == 60, timeout=SERVER_WAIT)
    assert sorted(downstream.seqs) == list(range(60))
    assert wire.stats.dropped == 0


async def test_send_batch_keeps_order_past_the_bound(transport: Transport) -> None:
    wire = await transport.wire(bounded=True)
    downstream = Downstream()
    async with consuming(wire, downstream):
        await wire.send_batch(transport.messages(40, padded=True))  # more than the bound: sent in parts
        await wire.flush()
        await wait_until(lambda: len(downstream.handled) == 40, timeout=SERVER_WAIT)
    assert downstream.seqs == list(range(40)) and wire.stats.sent == 40


async def test_handled_messages_are_acknowledged_only_after_the_downstream_flush(transport: Transport) -> None:
    """drain() cannot finish while what the gear emitted is not yet safe; on a durable wire a
    consumer that dies in that window (no drain, no ack) loses nothing: the next one gets it all."""
    wire = await transport.wire(ack_wait=1.0)
    await send_all(wire, transport.messages(20))
    first = Downstream()
    first.flush_gate.clear()  # downstream never becomes safe
    task = asyncio.create_task(wire.consume(first.delivery()))
    await asyncio.wait_for(first.in_flush.wait(), SERVER_WAIT)
    drain = asyncio.create_task(wire.drain())
    await asyncio.sleep(0.2)
    assert not drain.done() and not task.done()
    assert first.handled  # handled, but not acknowledged yet
    if not transport.durable:
        first.flush_gate.set()
        await asyncio.wait_for(drain, SERVER_WAIT)
        await asyncio.wait_for(task, SERVER_WAIT)
        assert first.seqs == list(range(20))
        return
    await wire.close()  # the "crash"
    drain.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await drain
    assert task.done()
    restarted = await transport.wire(ack_wait=1.0)  # a new mixer process
    second = Downstream()
    async with consuming(restarted, second):
        await wait_until(lambda: len(second.handled) == 20, timeout=SERVER_WAIT)
    assert sorted(second.seqs) == list(range(20))
    assert restarted.stats.redelivered >= len(first.handled)  # the handled-but-unacknowledged came back


async def test_failures_are_retried_then_dead_lettered_while_the_rest_flows(transport: Transport) -> None:
    wire = await transport.wire(max_deliver=3, retry_delay=0.05)
    bad = {3, 17, 42}
    await send_all(wire, transport.messages(60))
    downstream = Downstream(fail=lambda m: 99 if m.body["seq"] in bad else 0)
    async with consuming(wire, downstream):
        await wait_until(lambda: len(downstream.handled) == 57 and len(downstream.dead) == 3, timeout=SERVER_WAIT)
    assert sorted(downstream.seqs) == [i for i in range(60) if i not in bad]
    assert sorted(m.body["seq"] for m in downstream.dead) == sorted(bad)
    assert all(downstream.attempts[source_id(transport.name, "src", i)] == 3 for i in bad)
    st = wire.stats
    assert (st.failed, st.redelivered, st.dead_lettered, st.received, st.dropped) == (9, 6, 3, 60, 0)
    await transport.settled(wire)  # dead letters are settled too: nothing comes back


async def test_a_retry_that_succeeds_is_not_dead_lettered(transport: Transport) -> None:
    wire = await transport.wire(max_deliver=5, retry_delay=0.01)
    await send_all(wire, transport.messages(1))
    downstream = Downstream(fail=lambda m: 2)
    async with consuming(wire, downstream):
        await wait_until(lambda: len(downstream.handled) == 1, timeout=SERVER_WAIT)
    assert downstream.dead == []
    st = wire.stats
    assert (st.failed, st.redelivered, st.dead_lettered, st.received) == (2, 2, 0, 1)


async def test_a_dead_letter_with_nowhere_to_go_is_counted_as_dropped(transport: Transport) -> None:
    wire = await transport.wire(max_deliver=1, retry_delay=0)
    await send_all(wire, transport.messages(5))
    downstream = Downstream(fail=lambda m: 99 if m.body["seq"] == 2 else 0, forward=False)
    async with consuming(wire, downstream):
        await wait_until(lambda: len(downstream.handled) == 4 and len(downstream.dead) == 1, timeout=SERVER_WAIT)
    st = wire.stats
    assert (st.dead_lettered, st.dropped, st.received) == (1, 1, 5)


async def test_a_dead_letter_that_raises_keeps_the_message_and_tries_it_again(transport: Transport) -> None:
    """Settled for both transports (one retry policy): a failed dead-lettering is neither a drop nor
    lost; the message is tried again later like a failed attempt, then dead-lettered for real."""
    wire = await transport.wire(max_deliver=1, retry_delay=0)
    await send_all(wire, transport.messages(5))
    downstream = Downstream(fail=lambda m: 99 if m.body["seq"] == 2 else 0)
    downstream.dead_letter_failures = 1
    async with consuming(wire, downstream):
        await wait_until(lambda: len(downstream.handled) == 4 and len(downstream.dead) == 1, timeout=SERVER_WAIT)
    assert downstream.dead_letter_calls == 2 and downstream.dead[0].body["seq"] == 2
    st = wire.stats
    assert (st.failed, st.redelivered, st.dead_lettered, st.dropped, st.received) == (2, 1, 1, 0, 5)
    await transport.settled(wire)


async def test_drain_finishes_the_work_in_hand_and_loses_nothing(transport: Transport) -> None:
    """A memory wire empties its queue; a durable wire finishes its batch and leaves the rest in
    its stream for the next consumer, acknowledged so nothing comes back twice."""
    wire = await transport.wire()
    await send_all(wire, transport.messages(100))
    downstream = Downstream()
    downstream.gate.clear()
    task = asyncio.create_task(wire.consume(downstream.delivery()))
    await asyncio.wait_for(downstream.in_hand.wait(), SERVER_WAIT)
    drain = asyncio.create_task(wire.drain())
    await asyncio.sleep(0.05)
    assert not drain.done()  # the message in hand is not abandoned
    downstream.gate.set()
    drained = await asyncio.wait_for(drain, SERVER_WAIT)
    await asyncio.wait_for(task, SERVER_WAIT)
    assert 1 <= drained <= len(downstream.handled) and downstream.handled
    assert wire.stats.dropped == 0
    if not transport.durable:
        assert downstream.seqs == list(range(100)) and drained == 100
        return
    assert len(downstream.handled) <= StandardTransport.BATCH  # only what it held; the rest stayed in the stream
    restarted = await transport.wire()
    rest = Downstream()
    async with consuming(restarted, rest):
        await wait_until(lambda: len(downstream.handled) + len(rest.handled) >= 100, timeout=SERVER_WAIT)
        await asyncio.sleep(0.2)
    assert sorted(downstream.seqs + rest.seqs) == list(range(100))
    assert restarted.stats.redelivered == 0


async def test_detach_hands_the_rest_to_the_next_consumer_of_the_same_wire(transport: Transport) -> None:
    """A partial reload restarts the downstream gear while the upstream keeps sending: the first
    consumer finishes the message in hand and stops; the next consume() gets the rest, in order."""
    wire = await transport.wire()
    first = Downstream()
    first.gate.clear()
    task = asyncio.create_task(wire.consume(first.delivery()))
    await send_all(wire, transport.messages(50))
    await asyncio.wait_for(first.in_hand.wait(), SERVER_WAIT)
    detach = asyncio.create_task(wire.detach())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not detach.done()  # the message in hand is finished first
    first.gate.set()
    await asyncio.wait_for(detach, SERVER_WAIT)
    await asyncio.wait_for(task, SERVER_WAIT)
    await send_all(wire, transport.messages(100)[50:])  # the upstream never stopped
    second = Downstream()
    async with consuming(wire, second):
        await wait_until(lambda: len(first.handled) + len(second.handled) >= 100, timeout=SERVER_WAIT)
    seqs = first.seqs + second.seqs
    assert first.handled and second.handled
    if transport.durable:
        assert sorted(seqs) == list(range(100))  # redelivery may reorder across consumers
    else:
        assert seqs == list(range(100))
    assert wire.stats.dropped == 0


async def test_drain_without_a_consumer_returns_zero(transport: Transport) -> None:
    wire = await transport.wire()
    assert await wire.drain() == 0


async def test_status_reports_the_transport_and_every_counter(transport: Transport) -> None:
    wire = await transport.wire(max_deliver=1, retry_delay=0)
    await send_all(wire, transport.messages(3))
    downstream = Downstream(fail=lambda m: 99 if m.body["seq"] == 1 else 0)
    async with consuming(wire, downstream):
        await wait_until(lambda: wire.stats.received == 3, timeout=SERVER_WAIT)
    status = wire.status()
    assert (status.transport, status.source, status.target) == (transport.kind, "src.out", "dst.in")
    assert {key: getattr(status, key) for key in wire.stats.as_dict()} == wire.stats.as_dict()
    assert (status.sent, status.received, status.failed, status.dead_lettered) == (3, 3, 1, 1)
    shown = status.to_json()  # what /status and the CLI show
    assert (shown["transport"], shown["from"], shown["to"], shown["received"]) == (transport.kind, "src.out", "dst.in", 3)
