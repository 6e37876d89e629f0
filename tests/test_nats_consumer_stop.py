"""The consumer's stop against a real nats-server: nothing lost, nothing handled twice, and nothing
waits for ack_wait.

What a stop leaves behind, measured (nats-server 2.15): the pull requests still open when the inbox is
retired keep being filled by the server until it notices the interest is gone. Those deliveries reach no
subscriber, so the server puts them on its redelivery queue at once (`didNotDeliver`); consumer info
counts them as ack-pending (up to the whole credit, 64 here) until the next pull, which gets them first,
within milliseconds, with their delivery count raised by one. So ack-pending right after a stop is no sign
of a loss; what would be a loss is a delivery the client took and then neither handled nor acked: that
one would come back only after ack_wait. The durable here waits ten minutes for an ack, so such a message
would keep the loop going until its bound of stops.
"""

from __future__ import annotations

import asyncio

import pytest

from fluxmix.message import Message
from fluxmix.transports.nats import NatsWire
from tests.support.wires import Collector, broker_for, make_scenario, make_wire, send_steadily

pytestmark = pytest.mark.nats


async def _ack_pending(wire: NatsWire) -> int:
    info = await wire.broker.connection.jetstream().consumer_info(wire.stream, wire.consumer)
    return info.num_ack_pending or 0


async def test_stops_under_load_leave_nothing_for_ack_wait(nats_url: str, unique_name: str) -> None:
    """Rounds delivered before the UNSUB took effect are handled during the stop; the rest comes back
    to the next consumer at once."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    total = 3000
    seen: list[int] = []
    async with broker_for(nats_url, batch_size=64, ack_wait=600.0) as broker:
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
            await wire.close()
            stops += 1
            assert stops < 400, f"{total - len(set(seen))} messages did not come back (waiting for ack_wait?)"
        await asyncio.wait_for(producer, 30)
        for _ in range(100):  # every delivery settled (the server applies acks on its own goroutine)
            if await _ack_pending(wire) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _ack_pending(wire) == 0
    assert sorted(set(seen)) == list(range(total)) and len(seen) == total  # nothing lost, nothing twice
