"""The consumer's stop against a real nats-server: after drain() returns, nothing it was delivered
waits for ack_wait (the ack fence after the fenced inbox drain is what guarantees it; a version
that skipped that fence when the drain's own fence seemed to cover the acks left 39-64 messages
ack-pending here)."""

from __future__ import annotations

import asyncio

import pytest

from fluxmix.message import Message
from fluxmix.transports.nats import NatsWire
from tests.support.polling import wait_until
from tests.support.wires import Collector, broker_for, make_scenario, make_wire, send_steadily

pytestmark = pytest.mark.nats


async def _ack_pending(wire: NatsWire) -> int:
    info = await wire.broker.connection.jetstream().consumer_info(wire.stream, wire.consumer)
    return info.num_ack_pending or 0


async def test_stops_under_load_leave_nothing_for_ack_wait(nats_url: str, unique_name: str) -> None:
    """Rounds delivered before the UNSUB took effect are handled during the stop, then fenced."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    total = 3000
    seen: list[int] = []
    async with broker_for(nats_url, batch_size=64) as broker:
        await broker.prepare(scenario, "h", [spec])
        producer_wire = broker.wire(scenario, "h", spec)

        producer = asyncio.create_task(send_steadily(producer_wire, unique_name, total))
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
