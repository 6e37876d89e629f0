"""Driving one wire directly: a downstream stand-in, messages with source ids, JetStream brokers.

`Collector` records what a wire hands its downstream gear and can fail or block on demand;
`consuming` runs a consumer for a block and drains it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from fluxmix.message import Message, source_id
from fluxmix.scenario import Endpoint, Scenario, WireSpec
from fluxmix.transports.base import Delivery, Wire
from fluxmix.transports.nats import NatsBroker, NatsWire
from tests.support.polling import wait_until


def make_wire(src: str = "src.out", dst: str = "dst.in", **options: Any) -> WireSpec:
    sg, sp = src.split(".")
    dg, dp = dst.split(".")
    return WireSpec(Endpoint(sg, sp), Endpoint(dg, dp), "standard", options)


def make_scenario(name: str, *wires: WireSpec) -> Scenario:
    return Scenario(name=name, gears=(), wires=tuple(wires))


def messages(name: str, n: int, start: int = 0, gear: str = "src") -> list[Message]:
    return [Message(id=source_id(name, gear, i), body={"seq": i}, origin=f"{gear}.out") for i in range(start, start + n)]


async def send_steadily(wire: Wire, name: str, total: int, *, every: int = 50, pause: float = 0.001) -> None:
    """Send `total` source messages with a short pause every `every`: a steady stream (not one
    burst) while a test stops, restarts or kills what consumes it; then flush."""
    for m in messages(name, total):
        await wire.send(m)
        if m.body["seq"] % every == 0:
            await asyncio.sleep(pause)
    await wire.flush()


class RefusalRecorder:
    """A wire's `on_refused` hook that records each refused message and takes it as handled."""

    def __init__(self) -> None:
        self.refused: list[tuple[Message, BaseException]] = []

    async def __call__(self, message: Message, exc: BaseException) -> bool:
        self.refused.append((message, exc))
        return True


class Collector:
    """A downstream gear stand-in: records what it handled, can fail or block on demand."""

    def __init__(self, fail: Callable[[Message], bool] = lambda m: False) -> None:
        self.handled: list[Message] = []
        self.dead: list[tuple[Message, BaseException]] = []
        self.attempts: Counter[str] = Counter()
        self.fail = fail
        self.flushes = 0
        self.block_flush = asyncio.Event()
        self.block_flush.set()
        self.in_flush = asyncio.Event()

    async def handle(self, msg: Message) -> None:
        self.attempts[msg.id] += 1
        if self.fail(msg):
            raise ValueError(f"cannot handle {msg.id}")
        self.handled.append(msg)

    async def dead_letter(self, msg: Message, exc: BaseException) -> bool:
        self.dead.append((msg, exc))
        return True

    async def flush_downstream(self) -> None:
        self.in_flush.set()
        await self.block_flush.wait()
        self.flushes += 1

    def delivery(self) -> Delivery:
        return Delivery(self.handle, self.dead_letter, self.flush_downstream)

    @property
    def seqs(self) -> list[int]:
        return [m.body["seq"] for m in self.handled]


async def settled_status(wire: NatsWire) -> dict[str, Any]:
    """The wire's status once its cached consumer info says nothing is pending or unacked."""

    def settled() -> bool:
        status = wire.status().to_json()  # refreshes the consumer info in the background (at most 1/s)
        return status.get("pending") == 0 and status.get("ack_pending") == 0

    await wait_until(settled, timeout=30)  # each refresh is one consumer-info round trip: slow under load
    return wire.status().to_json()


@contextlib.asynccontextmanager
async def broker_for(url: str | list[str], **kwargs: Any):
    broker = NatsBroker(url, **kwargs)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


@contextlib.asynccontextmanager
async def consuming(wire: Wire, collector: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(wire.consume(collector.delivery()))
    try:
        yield task
    finally:
        if not task.done():
            await wire.drain()
        await asyncio.wait_for(task, 30)
