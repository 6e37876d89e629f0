"""Raw baselines: what the bare transports do on this machine, in this run.

Each function returns a figure comparable to the matching fluxmix one: throughput is counted
from the first message the consumer receives to the last (start-up excluded on both sides),
latency is measured from just before the send to just after the consumer decoded the body.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgpack
import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bench.harness import percentile

BODY_BYTES = 256
QUEUE_SIZE = 1024
# nats-py default would retry for two minutes; a bench wants to fail fast.
CONNECT = dict(allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=1)


def make_body(seq: int = 0, size: int = BODY_BYTES) -> dict[str, Any]:
    """A body whose msgpack encoding is about `size` bytes: {"seq": int, "data": str}."""
    probe = {"seq": 1 << 20, "data": ""}
    pad = max(0, size - len(msgpack.packb(probe)))
    return {"seq": seq, "data": "x" * pad}


PAD = make_body()["data"]


def _rate(n: int, first: float, last: float) -> float:
    return (n - 1) / (last - first) if last > first else float("nan")


# ---------------------------------------------------------------- asyncio.Queue


async def queue_throughput(n: int, stages: int = 2, queue_size: int = QUEUE_SIZE) -> float:
    """msg/s of a chain of `stages` tasks joined by `stages - 1` bounded queues.

    stages=2 is one producer -> one consumer; every hop pays msgpack encode (sender) and
    decode (receiver), as a gear that reads and re-emits a message would.
    """
    packb, unpackb = msgpack.packb, msgpack.unpackb
    queues = [asyncio.Queue(maxsize=queue_size) for _ in range(stages - 1)]
    first = last = 0.0

    async def produce() -> None:
        q = queues[0]
        for i in range(n):
            await q.put(packb({"seq": i, "data": PAD}))

    async def relay(inq: asyncio.Queue[bytes], outq: asyncio.Queue[bytes]) -> None:
        for _ in range(n):
            body = unpackb(await inq.get())
            await outq.put(packb(body))

    async def consume() -> None:
        nonlocal first, last
        q = queues[-1]
        body = unpackb(await q.get())
        first = time.perf_counter()
        count = 1
        while count < n:
            body = unpackb(await q.get())
            count += 1
        last = time.perf_counter()
        assert body["seq"] == n - 1

    tasks = [asyncio.create_task(produce())]
    tasks += [asyncio.create_task(relay(queues[i], queues[i + 1])) for i in range(stages - 2)]
    tasks.append(asyncio.create_task(consume()))
    await asyncio.gather(*tasks)
    return _rate(n, first, last)


# ---------------------------------------------------------------- NATS JetStream


async def _stream(js: Any, tag: str) -> tuple[str, str]:
    name = f"BENCHRAW_{tag}_{uuid.uuid4().hex[:8]}"
    subject = f"benchraw.{name}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE))
    return name, subject


async def nats_throughput(url: str, n: int, *, max_pending: int = 256, batch: int = 256) -> float:
    """msg/s end to end: js.publish_async (<= max_pending in flight) on one connection while a
    durable pull consumer on another fetches `batch` at a time and acks each message."""
    pub = await nats.connect(url, **CONNECT)
    sub_nc = await nats.connect(url, **CONNECT)
    try:
        js = pub.jetstream(publish_async_max_pending=max_pending)
        sjs = sub_nc.jetstream()
        stream, subject = await _stream(js, "tp")
        try:
            await sjs.add_consumer(
                stream,
                ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000),
            )
            sub = await sjs.pull_subscribe(subject, durable="raw", stream=stream)
            packb, unpackb = msgpack.packb, msgpack.unpackb

            async def produce() -> None:
                futures = []
                for i in range(n):
                    futures.append(await js.publish_async(subject, packb({"seq": i, "data": PAD})))
                # nats-py never resolves a future the server answered with an error: bound the wait
                await asyncio.wait_for(js.publish_async_completed(), 30)
                failed = [f for f in futures if not f.done() or f.exception() is not None]
                if failed:
                    raise RuntimeError(f"{len(failed)} raw publishes failed")

            first = last = 0.0

            async def consume() -> None:
                nonlocal first, last
                count = 0
                while count < n:
                    try:
                        msgs = await sub.fetch(min(batch, n - count), timeout=2)
                    except nats.errors.TimeoutError:
                        continue
                    for m in msgs:
                        unpackb(m.data)
                        await m.ack()
                    if count == 0:
                        first = time.perf_counter()
                    count += len(msgs)
                last = time.perf_counter()

            await asyncio.wait_for(asyncio.gather(produce(), consume()), 300)
            return _rate(n, first, last)
        finally:
            await js.delete_stream(stream)
    finally:
        await sub_nc.close()
        await pub.close()


async def nats_throughput_callback_pull(url: str, n: int, *, max_pending: int = 1024, batch: int = 1000,
                                        outstanding: int = 4) -> float:
    """msg/s end to end: js.publish_async (<= max_pending in flight) on one connection while a
    callback-driven pull consumer on another keeps `outstanding` requests of `batch` open (core
    requests to $JS.API.CONSUMER.MSG.NEXT, re-asked by counting deliveries) and acks each message:
    the fastest raw consuming pattern nats-py's public API allows, without fetch()."""
    import json

    pub = await nats.connect(url, **CONNECT)
    sub_nc = await nats.connect(url, **CONNECT)
    try:
        js = pub.jetstream(publish_async_max_pending=max_pending)
        sjs = sub_nc.jetstream()
        stream, subject = await _stream(js, "cb")
        try:
            await sjs.add_consumer(
                stream,
                ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000),
            )
            packb, unpackb = msgpack.packb, msgpack.unpackb
            next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.raw"
            request = json.dumps({"batch": batch, "expires": 30_000_000_000}).encode()
            inbox = sub_nc.new_inbox()
            done = asyncio.Event()
            count = 0
            owed = 0  # requested and not delivered yet
            first = last = 0.0

            async def on_msg(msg: Any) -> None:
                nonlocal count, owed, first, last
                if not msg.reply:  # a status (request expired ...)
                    left = (msg.headers or {}).get("Nats-Pending-Messages")
                    owed -= int(left) if left else 0
                else:
                    unpackb(msg.data)
                    await sub_nc.publish(msg.reply, b"+ACK")
                    owed -= 1
                    count += 1
                    if count == 1:
                        first = time.perf_counter()
                    if count == n:
                        last = time.perf_counter()
                        done.set()
                while owed <= batch * (outstanding - 1) and count < n:
                    owed += batch
                    await sub_nc.publish(next_subject, request, reply=inbox)

            sub = await sub_nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=0, pending_bytes_limit=0)
            for _ in range(outstanding):
                owed += batch
                await sub_nc.publish(next_subject, request, reply=inbox)

            async def produce() -> None:
                futures = []
                for i in range(n):
                    futures.append(await js.publish_async(subject, packb({"seq": i, "data": PAD})))
                await asyncio.wait_for(js.publish_async_completed(), 30)
                failed = [f for f in futures if not f.done() or f.exception() is not None]
                if failed:
                    raise RuntimeError(f"{len(failed)} raw publishes failed")

            await asyncio.wait_for(asyncio.gather(produce(), done.wait()), 300)
            await sub.unsubscribe()
            return _rate(n, first, last)
        finally:
            await js.delete_stream(stream)
    finally:
        await sub_nc.close()
        await pub.close()


async def nats_latency_one_in_flight(url: str, n: int) -> tuple[float, float]:
    """(p50, p99) seconds from js.publish() to the pull consumer having decoded the message,
    with exactly one message in flight: the latency floor of a durable wire on this machine."""
    pub = await nats.connect(url, **CONNECT)
    sub_nc = await nats.connect(url, **CONNECT)
    try:
        js = pub.jetstream()
        sjs = sub_nc.jetstream()
        stream, subject = await _stream(js, "lat")
        try:
            await sjs.add_consumer(stream, ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT))
            sub = await sjs.pull_subscribe(subject, durable="raw", stream=stream)
            latencies: list[float] = []
            got = asyncio.Event()

            async def consume() -> None:
                while len(latencies) < n:
                    try:
                        msgs = await sub.fetch(1, timeout=2)
                    except nats.errors.TimeoutError:
                        continue
                    for m in msgs:
                        body = msgpack.unpackb(m.data)
                        latencies.append(time.perf_counter() - body["t"])
                        await m.ack()
                        got.set()

            consumer = asyncio.create_task(consume())
            try:
                for i in range(n):
                    got.clear()
                    await js.publish(subject, msgpack.packb({"seq": i, "t": time.perf_counter(), "data": PAD}))
                    await asyncio.wait_for(got.wait(), 10)
                await asyncio.wait_for(consumer, 10)
            finally:
                consumer.cancel()
            latencies.sort()
            return percentile(latencies, 50), percentile(latencies, 99)
        finally:
            await js.delete_stream(stream)
    finally:
        await sub_nc.close()
        await pub.close()


async def nats_steady(url: str, *, warmup: float = 1.0, window: float = 4.0, max_pending: int = 1024,
                      batch: int = 256) -> tuple[float, float]:
    """(consumed/s, published/s) with a producer that never stops (publish_async, bounded in
    flight) and a pull consumer fetching `batch` + ack, both in this event loop: what a durable
    wire fed by an unpaced source sees. The difference piles up in the stream."""
    pub = await nats.connect(url, **CONNECT)
    sub_nc = await nats.connect(url, **CONNECT)
    try:
        js = pub.jetstream(publish_async_max_pending=max_pending)
        sjs = sub_nc.jetstream()
        stream, subject = await _stream(js, "steady")
        try:
            await sjs.add_consumer(
                stream, ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000)
            )
            sub = await sjs.pull_subscribe(subject, durable="raw", stream=stream)
            packb, unpackb = msgpack.packb, msgpack.unpackb
            published = consumed = 0
            stop = asyncio.Event()

            async def produce() -> None:
                nonlocal published
                while not stop.is_set():
                    await js.publish_async(subject, packb({"seq": published, "data": PAD}))
                    published += 1

            async def consume() -> None:
                nonlocal consumed
                while not stop.is_set():
                    try:
                        msgs = await sub.fetch(batch, timeout=0.5)
                    except nats.errors.TimeoutError:
                        continue
                    for m in msgs:
                        unpackb(m.data)
                        await m.ack()
                    consumed += len(msgs)

            tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
            try:
                await asyncio.sleep(warmup)
                c0, p0, t0 = consumed, published, time.perf_counter()
                await asyncio.sleep(window)
                c1, p1, t1 = consumed, published, time.perf_counter()
            finally:
                stop.set()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            return (c1 - c0) / (t1 - t0), (p1 - p0) / (t1 - t0)
        finally:
            await js.delete_stream(stream)
    finally:
        await sub_nc.close()
        await pub.close()
