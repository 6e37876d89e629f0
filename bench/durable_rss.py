"""Durable wire, long run: the nats-server's memory after 5 minutes at a sustained rate.

Why: every publish carries a Nats-Msg-Id and JetStream keeps each id for the whole duplicate
window, so the server's memory is rate x window (issue 17). This group runs generate -> sink over
one standard wire, paced at `FLUXMIX_BENCH_RSS_RATE` msg/s (2,000 by default) for 5 minutes (30 s
with --quick) with the mixer's default window, samples the server's RSS, and reports the last
sample against the bound the README states: 64 MiB + rate x window x 600 B (about 300 B per id
measured on nats-server 2.15, doubled for Go's GC headroom). The ratio is bound / measured, so
>= 1.0 means the server stayed within its bound. Not part of `all` (it takes 5 minutes): run it
with `python -m bench durable_rss`.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from bench.fixtures import RECORDER, bench_catalog, chain_scenario, running_scenario
from bench.harness import Row, Stat
from fluxmix.transports.nats.provisioning import duplicate_window_for

BASE_BYTES = 64 * 2**20
BYTES_PER_ID = 600


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bound_bytes(rate: float, window: float) -> float:
    return BASE_BYTES + rate * window * BYTES_PER_ID


async def run(ctx: Any) -> list[Row]:
    url = await ctx.nats_url()
    pid = ctx.nats_pid
    if pid is None:
        raise RuntimeError("the bench's nats-server has no pid to measure")
    rate = float(os.environ.get("FLUXMIX_BENCH_RSS_RATE", "2000"))
    seconds = 30.0 if ctx.quick else 300.0
    window = duplicate_window_for(30.0)  # the mixer's default (ack wait 30 s)
    data = chain_scenario(f"bench-rss-{uuid.uuid4().hex[:8]}", 2, "standard", rate=rate)
    RECORDER.reset(10**12)
    samples: list[tuple[float, int]] = []
    before = rss_bytes(pid)
    async with running_scenario(data, bench_catalog(), nats_url=url):
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            await asyncio.sleep(min(10.0, seconds - elapsed))
            samples.append((time.monotonic() - t0, rss_bytes(pid)))
            ctx.log(f"durable_rss: {samples[-1][0]:.0f} s, nats-server RSS {samples[-1][1] / 2**20:.0f} MiB, "
                    f"sink {RECORDER.count} msgs")
        received = RECORDER.count
        took = time.monotonic() - t0
    last, peak = samples[-1][1], max(b for _, b in samples)
    bound = bound_bytes(rate, window)
    note = (f"{rate:.0f} msg/s paced, window {window:.0f} s, {took:.0f} s; sink got {received / took:.0f} msg/s; "
            f"RSS before {before / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB; bound = 64 MiB + rate x window x 600 B")
    return [Row("durable_rss", f"nats-server RSS after {seconds / 60:g} min at {rate:.0f} msg/s", "bytes", False,
                Stat([float(last)]), Stat([bound]), "bound (README)", note=note, target=1.0)]
