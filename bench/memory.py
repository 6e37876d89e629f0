"""Memory wire throughput: generate -> sink over one memory wire, and a 5-gear chain,
against bare asyncio.Queue(1024) chains doing msgpack encode/decode of the same body."""

from __future__ import annotations

import asyncio
from typing import Any

from bench import baselines
from bench.fixtures import RECORDER, bench_catalog, chain_scenario, running_scenario
from bench.harness import Row, Stat


async def fluxmix_throughput(catalog: Any, n: int, gears: int, name: str) -> float:
    """msg/s at the sink of a generate -> ... -> sink chain of `gears` gears on memory wires,
    from the first message the sink handles to the n-th."""
    data = chain_scenario(name, gears, "memory")
    RECORDER.reset(n)
    async with running_scenario(data, catalog):
        await asyncio.wait_for(RECORDER.done.wait(), 300)
        return RECORDER.rate()


async def run(ctx: Any) -> list[Row]:
    catalog = bench_catalog()
    rows = []
    for gears, label in ((2, "generate -> sink, 1 memory wire"), (5, "5-gear chain (4 memory wires)")):
        n = ctx.scale(100_000, 20_000) if gears == 2 else ctx.scale(50_000, 10_000)
        fx, raw = Stat(), Stat()
        # warm-up: imports, first activation
        await fluxmix_throughput(catalog, min(n, 2000), gears, "bench-mem-warm")
        for rep in range(ctx.reps):
            fx.samples.append(await fluxmix_throughput(catalog, n, gears, f"bench-mem-{gears}-{rep}"))
            raw.samples.append(await baselines.queue_throughput(n, stages=gears))
            ctx.log(f"memory {gears} gears: fluxmix {fx.samples[-1]:.0f}/s raw {raw.samples[-1]:.0f}/s")
        rows.append(
            Row("memory", f"{label}, {n // 1000}k msgs", "msg/s", True, fx, raw,
                f"{gears}-task asyncio.Queue chain" if gears > 2 else "asyncio.Queue + msgpack")
        )
    return rows
