"""What the fluxmix-side benchmarks run: a counting sink gear, scenario texts, and a runtime
driven in-process (no files, no CLI: the figure is the runtime's, not the disk's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar

import yaml

from fluxmix.gears.base import Gear, Port
from fluxmix.message import Message
from fluxmix.runtime import MemoryCheckpoints

from bench.baselines import BODY_BYTES, make_body

SINK_TYPE = "bench-sink"


class Recorder:
    """What the sink saw. Module-global because the runtime instantiates the sink itself,
    and a reload instantiates a new one: the recorder outlives activations."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, target: int, *, latencies: bool = False, arrivals: bool = False) -> None:
        self.target = target
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] | None = [] if latencies else None
        self.arrivals: list[float] | None = [] if arrivals else None
        self.ids: set[str] = set()
        self.duplicates = 0
        self.done = asyncio.Event()

    def take(self, message: Message) -> None:
        now = time.perf_counter()
        self.count += 1
        if self.count == 1:
            self.first = now
        self.last = now
        if self.latencies is not None:
            self.latencies.append(time.time() - message.ts)
        if self.arrivals is not None:
            self.arrivals.append(now)
            # exactly-once is checked where it is cheap enough not to distort the figure
            if message.id in self.ids:
                self.duplicates += 1
            self.ids.add(message.id)
        if self.count == self.target:
            self.done.set()

    def rate(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.last > self.first else float("nan")


RECORDER = Recorder()


class BenchSink(Gear):
    """Counts what reaches it; the cheapest possible downstream gear."""

    type: ClassVar[str] = SINK_TYPE
    description: ClassVar[str] = "benchmark sink: counts messages"
    inputs: ClassVar[tuple[Port, ...]] = (Port("in", "anything", required=True),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}

    async def handle(self, port: str, message: Message) -> None:
        RECORDER.take(message)


def bench_catalog() -> Any:
    from fluxmix.gears.catalog import Catalog

    cat = Catalog.default()
    cat.register(SINK_TYPE, BenchSink, origin="bench")
    return cat


# ---------------------------------------------------------------- scenario texts


def generate_config(*, rate: float | None = None, count: int | None = None) -> dict[str, Any]:
    """Config of the built-in `generate` gear producing ~BODY_BYTES bodies, as fast as it can
    unless `rate` (msg/s) is given."""
    cfg: dict[str, Any] = {"body": {"data": make_body()["data"]}}
    if rate is not None:
        cfg["rate"] = rate
    if count is not None:
        cfg["count"] = count
    return cfg


def relay_config(index: int) -> dict[str, Any]:
    """Config of a pass-through `map` gear (the cheapest built-in relay)."""
    return {"set": {f"hop{index}": index}}


def chain_scenario(
    name: str,
    gears: int,
    transport: str,
    *,
    rate: float | None = None,
    count: int | None = None,
    description: str | None = None,
    queue_size: int | None = None,
) -> bytes:
    """generate -> (gears - 2) x map -> bench-sink, joined by `gears - 1` wires."""
    specs: list[dict[str, Any]] = [{"name": "source", "type": "generate", "config": generate_config(rate=rate, count=count)}]
    specs += [{"name": f"relay{i}", "type": "map", "config": relay_config(i)} for i in range(1, gears - 1)]
    specs.append({"name": "sink", "type": SINK_TYPE})
    wires = []
    for a, b in zip(specs, specs[1:]):
        wire: dict[str, Any] = {"from": f"{a['name']}.out", "to": f"{b['name']}.in", "transport": transport}
        if queue_size is not None and transport == "memory":
            wire["queue_size"] = queue_size
        wires.append(wire)
    doc: dict[str, Any] = {"name": name}
    if description:
        doc["description"] = description
    doc["gears"] = specs
    doc["wires"] = wires
    return yaml.safe_dump(doc, sort_keys=False).encode()


def parse(data: bytes, catalog: Any, source: str = "<bench>") -> tuple[Any, str]:
    from fluxmix.loading import parse_scenario

    return parse_scenario(data, source, catalog=catalog), hashlib.sha256(data).hexdigest()


@contextlib.asynccontextmanager
async def running_scenario(
    data: bytes, catalog: Any, *, nats_url: str | None = None, home: Path | None = None
) -> AsyncIterator[Any]:
    """Build and start one Runtime for the scenario; stop it (draining) and close its brokers
    on the way out."""
    from fluxmix.runtime import Runtime
    from fluxmix.transports.registry import Brokers, NatsSettings

    scenario, digest = parse(data, catalog)
    with tempfile.TemporaryDirectory(prefix="fluxmix-bench-home-") as tmp:
        brokers = Brokers(home or Path(tmp), NatsSettings(servers=[nats_url] if nats_url else []))
        try:
            by_kind = await brokers.for_scenario(scenario)
            runtime = Runtime(scenario, digest, catalog=catalog, brokers=by_kind, checkpoints=MemoryCheckpoints())
            await runtime.build()
            await runtime.start()
            try:
                yield runtime
            finally:
                await runtime.stop(timeout=30)
        finally:
            await brokers.close()


async def seconds_until_written(data: bytes, catalog: Any, want: int) -> float:
    """Memory wires only: build the scenario, then time start -> its `sink` gear has written
    `want` lines (building is not part of the figure); stop it afterwards."""
    from fluxmix.runtime import Runtime
    from fluxmix.transports.memory import MemoryBroker

    scenario, digest = parse(data, catalog)
    runtime = Runtime(scenario, digest, catalog=catalog, brokers={"memory": MemoryBroker()},
                      checkpoints=MemoryCheckpoints())
    await runtime.build()
    sink = runtime.gear("sink")
    t0 = time.perf_counter()
    await runtime.start()
    while getattr(sink, "written", 0) < want:
        await asyncio.sleep(0.002)
    t1 = time.perf_counter()
    await runtime.stop()
    return t1 - t0


__all__ = [
    "BODY_BYTES",
    "RECORDER",
    "BenchSink",
    "bench_catalog",
    "chain_scenario",
    "generate_config",
    "running_scenario",
    "seconds_until_written",
]
