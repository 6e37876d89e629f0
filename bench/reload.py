"""Reload gap: a 10-gear scenario under steady load, reloaded (full restart) 20 times by
Activator.activate alternating two versions; the processing gap seen by the sink and the time
from trigger to ready.

The gap at the sink is the longest pause between two consecutive messages reaching the sink
across a reload (last message before the trigger .. first after ready); at a steady rate R the
normal pause is 1/R. There is no raw baseline for a reload: the journal's own gap_seconds is
shown next to the sink's figure as a cross-check.
"""

from __future__ import annotations

import asyncio
import bisect
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fixtures import RECORDER, bench_catalog, chain_scenario
from bench.harness import Row, Stat, percentile

GEARS = 10
RATES = {"memory": 1000.0, "standard": 200.0}  # msg/s of steady load; gap resolution is 1/rate
SETTLE = 0.3  # seconds of steady flow between reloads


async def _wait_flowing(after: float, count: int = 20, timeout: float = 30.0) -> None:
    """Until `count` messages reached the sink after perf time `after`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arr = RECORDER.arrivals or []
        i = bisect.bisect_right(arr, after)
        if len(arr) - i >= count:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no steady flow at the sink within {timeout} s after a reload")


async def reload_series(transport: str, reloads: int, nats_url: str | None) -> dict[str, Any]:
    from fluxmix.mixer.activation import Activator
    from fluxmix.store import open_store
    from fluxmix.transports.registry import Brokers, NatsSettings

    catalog = bench_catalog()
    tmp = Path(tempfile.mkdtemp(prefix="fluxmix-bench-reload-"))
    name = f"bench-reload-{transport}"
    store = open_store(tmp / "home")
    brokers = Brokers(tmp / "home", NatsSettings(servers=[nats_url] if nats_url else []))
    activator = Activator(store, catalog, brokers, stop_timeout=30.0)
    try:
        refs = []
        for tag, desc in (("v1.0.0", "version A"), ("v1.1.0", "version B")):
            data = chain_scenario(name, GEARS, transport, rate=RATES[transport], description=desc)
            store.import_bytes("scenario", data, name=name, tag=tag)
            refs.append(f"{name}:{tag}")
        RECORDER.reset(10**12, arrivals=True)
        entry = await activator.activate(refs[0], trigger="bench")
        if entry.outcome != "activated":
            raise RuntimeError(f"first activation {entry.outcome}: {entry.reason}")
        await _wait_flowing(0.0, 50)
        windows: list[tuple[float, float]] = []
        journal_gaps: list[float] = []
        phases: dict[str, list[float]] = {}
        per_reload: list[dict[str, float]] = []
        for i in range(reloads):
            await asyncio.sleep(SETTLE)
            ref = refs[(i + 1) % 2]
            t0 = time.perf_counter()
            entry = await activator.activate(ref, trigger="bench")
            t1 = time.perf_counter()
            if entry.outcome != "activated":
                raise RuntimeError(f"reload {i + 1} to {ref}: {entry.outcome}: {entry.reason}")
            windows.append((t0, t1))
            if entry.gap_seconds is not None:
                journal_gaps.append(entry.gap_seconds)
            for phase, seconds in (entry.phases or {}).items():
                phases.setdefault(phase, []).append(seconds)
            per_reload.append(dict(entry.phases or {}))
            await _wait_flowing(t1, 5)
        await asyncio.sleep(SETTLE)
        await activator.shutdown()
        arr = RECORDER.arrivals or []
        gaps = []
        for t0, t1 in windows:
            i0 = max(0, bisect.bisect_left(arr, t0) - 1)  # last message before the trigger
            j = bisect.bisect_right(arr, t1)  # first message after ready
            seg = arr[i0 : j + 1]
            gaps.append(max(b - a for a, b in zip(seg, seg[1:])))
        return {
            "gaps": gaps,
            "journal_gaps": journal_gaps,
            "ready": [t1 - t0 for t0, t1 in windows],
            "phases": {k: statistics.median(v) for k, v in phases.items()},
            "slowest": per_reload[max(range(len(windows)), key=lambda k: windows[k][1] - windows[k][0])] if windows else {},
            "handled": RECORDER.count,
            "duplicates": RECORDER.duplicates,
        }
    finally:
        try:
            if activator.current is not None:
                await activator.shutdown()
        finally:
            await brokers.close()
            store.close()
            shutil.rmtree(tmp, ignore_errors=True)


def _summary(values: list[float]) -> str:
    s = sorted(values)
    return f"p50 {percentile(s, 50) * 1e3:.0f} ms, p99 {percentile(s, 99) * 1e3:.0f} ms, max {s[-1] * 1e3:.0f} ms"


async def run(ctx: Any) -> list[Row]:
    reloads = ctx.scale(20, 5)
    rows = []
    for transport in ("memory", "standard"):
        url = await ctx.nats_url() if transport == "standard" else None
        res = await reload_series(transport, reloads, url)
        rate = RATES[transport]
        ctx.log(f"reload {transport}: gap {_summary(res['gaps'])}; ready {_summary(res['ready'])}; dup {res['duplicates']}")
        label = f"{GEARS}-gear {transport} @{rate:.0f} msg/s"
        rows.append(Row("reload", f"{label}: gap at sink", "s", False, Stat(res["gaps"]),
                        note=f"{reloads} reloads; {_summary(res['gaps'])}; duplicates {res['duplicates']}"))
        if res["journal_gaps"]:
            rows.append(Row("reload", f"{label}: journal gap_seconds", "s", False, Stat(res["journal_gaps"]),
                            note=_summary(res["journal_gaps"])))
        phases = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in res["phases"].items())
        slowest = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in res["slowest"].items())
        ctx.log(f"reload {transport}: median phases: {phases}; slowest reload: {slowest}")
        rows.append(Row("reload", f"{label}: trigger -> ready", "s", False, Stat(res["ready"]),
                        note=f"{_summary(res['ready'])}; median phases: {phases}; slowest reload: {slowest}"))
    return rows
