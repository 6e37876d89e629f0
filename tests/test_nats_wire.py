"""Standard (JetStream) wires against a real nats-server: delivery, acks, retries, de-duplication."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fluxmix.errors import TransportError
from fluxmix.message import Message, source_id
from fluxmix.transports.nats import NatsBroker, consumer_name, stream_name, wire_subject
from tests.support.wires import (
    Collector,
    broker_for,
    consuming,
    make_scenario,
    make_wire,
    messages,
    settled_status,
)
from tests.support.polling import wait_until

pytestmark = pytest.mark.nats


# --- naming (no server needed) -------------------------------------------------------------------


def test_names_are_stable_valid_and_distinct() -> None:
    w = make_wire("gen.out", "sink.in")
    assert stream_name("payment-flow") == "FLUXMIX_payment-flow"
    assert wire_subject("payment-flow", w) == "fluxmix.payment-flow.gen.out.sink.in"
    assert consumer_name(w) == consumer_name(make_wire("gen.out", "sink.in"))
    assert consumer_name(w).startswith("gen_out__sink_in_")
    # dots are not allowed in stream names or subject tokens: sanitised, plus a hash of the real name
    dotted = stream_name("acme.payments")
    assert "." not in dotted and dotted != stream_name("acme_payments")
    assert wire_subject("acme.payments", w).count(".") == wire_subject("x", w).count(".")
    # wires whose readable forms collide still get distinct durables
    assert consumer_name(make_wire("a_b.c", "d.e")) != consumer_name(make_wire("a.b_c", "d.e"))


def test_unknown_connect_option_is_refused() -> None:
    with pytest.raises(TransportError, match="unknown NATS connect option"):
        NatsBroker(["nats://127.0.0.1:4222"], connect_options={"pasword": "x"})


async def test_unreachable_server_fails_fast_with_a_clear_error() -> None:
    from fluxmix.errors import NatsUnavailableError

    broker = NatsBroker(["nats://127.0.0.1:1"], initial_connect_timeout=1.0)
    with pytest.raises(NatsUnavailableError, match="cannot connect to NATS"):
        await broker.connect()
    assert broker.ready[0] is False


# --- against a real server -----------------------------------------------------------------------


async def test_round_trip_delivers_every_message_once(nats_url: str, unique_name: str) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h1", [spec])
        wire = broker.wire(scenario, "h1", spec)
        sent = messages(unique_name, 500)
        for m in sent:
            await wire.send(m)
        await wire.flush()
        assert wire.stats.sent == 500
        collector = Collector()
        async with consuming(wire, collector):
            await wait_until(lambda: len(collector.handled) == 500)
        # in order as long as no publish had to be retried; content and count always
        assert sorted(m.id for m in collector.handled) == sorted(m.id for m in sent)
        assert sorted(collector.seqs) == list(range(500))
        assert {m.id: m.body for m in collector.handled} == {m.id: m.body for m in sent}
        assert collector.handled[0].origin == "src.out"
        assert wire.stats.received == 500 and wire.stats.failed == 0 and wire.stats.dead_lettered == 0
        status = await settled_status(wire)
        assert status["stream"] == stream_name(unique_name) and status["consumer"] == consumer_name(spec)
        assert broker.ready == (True, "")
        assert broker.status().to_json()["state"] == "connected"
        await wire.close()


async def test_replayed_source_ids_are_deduplicated(nats_url: str, unique_name: str) -> None:
    """A source that replays from its last checkpoint after a crash re-sends the same ids."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        for m in messages(unique_name, 100):
            await wire.send(m)
        await wire.flush()
    async with broker_for(nats_url) as broker:  # restarted mixer replays 50..149
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        for m in messages(unique_name, 100, start=50):
            await wire.send(m)
        await wire.flush()
        assert wire.duplicates == 50
        collector = Collector()
        async with consuming(wire, collector):
            await wait_until(lambda: len(collector.handled) >= 150)
            await asyncio.sleep(0.3)
        assert sorted(collector.seqs) == list(range(150))


async def test_fan_out_of_one_message_to_two_wires_is_not_deduplicated(nats_url: str, unique_name: str) -> None:
    a, b = make_wire("src.out", "left.in"), make_wire("src.out", "right.in")
    scenario = make_scenario(unique_name, a, b)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [a, b])
        wa, wb = broker.wire(scenario, "h", a), broker.wire(scenario, "h", b)
        for m in messages(unique_name, 20):
            await wa.send(m)
            await wb.send(m)
        await wa.flush()
        await wb.flush()
        assert wa.duplicates == 0 and wb.duplicates == 0
        ca, cb = Collector(), Collector()
        async with consuming(wa, ca), consuming(wb, cb):
            await wait_until(lambda: len(ca.handled) == 20 and len(cb.handled) == 20)
        assert sorted(ca.seqs) == sorted(cb.seqs) == list(range(20))


async def test_unacked_messages_survive_a_restart_and_a_new_version(nats_url: str, unique_name: str) -> None:
    """Names come from the scenario name and wire endpoints, not the version hash."""
    spec = make_wire("gen.out", "sink.in")
    v1 = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(v1, "hash-v1", [spec])
        wire = broker.wire(v1, "hash-v1", spec)
        for m in messages(unique_name, 30, gear="gen"):
            await wire.send(m)
        await wire.flush()
        # half consumed and acked, then the mixer stops
        collector = Collector()
        async with consuming(wire, collector):
            await wait_until(lambda: len(collector.handled) >= 1)
        consumed = len(collector.handled)
    # v2 of the scenario adds a wire; a new process, a new broker
    extra = make_wire("gen.out", "audit.in")
    v2 = make_scenario(unique_name, spec, extra)
    async with broker_for(nats_url) as broker:
        await broker.prepare(v2, "hash-v2", [spec, extra])
        wire = broker.wire(v2, "hash-v2", spec)
        assert (wire.stream, wire.consumer) == (stream_name(unique_name), consumer_name(spec))
        rest = Collector()
        async with consuming(wire, rest):
            await wait_until(lambda: consumed + len(rest.handled) >= 30)
            await asyncio.sleep(0.3)
        assert sorted(collector.seqs + rest.seqs) == list(range(30))


async def test_prepare_updates_the_stream_without_losing_messages(nats_url: str, unique_name: str) -> None:
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url, duplicate_window=60) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        for m in messages(unique_name, 10):
            await wire.send(m)
        await wire.flush()
    async with broker_for(nats_url, duplicate_window=90, max_bytes=64 * 1024 * 1024) as broker:
        await broker.prepare(scenario, "h", [spec])  # different config: update, never re-create
        info = await broker.js.stream_info(stream_name(unique_name))
        assert info.config.duplicate_window == 90 and info.config.max_bytes == 64 * 1024 * 1024
        assert info.state.messages == 10


async def test_flush_waits_for_what_was_sent_before_it_not_for_later_sends(nats_url: str, unique_name: str) -> None:
    """Two inputs of one gear share its output wire: one consumer's flush must not be starved
    by the other's steady sending (its acks would wait, then be redelivered)."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        stop = asyncio.Event()

        async def busy_sender() -> int:
            i = 0
            while not stop.is_set():
                await wire.send(Message(id=source_id(unique_name, "busy", i), body={"seq": i}))
                i += 1
            return i

        busy = asyncio.create_task(busy_sender())
        await wait_until(lambda: wire.stats.sent > 100)
        for m in messages(unique_name, 10, gear="quiet"):
            await wire.send(m)
        await asyncio.wait_for(wire.flush(), 20)  # returns while the busy sender keeps going
        assert not busy.done()
        stop.set()
        await busy
        await wire.flush()


async def test_a_consumer_removed_behind_our_back_is_recreated(nats_url: str, unique_name: str) -> None:
    """`nats consumer rm` on a live wire: messages sent after it still arrive (no silent stop)."""
    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:
        await broker.prepare(scenario, "h", [spec])
        wire = broker.wire(scenario, "h", spec)
        collector = Collector()
        async with consuming(wire, collector):
            for m in messages(unique_name, 5):
                await wire.send(m)
            await wire.flush()
            await wait_until(lambda: len(collector.handled) == 5)
            await broker.js.delete_consumer(stream_name(unique_name), consumer_name(spec))
            for m in messages(unique_name, 5, start=5):
                await wire.send(m)
            await wire.flush()
            await wait_until(lambda: len(collector.handled) == 10)
        assert sorted(collector.seqs) == list(range(10))


async def test_brokers_pass_the_jetstream_settings_to_streams_and_consumers(
    nats_url: str, unique_name: str, tmp_path: Any
) -> None:
    """--nats-ack-wait / --nats-duplicate-window / --nats-max-bytes reach the server, and a
    changed ack_wait updates an existing durable (a restart with a new flag takes effect)."""
    from fluxmix.transports.registry import Brokers, NatsSettings

    spec = make_wire()
    scenario = make_scenario(unique_name, spec)
    async with broker_for(nats_url) as broker:  # the defaults first: an existing durable with 30 s
        await broker.prepare(scenario, "h", [spec])
        info = await broker.js.consumer_info(stream_name(unique_name), consumer_name(spec))
        assert info.config.ack_wait == 30
    brokers = Brokers(tmp_path, NatsSettings(servers=[nats_url], ack_wait=4.0, duplicate_window=9.0, max_bytes=1 << 20))
    try:
        broker = (await brokers.for_scenario(scenario))["standard"]
        assert isinstance(broker, NatsBroker)
        await broker.prepare(scenario, "h", [spec])
        stream = await broker.js.stream_info(stream_name(unique_name))
        assert stream.config.duplicate_window == 9.0 and stream.config.max_bytes == 1 << 20
        consumer = await broker.js.consumer_info(stream_name(unique_name), consumer_name(spec))
        assert consumer.config.ack_wait == 4.0
    finally:
        await brokers.close()
    unlimited = Brokers(tmp_path, NatsSettings(servers=[nats_url]))
    try:
        broker = (await unlimited.for_scenario(scenario))["standard"]
        await broker.prepare(scenario, "h", [spec])
        stream = await broker.js.stream_info(stream_name(unique_name))  # type: ignore[attr-defined]
        assert stream.config.max_bytes == -1 and stream.config.duplicate_window == 60  # ack_wait 30 + 30 s restart
    finally:
        await unlimited.close()
