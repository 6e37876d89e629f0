"""Reload gap: a 10-gear scenario under steady load, reloaded (full restart, `--reload full`) 20
times by Activator.activate alternating two versions; the processing gap seen by the sink and the
time from trigger to ready. Then issue 10's partial reload (see `partial_series`).

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
    # The two versions differ in their description only: a partial reload would restart nothing.
    activator = Activator(store, catalog, brokers, stop_timeout=30.0, reload_mode="full")
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


# ---------------------------------------------------------------- issue 10: partial reload

BRANCH_SINK = "bench-branch-sink"
# The issue asks 1,000 msg/s on both transports. Ten standard wires at 1,000 msg/s each did not keep
# up on the shared 2-core machine (branch b fell ~40% behind before any reload; RESULTS.md): the
# standard series runs at the rate the full-restart standard series uses, so the reload is what shows.
PARTIAL_RATES = {"memory": 1000.0, "standard": 200.0}


class _Branches:
    """Per sink: arrival times (perf_counter) and source seqs, across every instance of it."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.seqs: dict[str, list[int]] = {}

    def take(self, sink: str, message: Any) -> None:
        self.arrivals.setdefault(sink, []).append(time.perf_counter())
        self.seqs.setdefault(sink, []).append(message.body["seq"])


BRANCHES = _Branches()


def _branch_sink_class() -> Any:
    from fluxmix.gears.base import Gear, Port

    class BranchSink(Gear):
        """Records what reaches it per sink name; `fail_start` refuses to start (a bad version)."""

        type = BRANCH_SINK
        description = "benchmark sink: records arrivals and seqs per sink"
        inputs = (Port("in", "anything", required=True),)
        config_schema = {"type": "object", "additionalProperties": False,
                         "properties": {"fail_start": {"type": "boolean"}}}

        async def start(self) -> None:
            if self.config.get("fail_start"):
                raise RuntimeError("refusing to start (bench: a failing new version)")

        async def handle(self, port: str, message: Any) -> None:
            BRANCHES.take(self.name, message)

    return BranchSink


def branches_scenario(name: str, transport: str, variant: int, *, fail: bool = False,
                      rate: float | None = None) -> bytes:
    """generate -> split -> a1..a3 -> sink_a and split -> b1..b3 -> sink_b: 10 gears. `variant`
    configures b2 only; `fail` also gives sink_b a config that cannot start."""
    import yaml

    from bench.fixtures import generate_config

    gears: list[dict[str, Any]] = [
        {"name": "source", "type": "generate", "config": generate_config(rate=rate or PARTIAL_RATES[transport])},
        {"name": "split", "type": "map", "config": {"set": {"split": 1}}},
    ]
    wires = [("source", "split")]
    for branch in ("a", "b"):
        prev = "split"
        for i in (1, 2, 3):
            config = {"set": {f"{branch}{i}": variant if (branch, i) == ("b", 2) else i}}
            gears.append({"name": f"{branch}{i}", "type": "map", "config": config})
            wires.append((prev, f"{branch}{i}"))
            prev = f"{branch}{i}"
        sink: dict[str, Any] = {"name": f"sink_{branch}", "type": BRANCH_SINK}
        if fail and branch == "b":
            sink["config"] = {"fail_start": True}
        gears.append(sink)
        wires.append((prev, f"sink_{branch}"))
    doc = {"name": name, "gears": gears,
           "wires": [{"from": f"{a}.out", "to": f"{b}.in", "transport": transport} for a, b in wires]}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def _overlaps(a: float, b: float, windows: list[tuple[float, float]]) -> bool:
    return any(a < t1 and b > t0 for t0, t1 in windows)


def _exactly_once(seqs: list[int]) -> tuple[int, int]:
    """(duplicates, missing) of 1..max."""
    if not seqs:
        return 0, 0
    unique = set(seqs)
    return len(seqs) - len(unique), max(unique) - len(unique)


async def partial_series(transport: str, reloads: int, nats_url: str | None, mode: str = "partial") -> dict[str, Any]:
    """Two branches at PARTIAL_RATES[transport]; `reloads` reloads change b2's config (alternating), and one
    in the middle also breaks sink_b (rolled back). Branch a is unchanged throughout."""
    from fluxmix.mixer.activation import Activator
    from fluxmix.store import open_store
    from fluxmix.transports.registry import Brokers, NatsSettings

    catalog = bench_catalog()
    catalog.register(BRANCH_SINK, _branch_sink_class(), origin="bench")
    tmp = Path(tempfile.mkdtemp(prefix="fluxmix-bench-partial-"))
    name = f"bench-partial-{transport}-{mode}"
    store = open_store(tmp / "home")
    brokers = Brokers(tmp / "home", NatsSettings(servers=[nats_url] if nats_url else []))
    activator = Activator(store, catalog, brokers, stop_timeout=30.0, reload_mode=mode)
    BRANCHES.__init__()  # type: ignore[misc]
    try:
        refs = []
        for tag, variant, fail in (("v1.0.0", 1, False), ("v1.1.0", 2, False), ("v1.2.0", 3, True)):
            store.import_bytes("scenario", branches_scenario(name, transport, variant, fail=fail), name=name, tag=tag)
            refs.append(f"{name}:{tag}")
        entry = await activator.activate(refs[0], trigger="bench")
        if entry.outcome != "activated":
            raise RuntimeError(f"first activation {entry.outcome}: {entry.reason}")
        await _wait_branch("sink_b", 0.0, 200)
        windows: list[tuple[float, float]] = []
        outcomes: list[str] = []
        restarted: list[int] = []
        phases: dict[str, list[float]] = {}
        plan = [refs[(i + 1) % 2] for i in range(reloads)]
        plan.insert(reloads // 2, refs[2])  # a failing start, rolled back, in the middle
        for ref in plan:
            await asyncio.sleep(SETTLE)
            t0 = time.perf_counter()
            entry = await activator.activate(ref, trigger="bench")
            t1 = time.perf_counter()
            expected = "rolled-back" if ref == refs[2] else "activated"
            if entry.outcome != expected:
                raise RuntimeError(f"reload to {ref}: {entry.outcome} (expected {expected}): {entry.reason}")
            outcomes.append(entry.outcome)
            for phase, seconds in (entry.phases or {}).items():
                phases.setdefault(phase, []).append(seconds)
            if entry.outcome == "activated":
                windows.append((t0, t1))
                reload = entry.reload or {}
                restarted.append(len(reload.get("gears_restarted", [])) + len(reload.get("gears_added", [])))
            await _wait_branch("sink_b", t1, 20)
        await asyncio.sleep(SETTLE)
        await activator.shutdown()
        arr_a = BRANCHES.arrivals.get("sink_a", [])
        during, outside = [], []
        for a, b in zip(arr_a, arr_a[1:]):
            (during if _overlaps(a, b, windows) else outside).append(b - a)
        arr_b = BRANCHES.arrivals.get("sink_b", [])
        gaps = []
        for t0, t1 in windows:
            i0 = max(0, bisect.bisect_left(arr_b, t0) - 1)
            j = bisect.bisect_right(arr_b, t1)
            seg = arr_b[i0 : j + 1]
            gaps.append(max(b - a for a, b in zip(seg, seg[1:])))
        return {
            "during": during, "outside": outside, "gaps": gaps, "restarted": restarted,
            "rolled_back": outcomes.count("rolled-back"),
            "phases": {k: statistics.median(v) for k, v in phases.items()},
            "once_a": _exactly_once(BRANCHES.seqs.get("sink_a", [])),
            "once_b": _exactly_once(BRANCHES.seqs.get("sink_b", [])),
            "handled": {k: len(v) for k, v in BRANCHES.seqs.items()},
        }
    finally:
        try:
            if activator.current is not None:
                await activator.shutdown()
        finally:
            await brokers.close()
            store.close()
            shutil.rmtree(tmp, ignore_errors=True)


async def _wait_branch(sink: str, after: float, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arr = BRANCHES.arrivals.get(sink, [])
        if len(arr) - bisect.bisect_right(arr, after) >= count:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no steady flow at {sink} within {timeout} s after a reload")


def _p99(values: list[float]) -> float:
    return percentile(sorted(values), 99) if values else float("nan")


async def partial_rows(ctx: Any, reloads: int) -> list[Row]:
    rows = []
    for transport, mode in (("memory", "partial"), ("standard", "partial"), ("memory", "full")):
        url = await ctx.nats_url() if transport == "standard" else None
        res = await partial_series(transport, reloads, url, mode)
        label = f"issue 10, 10-gear two-branch {transport} @{PARTIAL_RATES[transport]:.0f} msg/s, --reload {mode}"
        p99_in, p99_out = _p99(res["during"]), _p99(res["outside"])
        (dup_a, miss_a), (dup_b, miss_b) = res["once_a"], res["once_b"]
        once = (f"exactly once: sink_a {res['handled'].get('sink_a', 0)} msgs, {dup_a} dup, {miss_a} missing; "
                f"sink_b {res['handled'].get('sink_b', 0)} msgs, {dup_b} dup, {miss_b} missing; "
                f"{res['rolled_back']} failing start rolled back mid-series")
        ctx.log(f"partial {transport} {mode}: unchanged branch p99 during {p99_in * 1e3:.1f} ms / outside "
                f"{p99_out * 1e3:.1f} ms; changed branch gap {_summary(res['gaps'])}; restarted {res['restarted'][:3]}; {once}")
        rows.append(Row("reload", f"{label}: unchanged branch p99 inter-arrival during reloads", "s", False,
                        Stat([p99_in]), raw=Stat([p99_out]), raw_label="same branch, outside reloads",
                        target=0.5, note=f"{len(res['during'])} intervals during / {len(res['outside'])} outside "
                        f"{len(res['gaps'])} reloads; target: within 2x (ratio >= 0.5)"))
        rows.append(Row("reload", f"{label}: changed branch gap at sink", "s", False, Stat(res["gaps"]),
                        note=f"{_summary(res['gaps'])}; gears restarted per reload {sorted(set(res['restarted']))}; "
                        "target p50 < 20 ms on memory"))
        rows.append(Row("reload", f"{label}: seqs not exactly once (both sinks)", "msgs", False,
                        Stat([float(dup_a + miss_a + dup_b + miss_b)]), note=once))
    return rows


async def run(ctx: Any) -> list[Row]:
    reloads = ctx.scale(20, 5)
    rows = await partial_rows(ctx, reloads)
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
