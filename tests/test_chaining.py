"""Operator chaining (fluxmix.runtime.chaining): which memory wires hand batches over in the
sender's task, and what a chained wire promises on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fluxmix.gears.catalog import Catalog
from fluxmix.message import Message
from fluxmix.runtime import MemoryCheckpoints, Runtime
from fluxmix.scenario import Endpoint, Scenario, WireSpec
from fluxmix.transports.base import Delivery
from fluxmix.transports.memory import MemoryBroker, MemoryWire
from tests.support import runtime as h
from tests.support.polling import wait_until


def _scenario(tmp_path: Path) -> Scenario:
    out = str(tmp_path / "out.jsonl")
    return h.scenario("chains", [
        ("src", "generate", {"count": 50}), ("m", "map", {"set": {"k": 1}}), ("f", "filter", {"where": "seq > 0"}),
        ("a", "file-out", {"path": out + ".a"}), ("b", "file-out", {"path": out + ".b"}),
        ("src2", "generate", {"count": 5}), ("c", "file-out", {"path": out + ".c"}),
        ("src3", "generate", {"count": 5}), ("d", "file-out", {"path": out + ".d"}),
        ("e", "file-out", {"path": out + ".e"}), ("t", "t-collect", {}),
    ], [
        ("src.out", "m.in"), ("m.out", "f.in"),
        ("f.out", "a.in"), ("f.out", "b.in"),  # fan-out
        ("f.rejected", "c.in"), ("src2.out", "c.in"),  # fan-in
        ("src3.out", "d.in", {"chain": False}),  # opted out
        ("m.error", "e.in"),  # dead letters
        ("src3.out", "t.in"),  # a plugin consumer
    ])


async def test_only_one_to_one_memory_wires_into_built_ins_are_chained(tmp_path: Path) -> None:
    catalog = Catalog.default()
    catalog.register("t-collect", h.Collect)
    rt = Runtime(_scenario(tmp_path), "h" * 64, catalog=catalog, brokers={"memory": MemoryBroker()},
                 checkpoints=MemoryCheckpoints())
    await rt.build()
    try:
        chained = {key: wire.status().chained for key, wire in rt.wires.items()}
    finally:
        await rt.stop()
    assert chained == {
        "src.out->m.in": True, "m.out->f.in": True,
        "f.out->a.in": False, "f.out->b.in": False, "f.rejected->c.in": False, "src2.out->c.in": False,
        "src3.out->d.in": False, "m.error->e.in": False, "src3.out->t.in": False,
    }


def _wire() -> MemoryWire:
    wire = MemoryBroker(queue_size=8).wire(Scenario("s", (), ()), "h",
                                           WireSpec(Endpoint("a", "out"), Endpoint("b", "in"), "memory", {}))
    wire.chained = True
    return wire


def _msgs(start: int, n: int) -> list[Message]:
    return [Message(id=str(i), body={"seq": i}) for i in range(start, start + n)]


async def test_a_chained_batch_is_handled_in_the_senders_task_and_later_sends_queue_behind_it() -> None:
    wire = _wire()
    handled: list[tuple[int, asyncio.Task | None]] = []
    gate = asyncio.Event()
    gate.set()

    async def handle(message: Message) -> None:
        await gate.wait()
        handled.append((message.body["seq"], asyncio.current_task()))

    async def flush() -> None:
        pass

    async def dead(message: Message, exc: BaseException) -> bool:
        return False

    consumer = asyncio.create_task(wire.consume(Delivery(handle, dead, flush)))
    await asyncio.sleep(0)
    await wire.send_batch(_msgs(0, 3))  # idle consumer: handled before send_batch returns
    me = asyncio.current_task()
    assert [s for s, _ in handled] == [0, 1, 2] and all(t is me for _, t in handled)
    gate.clear()
    first = asyncio.create_task(wire.send_batch(_msgs(3, 3)))  # held in the sink, in its own task
    await wait_until(lambda: wire.depth == 2)  # 3 in hand, 1 started: the other 2 count as waiting
    await wire.send_batch(_msgs(6, 3))  # busy: queued, returns at once
    assert wire.depth == 5 and not first.done()
    detach = asyncio.create_task(wire.detach())
    await asyncio.sleep(0.01)
    assert not detach.done()  # the chained batch in hand is finished first
    gate.set()
    await asyncio.wait_for(first, 5)
    await asyncio.wait_for(detach, 5)
    await asyncio.wait_for(consumer, 5)
    assert [s for s, _ in handled] == list(range(6)) and wire.depth == 3  # the rest waits for the next consumer
    later = asyncio.create_task(wire.consume(Delivery(handle, dead, flush)))
    await wait_until(lambda: len(handled) == 9)
    assert [s for s, _ in handled] == list(range(9))
    await wire.drain()
    await later
    assert (wire.stats.sent, wire.stats.received, wire.stats.dropped) == (9, 9, 0)


async def test_a_cancelled_chained_sender_hands_what_it_did_not_finish_to_the_consumer() -> None:
    wire = _wire()
    handled: list[int] = []
    gate = asyncio.Event()

    async def handle(message: Message) -> None:
        await gate.wait()
        handled.append(message.body["seq"])

    async def flush() -> None:
        pass

    async def dead(message: Message, exc: BaseException) -> bool:
        return False

    consumer = asyncio.create_task(wire.consume(Delivery(handle, dead, flush)))
    await asyncio.sleep(0)
    sender = asyncio.create_task(wire.send_batch(_msgs(0, 4)))
    await wait_until(lambda: wire.depth == 3)
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    assert wire.depth >= 3  # all four handed back (the consumer's task may have started the first)
    gate.set()
    await wait_until(lambda: len(handled) == 4)
    assert handled == [0, 1, 2, 3]
    await wire.drain()
    await consumer
    assert (wire.stats.received, wire.stats.dropped) == (4, 0)
