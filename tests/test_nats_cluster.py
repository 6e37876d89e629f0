"""A three-node JetStream cluster (deploy/nats/node-*.conf) with replicas 3: losing a node loses nothing."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from tests.support.nats import NatsCluster
from tests.support.polling import wait_until
from tests.support.wires import Collector, broker_for, make_scenario, make_wire, send_steadily

from fluxmix.transports.nats import stream_name

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def _prepare_with_retry(broker, scenario, wires) -> None:  # type: ignore[no-untyped-def]
    """Right after start-up the cluster may still be placing its first R3 stream."""
    for attempt in range(40):
        try:
            await broker.prepare(scenario, "h", wires)
            return
        except Exception:
            if attempt == 39:
                raise
            await asyncio.sleep(0.5)


async def _stream_info_with_leader(broker, name: str):  # type: ignore[no-untyped-def]
    """Stream info once the R3 stream has elected a leader (under load that can lag its creation)."""
    async with asyncio.timeout(30):
        while True:
            try:
                info = await broker.js.stream_info(name)
            except (nats.errors.Error, TimeoutError):
                info = None
            if info is not None and info.cluster is not None and info.cluster.leader:
                return info
            await asyncio.sleep(0.2)


async def test_killing_the_stream_leader_mid_stream_loses_nothing(nats_cluster: NatsCluster, unique_name: str) -> None:
    total = 2000
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_cluster.urls, replicas=3, ack_timeout=2.0, ack_wait=2.0) as broker:
        await _prepare_with_retry(broker, scenario, [spec])
        info = await _stream_info_with_leader(broker, stream_name(unique_name))
        assert info.config.num_replicas == 3
        leader = info.cluster.leader
        victim = next(n.index for n in nats_cluster.nodes if leader == f"fluxmix-nats-{n.index + 1}")
        wire = broker.wire(scenario, "h", spec)
        collector = Collector()

        consumer = asyncio.create_task(wire.consume(collector.delivery()))
        producer = asyncio.create_task(send_steadily(wire, unique_name, total, every=20, pause=0.005))
        await wait_until(lambda: len(collector.handled) >= 300)
        await asyncio.to_thread(nats_cluster.kill, victim)  # SIGKILL the stream leader
        await asyncio.wait_for(producer, 90)
        await wait_until(lambda: len({m.id for m in collector.handled}) >= total, timeout=90)
        assert sorted(set(collector.seqs)) == list(range(total))

        # the node comes back and catches up. Acks that were in flight to the killed leader may be
        # lost with it: those messages are redelivered after ack_wait (at least once, never lost),
        # and once they are acked the work-queue stream holds nothing more
        await asyncio.to_thread(nats_cluster.start, victim)
        await asyncio.to_thread(nats_cluster.wait_healthy, [victim], 60)

        async def owed() -> int | None:
            """Messages still in the stream; None while the cluster cannot say (the rejoining
            node can trigger a leader election, and stream info fails for a moment)."""
            try:
                info = await broker.js.stream_info(stream_name(unique_name))
            except (nats.errors.Error, TimeoutError):
                return None
            return info.state.messages

        async with asyncio.timeout(60):
            while await owed() != 0:
                await asyncio.sleep(0.2)
        await wire.drain()
        await asyncio.wait_for(consumer, 10)
        assert sorted(set(collector.seqs)) == list(range(total))
        assert len(collector.handled) - total <= wire.stats.redelivered
