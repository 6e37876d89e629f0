"""Where the milliseconds of a reload go: `python -m bench.reload_probe [--transport standard] [--mode full]`.

Runs the reload bench's 10-gear scenario (bench/reload.py) under steady load and reloads it N
times, with timestamps around each step of the activation (resolve, build, the stop of the old
gears and its parts, the start of the new ones and its parts, the journal) and the sink's
arrivals. Prints, per step, the median offset from the trigger at which it began and ended, and
the median duration; and where the gap at the sink falls in that timeline. With `--debug` the
loop runs in asyncio debug mode and reports callbacks longer than `--slow` ms (slower overall:
use it to find what blocks the loop, not for the figures).

A diagnostic, not a benchmark row: the wrappers cost a few microseconds per call. Run it under
`flock /work/bench.lock` like every bench run.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import logging
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from bench.fixtures import RECORDER, bench_catalog, chain_scenario
from bench.natsserver import running_nats
from bench.reload import GEARS, RATES, SETTLE, _wait_flowing

Span = tuple[str, float, float]
SPANS: list[Span] = []


def _async_span(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            SPANS.append((label, t0, time.perf_counter()))
    return wrapper


def _sync_span(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPANS.append((label, t0, time.perf_counter()))
    return wrapper


def instrument() -> None:
    """Wrap the steps of an activation; labels are what the report prints."""
    from fluxmix.mixer import activation
    from fluxmix.runtime import core, reload, runner
    from fluxmix import globals_state, store as store_mod
    from fluxmix.transports import registry
    from fluxmix.transports.nats import broker, consumer, wire

    patches: list[tuple[Any, str, str, bool]] = [
        (activation, "resolve_scenario", "1 resolve+validate (thread)", False),
        (activation.Activator, "_build", "2 build", True),
        (broker.NatsBroker, "prepare", "2.1 provision (nats prepare)", True),
        (core.Runtime, "build", "2.2 runtime.build", True),
        (activation, "plan_reload", "1.5 plan (diff)", False),
        (activation, "prepare_reload", "2 build (partial)", True),
        (core.Runtime, "new_runner", "2.3 new runner (each)", False),
        (reload, "_swap", "3.5 swap (partial)", False),
        (core.Runtime, "stop", "3 stop old", True),
        (runner.GearRunner, "stop_source", "3.1 stop source", True),
        (wire.NatsWire, "drain", "3.2 nats wire drain", True),
        (wire.NatsWire, "detach", "3.2 nats wire detach", True),
        (consumer.PullConsumer, "_retire", "3.2.1 fenced inbox drain", True),
        (consumer.PullConsumer, "_shutdown", "3.2.2 consumer shutdown", True),
        (runner.GearRunner, "stop", "3.3 gear stop (each)", True),
        (core.Runtime, "_abandon", "3.4 abandon/close wires", True),
        (reload, "_stop_within", "3 stop affected (partial)", True),
        (core.Runtime, "release", "4.5 close old wires (full)", True),
        (core.Runtime, "start", "4 start new", True),
        (core.Runtime, "start_runners", "4 start runners", True),
        (runner.GearRunner, "start", "4.1 gear start (each)", True),
        (consumer.PullConsumer, "_new_generation", "4.2 consumer subscribe", True),
        (registry.Brokers, "for_scenario", "2.0 brokers.for_scenario", True),
        (globals_state.ScenarioGlobals, "seed", "2.0 globals seed (thread)", False),
        (store_mod.Store, "load_checkpoint", "s store.load_checkpoint", False),
        (store_mod.Store, "save_checkpoint", "s store.save_checkpoint", False),
        (store_mod.Store, "set_active", "s store.set_active", False),
        (store_mod.Store, "record_activation", "s store.record_activation", False),
        (activation.Activator, "_measure_gap", "6 wait for first message", True),
        (activation.Activator, "_journal", "7 journal (thread)", True),
    ]
    for owner, name, label, is_async in patches:
        fn = getattr(owner, name)
        setattr(owner, name, (_async_span if is_async else _sync_span)(label, fn))


async def probe(transport: str, mode: str, reloads: int, nats_url: str | None, branches: bool = False) -> None:
    from fluxmix.mixer.activation import Activator
    from fluxmix.store import open_store
    from fluxmix.transports.registry import Brokers, NatsSettings

    catalog = bench_catalog()
    if branches:
        from bench.reload import BRANCH_SINK, _branch_sink_class
        catalog.register(BRANCH_SINK, _branch_sink_class(), origin="bench")
    tmp = Path(tempfile.mkdtemp(prefix="fluxmix-probe-reload-"))
    name = f"probe-reload-{transport}"
    store = open_store(tmp / "home")
    brokers = Brokers(tmp / "home", NatsSettings(servers=[nats_url] if nats_url else []))
    activator = Activator(store, catalog, brokers, stop_timeout=30.0, reload_mode=mode)
    refs = []
    for tag, relay in (("v1.0.0", 1), ("v1.1.0", 2)):
        # partial: one relay's config differs (it and its wires' ends restart); full: the description
        data = chain_scenario(name, GEARS, transport, rate=RATES[transport], description=f"version {relay}")
        if mode == "partial" and relay == 2:
            data = data.replace(b"hop5: 5", b"hop5: 50")
        if branches:  # issue 10's two branches: b2's config changes, branch a runs on
            from bench.reload import branches_scenario
            data = branches_scenario(name, transport, relay)
        store.import_bytes("scenario", data, name=name, tag=tag)
        refs.append(f"{name}:{tag}")
    RECORDER.reset(10**12, arrivals=True)
    if branches:
        from bench.reload import BRANCHES
        BRANCHES.__init__()  # type: ignore[misc]
        RECORDER.arrivals = BRANCHES.arrivals.setdefault("sink_b", [])
    try:
        await activator.activate(refs[0], trigger="probe")
        await _wait_flowing(0.0, 50)
        windows = []
        for i in range(reloads):
            await asyncio.sleep(SETTLE)
            SPANS.append(("trigger", time.perf_counter(), time.perf_counter()))
            t0 = time.perf_counter()
            entry = await activator.activate(refs[(i + 1) % 2], trigger="probe")
            t1 = time.perf_counter()
            if entry.outcome != "activated":
                raise RuntimeError(f"reload {i}: {entry.outcome}: {entry.reason}")
            windows.append((t0, t1))
            await _wait_flowing(t1, 5)
        await activator.shutdown()
    finally:
        await brokers.close()
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report(windows, transport, mode)


def report(windows: list[tuple[float, float]], transport: str, mode: str) -> None:
    arr = RECORDER.arrivals or []
    offsets: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    gaps, gap_at, ready = [], [], []
    for t0, t1 in windows:
        per: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for label, a, b in SPANS:
            if t0 <= a <= t1 + 0.001:
                per[label].append((a - t0, b - t0))
        for label, spans in per.items():
            begin, end = min(s[0] for s in spans), max(s[1] for s in spans)
            offsets[label].append((begin, end, sum(s[1] - s[0] for s in spans)))
        i0 = max(0, bisect.bisect_left(arr, t0) - 1)
        j = bisect.bisect_right(arr, t1)
        seg = arr[i0 : j + 1]
        k = max(range(len(seg) - 1), key=lambda n: seg[n + 1] - seg[n])
        gaps.append(seg[k + 1] - seg[k])
        gap_at.append((seg[k] - t0, seg[k + 1] - t0))
        ready.append(t1 - t0)
    ms = lambda v: f"{v * 1e3:7.1f}"  # noqa: E731
    print(f"\n{transport} @{RATES[transport]:.0f} msg/s, --reload {mode}, {len(windows)} reloads "
          f"(offsets from the trigger, medians in ms)")
    print(f"{'step':34} {'begins':>7} {'ends':>7} {'busy':>7}  n/reload")
    for label in sorted(offsets):
        rows = offsets[label]
        print(f"{label:34} {ms(statistics.median(r[0] for r in rows))} {ms(statistics.median(r[1] for r in rows))} "
              f"{ms(statistics.median(r[2] for r in rows))}  {len(rows) / len(windows):.0f}")
    print(f"{'gap at the sink: last msg before':34} {ms(statistics.median(g[0] for g in gap_at))}")
    print(f"{'gap at the sink: first msg after':34} {ms(statistics.median(g[1] for g in gap_at))}")
    s = sorted(gaps)
    from bench.reload import BRANCHES, _overlaps, _p99
    arr_a = BRANCHES.arrivals.get("sink_a", [])
    if arr_a:  # issue 10: the unchanged branch
        during, outside = [], []
        for a, b in zip(arr_a, arr_a[1:]):
            (during if _overlaps(a, b, windows) else outside).append(b - a)
        worst = []
        for t0, t1 in windows:
            i0 = max(0, bisect.bisect_left(arr_a, t0) - 1)
            seg = arr_a[i0 : bisect.bisect_right(arr_a, t1) + 1]
            k = max(range(len(seg) - 1), key=lambda n: seg[n + 1] - seg[n])
            worst.append((seg[k] - t0, seg[k + 1] - t0))
        print("unchanged branch: longest pause per reload (from..to ms after the trigger): "
              + ", ".join(f"{a * 1e3:.1f}..{b * 1e3:.1f}" for a, b in worst))
        print(f"unchanged branch (sink_a) p99 inter-arrival during reloads {ms(_p99(during))}, outside {ms(_p99(outside))}"
              f" -> {_p99(during) / _p99(outside):.2f}x")
    print(f"gap p50 {ms(statistics.median(gaps))} max {ms(s[-1])}; trigger -> ready p50 {ms(statistics.median(ready))} "
          f"max {ms(max(ready))}; duplicates {RECORDER.duplicates}")


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    if args.debug:
        loop.set_debug(True)
        loop.slow_callback_duration = args.slow / 1e3
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    instrument()
    if args.switch_interval:
        import sys
        sys.setswitchinterval(args.switch_interval / 1e3)
    if args.transport == "standard":
        async with running_nats() as (url, _server):
            await probe(args.transport, args.mode, args.reloads, url, args.branches)
    else:
        await probe(args.transport, args.mode, args.reloads, None, args.branches)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", default="standard", choices=sorted(RATES))
    parser.add_argument("--mode", default="full", choices=("full", "partial"))
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--branches", action="store_true",
                        help="issue 10's two-branch scenario (b2 changes; the gap is sink_b's)")
    parser.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval in ms (experiment)")
    parser.add_argument("--debug", action="store_true", help="asyncio debug: log slow callbacks")
    parser.add_argument("--slow", type=float, default=3.0, help="slow callback threshold in ms (with --debug)")
    asyncio.run(main(parser.parse_args()))
