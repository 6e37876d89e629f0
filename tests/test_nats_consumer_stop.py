"""The consumer's stop against a real nats-server: the ack fence after the fenced inbox drain is
sent only when rounds were settled after the drain's own fence, and either way every ack has
reached the server when drain() returns (nothing waits for ack_wait)."""

from __future__ import annotations

import asyncio

import pytest

from fluxmix.message import Message
from fluxmix.transports.nats import NatsWire
from tests.support.polling import wait_until
from tests.support.wires import Collector, broker_for, make_scenario, make_wire, messages

pytestmark = pytest.mark.nats


async def _ack_pending(wire: NatsWire) -> int:
    info = await wire.broker.connection.jetstream().consumer_info(wire.stream, wire.consumer)
    return info.num_ack_pending or 0


async def test_an_idle_consumer_stops_with_one_fence_and_every_ack_at_the_server(nats_url: str,
                                                                                  unique_name: str) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        collector = Collector()
        task = asyncio.create_task(wire.consume(collector.delivery()))
        for m in messages(unique_name, 200):
            await wire.send(m)
        await wire.flush()
        await wait_until(lambda: len(collector.handled) == 200)
        puller = wire._puller
        assert puller is not None
        fences_before = next(puller._fence_no)
        await asyncio.wait_for(wire.drain(), 10)
        await asyncio.wait_for(task, 10)
        # the inbox's drain fence travelled behind every ack: no second fence was needed
        assert next(puller._fence_no) - fences_before == 2  # 1 fence + this call's own count
        assert await _ack_pending(wire) == 0  # checked at once: the server has every ack
        await wire.close()


async def test_stops_under_load_leave_nothing_for_ack_wait(nats_url: str, unique_name: str) -> None:
    """Rounds delivered before the UNSUB took effect are handled during the stop, then fenced."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    total = 3000
    seen: list[int] = []
    async with broker_for(nats_url, batch_size=64) as broker:
        await broker.prepare(scenario, "h", [spec])
        producer_wire = broker.wire(scenario, "h", spec)

        async def produce() -> None:
            for m in messages(unique_name, total):
                await producer_wire.send(m)
                if m.body["seq"] % 50 == 0:
                    await asyncio.sleep(0.001)
            await producer_wire.flush()

        producer = asyncio.create_task(produce())
        stops = 0
        while len(set(seen)) < total:
            wire = broker.wire(scenario, "h", spec)

            class Recording(Collector):
                async def handle(self, msg: Message) -> None:
                    seen.append(msg.body["seq"])

            task = asyncio.create_task(wire.consume(Recording().delivery()))
            await asyncio.sleep(0.02)
            await asyncio.wait_for(wire.drain(), 20)
            await asyncio.wait_for(task, 10)
            # an ack lost at the stop would stay pending for ack_wait (30 s): 2 s tells them apart
            pending = await _ack_pending(wire)
            if pending:
                await asyncio.sleep(2)
                assert await _ack_pending(wire) == 0, f"acks still pending after stop {stops}"
            await wire.close()
            stops += 1
            assert stops < 400
        await asyncio.wait_for(producer, 30)
    assert sorted(set(seen)) == list(range(total)) and len(seen) == total  # nothing lost, nothing twice
