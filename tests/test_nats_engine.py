"""The JetStream engine under stress, against real nats-server processes: refusals leave the wire
without stopping it, a consumer stopped over and over loses and duplicates nothing, and a server
restart re-pulls at once (on the reconnect notice, not after the silence watchdog)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from pathlib import Path

import pytest

from fluxmix.errors import NatsUnavailableError
from fluxmix.message import Message, source_id
from fluxmix.transports.embedded import EmbeddedNats
from fluxmix.transports.nats import NatsWire, stream_name

from tests.support.nats import nats_unavailable
from tests.support.polling import wait_until
from tests.support.wires import (Collector, RefusalRecorder, broker_for, make_scenario, make_wire, messages,
                                 send_steadily)

pytestmark = pytest.mark.nats


async def test_a_refused_message_goes_to_the_error_port_while_later_ones_flow(nats_url: str, unique_name: str) -> None:
    """Over the server's max_payload: that one message is refused at once; the wire goes on."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    on_refused = RefusalRecorder()
    refused = on_refused.refused

    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        wire.on_refused = on_refused
        max_payload = broker.nc.max_payload  # type: ignore[union-attr]
        sent = []
        for i in range(200):
            body = {"seq": i, "pad": "x" * (max_payload + 10)} if i == 50 else {"seq": i}
            message = Message(id=source_id(unique_name, "src", i), body=body)
            sent.append(message)
            await wire.send(message)
        await wire.flush()  # returns: the refusal is an outcome, not a hang
        assert [m.body["seq"] for m, _ in refused] == [50]
        assert "max_payload" in str(refused[0][1])
        assert wire.stats.sent == 199 and wire.stats.dead_lettered == 1 and wire.stats.dropped == 0
        status = wire.status().to_json()
        assert status["refused"] == 1 and "refused message" in status["last_refusal"]
        collector = Collector()
        task = asyncio.create_task(wire.consume(collector.delivery()))
        await wait_until(lambda: len(collector.handled) == 199)
        await wire.drain()
        await asyncio.wait_for(task, 10)
        assert sorted(collector.seqs) == [i for i in range(200) if i != 50]
        await wire.close()


async def test_a_refusal_without_a_handler_is_a_counted_drop(nats_url: str, unique_name: str) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        big = "x" * (broker.nc.max_payload + 1)  # type: ignore[union-attr]
        await wire.send(Message(id=source_id(unique_name, "src", 0), body={"seq": 0, "pad": big}))
        await wire.send(Message(id=source_id(unique_name, "src", 1), body={"seq": 1}))
        await wire.flush()
        assert wire.stats.sent == 1 and wire.stats.dropped == 1 and wire.status().to_json()["refused"] == 1
        await wire.close()


async def test_a_consumer_stopped_100_times_under_load_loses_and_duplicates_nothing(
    nats_url: str, unique_name: str
) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    total = 6000
    handled: Counter[int] = Counter()
    after_stop: list[int] = []
    rng = random.Random(17)
    async with broker_for(nats_url, batch_size=64) as broker:
        await broker.prepare(scenario, "h", [spec])
        producer_wire = broker.wire(scenario, "h", spec)

        producer = asyncio.create_task(send_steadily(producer_wire, unique_name, total))
        stops = 0
        while stops < 100 or sum(handled.values()) < total:
            wire = broker.wire(scenario, "h", spec)  # a reload: a new wire on the same durable
            stopped = False

            class Counting(Collector):
                async def handle(self, msg: Message) -> None:
                    if stopped:
                        after_stop.append(msg.body["seq"])
                    handled[msg.body["seq"]] += 1

            task = asyncio.create_task(wire.consume(Counting().delivery()))
            await asyncio.sleep(rng.uniform(0.0, 0.03) if stops < 100 else 0.3)
            await asyncio.wait_for(wire.drain(), 20)
            stopped = True
            await asyncio.wait_for(task, 10)
            await wire.close()
            stops += 1
            assert stops < 400, f"only {sum(handled.values())} of {total} handled"
        await asyncio.wait_for(producer, 30)
    assert after_stop == []
    assert sorted(handled) == list(range(total))
    assert [seq for seq, n in handled.items() if n > 1] == []


@pytest.mark.slow
async def test_a_server_restart_re_pulls_on_the_reconnect_notice(tmp_path: Path, unique_name: str) -> None:
    server = EmbeddedNats(tmp_path / "nats")  # it keeps the port it got across a restart
    try:
        url = await server.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    try:
        async with broker_for(url, ack_timeout=1.0) as broker:
            await broker.prepare(scenario, "h", [spec])
            wire = broker.wire(scenario, "h", spec)
            collector = Collector()
            consumer = asyncio.create_task(wire.consume(collector.delivery()))
            for m in messages(unique_name, 100):
                await wire.send(m)
            await wire.flush()
            await wait_until(lambda: len(collector.handled) == 100)
            await server.stop()
            await wait_until(lambda: not broker.ready[0], timeout=10)
            await server.start()
            await wait_until(lambda: broker.ready[0], timeout=30)
            for m in messages(unique_name, 100, start=100):
                await wire.send(m)
            await wire.flush()
            await wait_until(lambda: len({m.id for m in collector.handled}) == 200, timeout=30)
            puller = wire._puller
            assert puller is not None
            # the old pull requests died with the server: the reconnect notice re-pulled, the
            # silence watchdog (two idle heartbeats) never had to
            assert puller.repulls >= 1 and puller.silence_repulls == 0
            await wire.drain()
            await asyncio.wait_for(consumer, 10)
            assert sorted(set(collector.seqs)) == list(range(200))
    finally:
        await server.stop()


async def test_a_refused_emit_reaches_the_gears_error_port_in_a_running_scenario(nats_url: str, unique_name: str) -> None:
    """End to end through the runtime: the refused message is on `error`, the rest at the sink."""
    from typing import Any, ClassVar

    from tests.support import runtime as h

    from fluxmix.gears.base import Gear, Port
    from fluxmix.gears.catalog import Catalog
    from fluxmix.runtime import MemoryCheckpoints, Runtime
    from fluxmix.transports.memory import MemoryBroker
    from fluxmix.transports.nats import NatsBroker

    class Inflate(Gear):
        """in -> out; seq 5 becomes larger than the server's max_payload."""

        type = "t-inflate"
        inputs = (Port("in", required=True),)
        outputs = (Port("out"),)
        config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

        async def handle(self, port: str, message: Message) -> None:
            body = dict(message.body)
            if body["seq"] == 5:
                body["pad"] = "x" * (2 << 20)
            await self.ctx.emit("out", body)

    h.reset()
    catalog = Catalog({g.type: g for g in (h.Counter, h.Collect, Inflate)})
    scen = h.scenario(
        unique_name,
        [("src", "t-counter", {"count": 20}), ("big", "t-inflate", {}), ("sink", "t-collect", {}),
         ("errs", "t-collect", {})],
        [("src.out", "big.in"), ("big.out", "sink.in", {"transport": "standard"}), ("big.error", "errs.in")],
    )
    broker = NatsBroker(nats_url)
    await broker.connect()
    rt = Runtime(scen, "e" * 64, catalog=catalog, brokers={"memory": MemoryBroker(queue_size=8), "standard": broker},
                 checkpoints=MemoryCheckpoints())
    try:
        await rt.build()
        await rt.start()
        await wait_until(lambda: len(h.SEEN["sink"]) == 19 and len(h.SEEN["errs"]) == 1)
        await rt.stop()
        assert sorted(b["seq"] for b in h.SEEN["sink"]) == [i for i in range(1, 21) if i != 5]
        refused = h.SEEN["errs"][0]
        assert refused["seq"] == 5 and "max_payload" in refused["_headers"]["error"]
        assert refused["_headers"]["error-gear"] == "big"
        status = rt.status().to_json()
        assert status["wires"]["big.out->sink.in"]["refused"] == 1
        assert status["gears"]["big"]["dead_lettered"] == 1
    finally:
        await broker.close()


async def test_a_wire_at_its_backlog_bound_blocks_its_producer_and_resumes(nats_url: str, unique_name: str) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url, wire_backlog=20, ack_timeout=1.0) as broker:
        await broker.prepare(scenario, "h", [spec])
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert info.config.max_msgs_per_subject == 20 and info.config.discard_new_per_subject
        wire = broker.wire(scenario, "h", spec)
        total = 200

        async def produce() -> None:
            for m in messages(unique_name, total):
                await wire.send(m)
            await wire.flush()

        producer = asyncio.create_task(produce())
        await wait_until(lambda: wire.status().to_json()["full"] or producer.done())
        assert not producer.done()  # blocked at the bound, not dropping
        await asyncio.sleep(0.3)
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert info.state.messages == 20  # the stream holds the bound, not more
        collector = Collector()
        task = asyncio.create_task(wire.consume(collector.delivery()))
        await asyncio.wait_for(producer, 60)  # resumes once the consumer frees room
        await wait_until(lambda: len(collector.handled) >= total)
        await wire.drain()
        await asyncio.wait_for(task, 10)
        assert sorted(collector.seqs) == list(range(total))
        assert wire.stats.dropped == 0 and wire.status().to_json()["refused"] == 0
        await wire.close()


async def test_a_wires_own_backlog_option_bounds_that_wire_only_and_survives_a_new_activation(
    nats_url: str, unique_name: str
) -> None:
    """`backlog: 20` on one wire (a client-side bound, counted from PubAcks and the consumer's acks,
    started from the server's count): its producer blocks with 20 in the stream and resumes as the
    consumer frees room; a wire of the same stream without the option is not held back."""
    bounded, free = make_wire("src.out", "dst.in", backlog=20), make_wire("src.out", "other.in")
    scenario = make_scenario(unique_name, bounded, free)
    stream = stream_name(unique_name)
    async with broker_for(nats_url, ack_timeout=1.0) as broker:
        await broker.prepare(scenario, "h", [bounded, free])
        wire, other = broker.wire(scenario, "h", bounded), broker.wire(scenario, "h", free)
        total = 200

        async def produce(w: NatsWire, start: int, n: int) -> None:
            for m in messages(unique_name, n, start=start):
                await w.send(m)
            await w.flush()

        async def in_stream(w: NatsWire) -> int:
            info = await broker.js.consumer_info(stream, w.consumer)  # type: ignore[union-attr]
            return (info.num_pending or 0) + (info.num_ack_pending or 0)

        producer = asyncio.create_task(produce(wire, 0, 50))
        await wait_until(lambda: wire.status().full or producer.done())
        assert not producer.done()  # blocked at its own bound, not dropping
        await asyncio.wait_for(produce(other, 0, 100), 30)  # the other wire of the stream flows on
        await asyncio.sleep(0.3)
        assert await in_stream(wire) == 20 and await in_stream(other) == 100
        status = wire.status().to_json()
        assert status["backlog"] == 20 and status["backlog_bound"] == 20 and status["full"]

        # the next activation's wire starts from the server's count: still at the bound
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        await wire.close()
        wire = broker.wire(scenario, "h", bounded)
        producer = asyncio.create_task(produce(wire, 20, total - 20))
        await wait_until(lambda: wire.status().backlog == 20 or producer.done())
        await asyncio.sleep(0.3)
        assert not producer.done() and await in_stream(wire) == 20

        collector = Collector()
        task = asyncio.create_task(wire.consume(collector.delivery()))
        await asyncio.wait_for(producer, 60)  # resumes as the consumer acks
        await wait_until(lambda: len(collector.handled) >= total)
        await wire.drain()
        await asyncio.wait_for(task, 10)
        assert sorted(collector.seqs) == list(range(total))
        assert wire.stats.dropped == 0 and wire.status().refused == 0
        await wire.close()
        await other.close()


async def test_a_stop_while_nats_is_unreachable_ends_within_its_timeout_and_loses_nothing(
    tmp_path: Path, unique_name: str
) -> None:
    """generate -> map -> file-out over two standard wires; NATS goes away mid-stream and the
    scenario is stopped: the stop (and closing the broker) ends within the stop timeout plus a
    bound, and once NATS is back a new activation delivers every seq exactly once (what the dead
    activation held unacked is redelivered, what it published unconfirmed is replayed from the
    source's checkpoint).

    The sink de-duplicates (`envelope: true, dedupe: N`) because JetStream forgets the ids of
    messages it already removed (acked, work-queue) when the server restarts: it rebuilds its
    duplicate table from the messages still stored, so a source's replay across a NATS restart
    gets through to the gears behind it (found by this test; see the README)."""
    import json
    import time

    import yaml

    from fluxmix.gears.catalog import Catalog
    from fluxmix.loading import parse_scenario
    from fluxmix.runtime import MemoryCheckpoints, Runtime
    from fluxmix.transports.registry import Brokers, NatsSettings

    server = EmbeddedNats(tmp_path / "nats")  # it keeps the port it got across the restart
    try:
        url = await server.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    total, stop_timeout, bound = 3000, 3.0, 3.0
    out = tmp_path / "out.jsonl"
    doc = {
        "name": unique_name,
        "gears": [
            {"name": "source", "type": "generate", "config": {"count": total, "rate": 600}},
            {"name": "relay", "type": "map", "config": {"set": {"hop": 1}}},
            {"name": "sink", "type": "file-out", "config": {"path": str(out), "envelope": True, "dedupe": 5000}},
        ],
        "wires": [{"from": "source.out", "to": "relay.in"}, {"from": "relay.out", "to": "sink.in"}],
    }
    catalog = Catalog.default()
    scenario = parse_scenario(yaml.safe_dump(doc).encode(), "stop-down.yaml", catalog=catalog)
    checkpoints = MemoryCheckpoints()
    settings = NatsSettings(servers=[url], ack_wait=4.0)

    def lines() -> list[int]:
        if not out.exists():
            return []
        return [json.loads(line)["body"]["seq"] for line in out.read_text().splitlines() if line.strip()]

    try:
        brokers = Brokers(tmp_path / "home", settings)
        runtime = Runtime(scenario, "a" * 64, catalog=catalog, brokers=await brokers.for_scenario(scenario),
                          checkpoints=checkpoints)
        await runtime.build()
        await runtime.start()
        await wait_until(lambda: len(lines()) >= 300, timeout=30)
        await server.stop()  # NATS unreachable
        standard = brokers.get("standard")
        assert standard is not None
        await wait_until(lambda: not standard.ready[0], timeout=10)
        t0 = time.monotonic()
        await runtime.stop(timeout=stop_timeout)
        await brokers.close()
        took = time.monotonic() - t0
        assert took < stop_timeout + bound, f"stop while NATS was down took {took:.1f} s"
        seen_before = len(lines())
        assert seen_before < total

        await server.start()  # NATS is back: same port, same store
        brokers = Brokers(tmp_path / "home", settings)
        runtime = Runtime(scenario, "a" * 64, catalog=catalog, brokers=await brokers.for_scenario(scenario),
                          checkpoints=checkpoints)
        await runtime.build()
        await runtime.start()
        try:
            await wait_until(lambda: len(set(lines())) >= total, timeout=60)
            await asyncio.sleep(settings.ack_wait + 1)  # anything redelivered late would show up as a repeat
        finally:
            await runtime.stop(timeout=10)
            await brokers.close()
        seqs = lines()
        assert sorted(set(seqs)) == list(range(1, total + 1))
        repeated = [s for s, n in Counter(seqs).items() if n > 1]
        assert not repeated, f"{len(repeated)} seqs twice at the sink, e.g. {repeated[:5]}"
    finally:
        await server.stop()


# fast-ingest batches (issue 17): a run of emits goes out as one batch with one PubAck --------------


async def _consume_all(wire: NatsWire, want: int) -> Collector:
    collector = Collector()
    task = asyncio.create_task(wire.consume(collector.delivery()))
    await wait_until(lambda: len(collector.handled) >= want)
    await asyncio.sleep(0.2)  # nothing more arrives
    await wire.drain()
    await asyncio.wait_for(task, 10)
    return collector


async def test_a_run_of_emits_goes_out_as_one_fast_batch_and_a_replayed_batch_is_deduplicated(
    nats_url: str, unique_name: str
) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert info.config.allow_batched
        wire = broker.wire(scenario, "h", spec)
        await wire.send_batch(messages(unique_name, 300))
        await wire.flush()
        assert wire.publisher.fast_batches == 1 and wire.stats.sent == 300
        assert wire.status().to_json()["publish_batches"] == 1  # what an operator sees in /status
        await wire.send_batch(messages(unique_name, 300, start=100))  # a source replaying 100..399
        await wire.flush()
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert info.state.messages == 400  # the replayed ids were stored once
        collector = await _consume_all(wire, 400)
        assert collector.seqs == list(range(400))  # in order, each once
        await wire.close()


async def test_a_refusal_inside_a_fast_batch_goes_to_the_error_port_and_the_rest_follows_in_order(
    nats_url: str, unique_name: str
) -> None:
    """JetStream ends a batch at the message it refuses: the refused one leaves for the error
    port, the messages behind it are sent again one by one (same ids) and keep their order."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    on_refused = RefusalRecorder()
    refused = on_refused.refused

    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        js = broker.js
        assert js is not None
        config = (await js.stream_info(stream_name(unique_name))).config
        config.max_msg_size = 2000  # under the client's max_payload: the server refuses it
        await js.update_stream(config)
        wire = broker.wire(scenario, "h", spec)
        wire.on_refused = on_refused
        batch = messages(unique_name, 200)
        batch[50] = Message(id=batch[50].id, body={"seq": 50, "pad": "x" * 3000}, origin="src.out")
        await wire.send_batch(batch)
        await asyncio.wait_for(wire.flush(), 20)
        assert wire.publisher.fast_batches == 1
        assert [m.body["seq"] for m, _ in refused] == [50]
        assert "size" in str(refused[0][1])
        assert wire.stats.sent == 199 and wire.stats.dead_lettered == 1 and wire.stats.dropped == 0
        collector = await _consume_all(wire, 199)
        assert collector.seqs == [i for i in range(200) if i != 50]
        await wire.close()


async def test_a_fast_batch_at_the_wires_backlog_bound_waits_for_room_and_loses_nothing(
    nats_url: str, unique_name: str
) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url, wire_backlog=50, ack_timeout=1.0) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        total = 300

        async def produce() -> None:
            await wire.send_batch(messages(unique_name, total))
            await wire.flush()

        producer = asyncio.create_task(produce())
        await wait_until(lambda: wire.status().to_json()["full"] or producer.done())
        await asyncio.sleep(0.3)
        assert not producer.done()  # held at the bound, not dropping
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert info.state.messages == 50
        collector = Collector()
        task = asyncio.create_task(wire.consume(collector.delivery()))
        await asyncio.wait_for(producer, 60)
        await wait_until(lambda: len(collector.handled) >= total)
        await asyncio.sleep(0.2)
        await wire.drain()
        await asyncio.wait_for(task, 10)
        assert sorted(collector.seqs) == list(range(total)) and len(collector.seqs) == total
        assert wire.stats.dropped == 0 and wire.status().to_json()["refused"] == 0
        await wire.close()


async def test_a_stream_without_batches_makes_the_publisher_go_one_by_one(nats_url: str, unique_name: str) -> None:
    """A stream created without allow_batched (an older server or setting) answers a batch with
    err_code 10205: the publisher resends those messages one by one and stops batching."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url, batched=False) as broker:
        await broker.prepare(scenario, "h", [spec])
        info = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[union-attr]
        assert not info.config.allow_batched
        wire = broker.wire(scenario, "h", spec)
        wire.publisher.fast = True  # as if the stream had been created elsewhere without it
        await wire.send_batch(messages(unique_name, 100))
        await asyncio.wait_for(wire.flush(), 20)
        assert wire.publisher.fast is False and wire.stats.sent == 100 and wire.publisher.refused == 0
        await wire.send_batch(messages(unique_name, 100, start=100))
        await asyncio.wait_for(wire.flush(), 20)
        assert wire.publisher.fast_batches == 1  # only the first try
        collector = await _consume_all(wire, 200)
        assert collector.seqs == list(range(200))
        await wire.close()


async def test_a_gears_batch_of_emits_to_a_standard_wire_goes_out_as_fast_batches(nats_url: str, unique_name: str) -> None:
    """Through the runtime: what a gear emits while handling a round of deliveries waits for the
    round and leaves as one fast-ingest batch per wire; every seq arrives exactly once."""
    from tests.support import runtime as h

    from fluxmix.gears.catalog import Catalog
    from fluxmix.runtime import MemoryCheckpoints, Runtime
    from fluxmix.transports.nats import NatsBroker

    gate = asyncio.Event()

    class GatedPass(h.Pass):
        """t-pass that holds its first message until the source is done, so the deliveries
        behind it pile up and arrive as large rounds (a relay that keeps up gets rounds of one
        or two, which go out as plain publishes: a batch needs a run of emits)."""

        type = "t-gated-pass"

        async def handle(self, port: str, message: Message) -> None:
            await gate.wait()
            await super().handle(port, message)

    h.reset()
    catalog = Catalog({g.type: g for g in (h.Counter, GatedPass, h.Collect)})
    total = 600
    scen = h.scenario(
        unique_name,
        [("src", "t-counter", {"count": total}), ("relay", "t-gated-pass", {}), ("sink", "t-collect", {})],
        [("src.out", "relay.in", {"transport": "standard"}), ("relay.out", "sink.in", {"transport": "standard"})],
    )
    broker = NatsBroker(nats_url)
    await broker.connect()
    rt = Runtime(scen, "f" * 64, catalog=catalog, brokers={"standard": broker}, checkpoints=MemoryCheckpoints())
    try:
        await rt.build()
        relay_out = rt.wires["relay.out->sink.in"]
        assert isinstance(relay_out, NatsWire)
        await rt.start()
        src_out = rt.wires["src.out->relay.in"]
        await wait_until(lambda: src_out.stats.sent >= total, timeout=60)
        gate.set()
        await wait_until(lambda: len(h.SEEN["sink"]) >= total, timeout=60)
        await asyncio.sleep(0.2)
        await rt.stop()
        seqs = [b["seq"] for b in h.SEEN["sink"]]
        assert sorted(seqs) == list(range(1, total + 1)) and len(seqs) == total  # each once
        assert relay_out.publisher.fast_batches > 0 and relay_out.publisher.refused == 0
    finally:
        await broker.close()
