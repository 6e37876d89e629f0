"""Memory wires: what fluxmix costs over bare asyncio.Queue(1024) tasks doing the same work.

- generate -> file-out over one memory wire, against a producer -> consumer pair passing the same
  dicts and writing the same JSON lines (one write(2) each);
- a 5-gear chain (generate, 3 map relays adding a field, a counting sink) against 5 tasks doing the
  same dict work;
- the issue-16 pipeline (source -> map -> filter -> JSON-lines file) against the raw 4-task chain
  and against bytewax 0.21.1, one worker, source batches of 256 (bench/pipeline.py).
Targets from issue 16: 0.9, 0.8 of raw, and >= 1.0 of bytewax.

The group runs under the collector policy `fluxmix-mixer` runs under (fluxmix.runtime.gc_policy:
a higher young-generation threshold), fluxmix and its raw baselines alike: same process, same
interpreter settings. bytewax runs in its own process, as its users run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import baselines, pipeline
from bench.fixtures import RECORDER, bench_catalog, chain_scenario, running_scenario, seconds_until_written
from bench.harness import Row, Stat
from fluxmix.runtime.gc_policy import throughput_gc

QUEUE_SIZE = 1024


async def fluxmix_chain(catalog: Any, n: int, gears: int, name: str) -> float:
    """msg/s at the sink of a generate -> ... -> sink chain of `gears` gears on memory wires,
    from the first message the sink handles to the n-th."""
    data = chain_scenario(name, gears, "memory")
    RECORDER.reset(n)
    async with running_scenario(data, catalog):
        await asyncio.wait_for(RECORDER.done.wait(), 300)
        return RECORDER.rate()


async def raw_chain(n: int, stages: int) -> float:
    """`stages` tasks joined by asyncio.Queue(1024): a producer of the same dicts as generate's,
    relays adding a field as the map relays do, a counting consumer; first to last message."""
    template = baselines.make_body()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(QUEUE_SIZE) for _ in range(stages - 1)]
    first = last = 0.0

    async def produce() -> None:
        q = queues[0]
        for i in range(1, n + 1):
            made = dict(template)
            made["seq"] = i
            await q.put(made)

    async def relay(index: int, inq: asyncio.Queue[Any], outq: asyncio.Queue[Any]) -> None:
        key = f"hop{index}"
        for _ in range(n):
            b = await inq.get()
            await outq.put({**b, key: index})

    async def consume() -> None:
        nonlocal first, last
        q = queues[-1]
        await q.get()
        first = time.perf_counter()
        for _ in range(n - 1):
            await q.get()
        last = time.perf_counter()

    tasks = [asyncio.create_task(produce())]
    tasks += [asyncio.create_task(relay(i + 1, queues[i], queues[i + 1])) for i in range(stages - 2)]
    tasks.append(asyncio.create_task(consume()))
    await asyncio.gather(*tasks)
    return (n - 1) / (last - first)


FILE_SCENARIO = """name: {name}
gears:
  - {{name: source, type: generate, config: {{count: {n}, body: {{data: "{pad}"}}}}}}
  - {{name: sink, type: file-out, config: {{path: "{out}"}}}}
wires:
  - {{from: source.out, to: sink.in, transport: memory}}
"""


async def fluxmix_to_file(catalog: Any, n: int, name: str) -> float:
    """generate -> file-out: n / (start -> n-th line written)."""
    with tempfile.TemporaryDirectory(prefix="fluxmix-bench-file-") as tmp:
        text = FILE_SCENARIO.format(name=name, n=n, pad=baselines.PAD, out=Path(tmp) / "out.jsonl")
        return n / await seconds_until_written(text.encode(), catalog, n)


async def raw_to_file(n: int) -> float:
    """Producer -> asyncio.Queue(1024) -> consumer writing each dict as a JSON line."""
    template = baselines.make_body()
    q: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)

    async def produce() -> None:
        for i in range(1, n + 1):
            made = dict(template)
            made["seq"] = i
            await q.put(made)

    async def consume(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for _ in range(n):
                b = await q.get()
                os.write(fd, (json.dumps(b, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
        finally:
            os.close(fd)

    with tempfile.TemporaryDirectory(prefix="fluxmix-bench-rawfile-") as tmp:
        t0 = time.perf_counter()
        await asyncio.gather(produce(), consume(Path(tmp) / "out.jsonl"))
        return n / (time.perf_counter() - t0)


async def run(ctx: Any) -> list[Row]:
    with throughput_gc():  # as in the mixer (see the module's docstring)
        return await _run(ctx)


async def _run(ctx: Any) -> list[Row]:
    catalog = bench_catalog()
    rows = []

    n = ctx.scale(100_000, 20_000)
    fx, raw = Stat(), Stat()
    await fluxmix_to_file(catalog, min(n, 2000), "bench-file-warm")
    for rep in range(ctx.reps):
        fx.samples.append(await fluxmix_to_file(catalog, n, f"bench-file-{rep}"))
        raw.samples.append(await raw_to_file(n))
        ctx.log(f"memory generate -> file-out: fluxmix {fx.samples[-1]:.0f}/s raw {raw.samples[-1]:.0f}/s")
    rows.append(Row("memory", f"generate -> file-out, 1 memory wire, {n // 1000}k msgs", "msg/s", True, fx, raw,
                    "producer -> asyncio.Queue(1024) -> consumer writing the same JSON lines", target=0.9))

    n = ctx.scale(50_000, 10_000)
    fx, raw = Stat(), Stat()
    await fluxmix_chain(catalog, min(n, 2000), 5, "bench-mem-warm")
    for rep in range(ctx.reps):
        fx.samples.append(await fluxmix_chain(catalog, n, 5, f"bench-mem-5-{rep}"))
        raw.samples.append(await raw_chain(n, 5))
        ctx.log(f"memory 5 gears: fluxmix {fx.samples[-1]:.0f}/s raw {raw.samples[-1]:.0f}/s")
    rows.append(Row("memory", f"5-gear chain (generate, 3 map, sink; 4 memory wires), {n // 1000}k msgs", "msg/s",
                    True, fx, raw, "5 tasks, asyncio.Queue(1024), relays adding a field", target=0.8))

    n = ctx.scale(200_000, 40_000)
    fx, raw, peer = Stat(), Stat(), Stat()
    version = pipeline.bytewax_version()
    await pipeline.fluxmix_rate(min(n, 2000), "bench-pipe-warm")
    for rep in range(ctx.reps):
        fx.samples.append(await pipeline.fluxmix_rate(n, f"bench-pipe-{rep}"))
        raw.samples.append(await pipeline.raw_rate(n))
        if version:
            peer.samples.append(await asyncio.to_thread(pipeline.bytewax_rate, n))
        ctx.log(f"pipeline: fluxmix {fx.samples[-1]:.0f}/s raw {raw.samples[-1]:.0f}/s "
                f"bytewax {peer.samples[-1] if peer.samples else 'n/a'}")
    label = f"pipeline source -> map -> filter -> file (issue 16), {n // 1000}k msgs"
    rows.append(Row("memory", label, "msg/s", True, fx, raw, "4 tasks, asyncio.Queue(1024), same work"))
    if version:
        rows.append(Row("memory", f"{label}: vs bytewax", "msg/s", True, Stat(list(fx.samples)), peer,
                        f"bytewax {version}, 1 worker, source batches of 256", target=1.0))
    else:
        rows.append(Row("memory", f"{label}: vs bytewax", "msg/s", True, Stat(list(fx.samples)),
                        error="bytewax not installed: pip install -e '.[bench]' to measure this row"))
    return rows
