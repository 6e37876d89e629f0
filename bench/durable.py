"""Durable wire: throughput of generate -> sink over one standard (JetStream) wire against
the fastest raw nats-py pattern measured in the same run, and end-to-end latency at a fixed
1,000 msg/s against raw publish -> consume with one message in flight (the floor)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import nats

from bench import baselines
from bench.fixtures import RECORDER, bench_catalog, chain_scenario, running_scenario
from bench.harness import Row, Stat, percentile
from fluxmix.transports.nats import stream_name
from fluxmix.transports.registry import NatsSettings

RAW_MAX_PENDING = 1024  # publish_async in flight; 256..4096 measured the same here
RAW_BATCH = 256  # pull fetch batch


async def fluxmix_throughput(catalog: Any, url: str, n: int) -> float:
    # a bounded source, like the raw pattern: publish n as fast as the wire takes them while
    # the consumer drains; an unbounded one starves the consumer (see RESULTS.md)
    data = chain_scenario(f"bench-dur-{uuid.uuid4().hex[:8]}", 2, "standard", count=n)
    RECORDER.reset(n)
    async with running_scenario(data, catalog, nats_url=url):
        await asyncio.wait_for(RECORDER.done.wait(), 300)
        return RECORDER.rate()


async def fluxmix_steady(catalog: Any, url: str, warmup: float, window: float) -> tuple[float, float, int]:
    """(sink msg/s, source msg/s, most messages seen in the stream) of generate -> sink with an
    unpaced, unbounded source; the backlog is sampled every 0.25 s (the wire's bound must hold)."""
    name = f"bench-steady-{uuid.uuid4().hex[:8]}"
    data = chain_scenario(name, 2, "standard")
    RECORDER.reset(10**12)
    nc = await nats.connect(url)
    js = nc.jetstream()
    most = 0

    async def backlog() -> int:
        try:
            return (await js.stream_info(stream_name(name))).state.messages
        except Exception:
            return 0

    try:
        async with running_scenario(data, catalog, nats_url=url) as runtime:
            await asyncio.sleep(warmup)
            c0, e0, t0 = RECORDER.count, runtime.status().gears["source"].emitted, time.perf_counter()
            while time.perf_counter() - t0 < window:
                await asyncio.sleep(0.25)
                most = max(most, await backlog())
            c1, e1, t1 = RECORDER.count, runtime.status().gears["source"].emitted, time.perf_counter()
    finally:
        await nc.close()
    return (c1 - c0) / (t1 - t0), (e1 - e0) / (t1 - t0), most


async def fluxmix_latency(catalog: Any, url: str, n: int, rate: float) -> tuple[float, float]:
    data = chain_scenario(f"bench-lat-{uuid.uuid4().hex[:8]}", 2, "standard", rate=rate)
    RECORDER.reset(n, latencies=True)
    async with running_scenario(data, catalog, nats_url=url):
        await asyncio.wait_for(RECORDER.done.wait(), 60 + 2 * n / rate)
        lat = sorted((RECORDER.latencies or [])[n // 10 :])  # first 10%: warm-up
    return percentile(lat, 50), percentile(lat, 99)


async def run(ctx: Any) -> list[Row]:
    url = await ctx.nats_url()
    catalog = bench_catalog()
    rows = []

    n = ctx.scale(30_000, 5_000)
    fx, raw, raw_cb = Stat(), Stat(), Stat()
    await fluxmix_throughput(catalog, url, 500)  # warm-up
    for _ in range(ctx.reps):
        fx.samples.append(await fluxmix_throughput(catalog, url, n))
        raw.samples.append(await baselines.nats_throughput(url, n, max_pending=RAW_MAX_PENDING, batch=RAW_BATCH))
        raw_cb.samples.append(await baselines.nats_throughput_callback_pull(url, n, max_pending=RAW_MAX_PENDING))
        ctx.log(f"durable: fluxmix {fx.samples[-1]:.0f}/s raw fetch {raw.samples[-1]:.0f}/s "
                f"raw callback pull {raw_cb.samples[-1]:.0f}/s")
    title = f"generate -> sink, 1 standard wire, {n // 1000}k msgs"
    rows.append(Row("durable", title, "msg/s", True, fx, raw,
                    f"publish_async({RAW_MAX_PENDING}) -> fetch({RAW_BATCH})+ack"))
    rows.append(Row("durable", f"{title} (vs callback pull)", "msg/s", True, fx, raw_cb,
                    f"publish_async({RAW_MAX_PENDING}) -> callback pull 4x1000 + ack"))

    warmup, window = (1.0, 4.0) if not ctx.quick else (0.5, 2.0)
    fx, raw = Stat(), Stat()
    fx_pub, raw_pub, backlogs = [], [], []
    for _ in range(ctx.reps):
        sink, source, most = await fluxmix_steady(catalog, url, warmup, window)
        backlogs.append(most)
        fx.samples.append(sink)
        fx_pub.append(source)
        consumed, published = await baselines.nats_steady(url, warmup=warmup, window=window,
                                                          max_pending=RAW_MAX_PENDING, batch=RAW_BATCH)
        raw.samples.append(consumed)
        raw_pub.append(published)
        ctx.log(f"durable steady: fluxmix sink {sink:.0f}/s (source {source:.0f}/s), raw {consumed:.0f}/s (pub {published:.0f}/s)")
    rows.append(Row("durable", "unpaced endless source: sink rate", "msg/s", True, fx, raw,
                    "same raw pattern, endless producer",
                    note=f"source ran at {statistics.median(fx_pub):.0f}/s (raw producer {statistics.median(raw_pub):.0f}/s): "
                         f"the difference piles up in the stream, at most {max(backlogs)} messages seen "
                         f"(wire bound {NatsSettings().wire_backlog})"))

    rate = 1000.0
    n = ctx.scale(3000, 1000)
    p50, p99, r50, r99 = Stat(), Stat(), Stat(), Stat()
    for _ in range(ctx.reps):
        a, b = await fluxmix_latency(catalog, url, n, rate)
        p50.samples.append(a)
        p99.samples.append(b)
        a, b = await baselines.nats_latency_one_in_flight(url, n)
        r50.samples.append(a)
        r99.samples.append(b)
        ctx.log(f"durable latency: fluxmix p50 {p50.samples[-1] * 1e3:.2f} ms, raw p50 {a * 1e3:.2f} ms")
    rows.append(Row("durable", "end-to-end latency p50 at 1,000 msg/s", "s", False, p50, r50, "raw, 1 in flight"))
    rows.append(Row("durable", "end-to-end latency p99 at 1,000 msg/s", "s", False, p99, r99, "raw, 1 in flight"))
    return rows
