"""Standard wires while the nats-server goes away and comes back: the publisher waits, nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fluxmix.errors import NatsUnavailableError
from fluxmix.transports.embedded import EmbeddedNats

from tests.support.nats import nats_unavailable
from tests.support.polling import wait_until
from tests.support.wires import Collector, broker_for, make_scenario, make_wire, messages

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def test_server_stop_and_start_mid_stream_loses_nothing(tmp_path: Path, unique_name: str) -> None:
    server = EmbeddedNats(tmp_path / "nats")  # it keeps the port it got across the restart
    try:
        url = await server.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    total = 2000
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    try:
        async with broker_for(url, ack_timeout=1.0) as broker:
            await broker.prepare(scenario, "h", [spec])
            wire = broker.wire(scenario, "h", spec)
            collector = Collector()

            async def produce() -> None:
                for m in messages(unique_name, total):
                    await wire.send(m)
                    if m.body["seq"] % 20 == 0:
                        await asyncio.sleep(0.005)  # a paced source, so the outage lands mid-stream
                await wire.flush()

            consumer = asyncio.create_task(wire.consume(collector.delivery()))
            producer = asyncio.create_task(produce())
            await wait_until(lambda: len(collector.handled) >= 300)
            await server.stop()
            await wait_until(lambda: not broker.ready[0], timeout=10)
            assert "disconnected" in broker.ready[1]
            stalled_at = wire.stats.sent
            await asyncio.sleep(1.0)
            assert not producer.done() and wire.stats.sent == stalled_at  # the publisher waits
            await server.start()
            await asyncio.wait_for(producer, 60)
            await wait_until(lambda: len({m.id for m in collector.handled}) >= total, timeout=60)
            await wire.drain()
            await asyncio.wait_for(consumer, 10)
            assert sorted(set(collector.seqs)) == list(range(total))
            # at-least-once: anything seen twice was a redelivery, never a second publish
            assert len(collector.handled) - total <= wire.stats.redelivered
            assert broker.status().to_json()["reconnects"] >= 1 and broker.ready == (True, "")
    finally:
        await server.stop()


async def test_drain_while_nats_is_down_returns(tmp_path: Path, unique_name: str) -> None:
    """A reload or stop during an outage must not hang on the consumer (nothing is in hand)."""
    server = EmbeddedNats(tmp_path / "nats")
    try:
        url = await server.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    try:
        async with broker_for(url) as broker:
            await broker.prepare(scenario, "h", [spec])
            wire = broker.wire(scenario, "h", spec)
            collector = Collector()
            consumer = asyncio.create_task(wire.consume(collector.delivery()))
            await asyncio.sleep(0.2)
            await server.stop()
            await wait_until(lambda: not broker.ready[0], timeout=10)
            assert await asyncio.wait_for(wire.drain(), 10) == 0
            await asyncio.wait_for(consumer, 10)
            await wire.close()
    finally:
        await server.stop()
