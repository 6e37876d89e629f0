"""Small gears and helpers shared by the runtime, memory-wire and activation tests.

The gears are real Gear subclasses driven by the real Runtime over real memory wires; only
their behaviour is made controllable (gates, failures, a shared event log).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Mapping

from fluxmix.gears.base import Gear, GearContext, Port
from fluxmix.gears.catalog import Catalog
from fluxmix.message import Message
from fluxmix.scenario import Endpoint, GearSpec, Scenario, WireSpec

# Everything that happened, in order, across all gears of a test (start/stop/handle/...).
EVENTS: list[tuple[str, ...]] = []
# Handled bodies per sink gear name.
SEEN: dict[str, list[dict[str, Any]]] = {}
# Per-gear asyncio.Event gates a sink waits on before handling (absent: no wait).
GATES: dict[str, asyncio.Event] = {}
# Gear names whose start() fails whatever their config says (to break a known-good scenario).
FAIL_START: set[str] = set()


def reset() -> None:
    EVENTS.clear()
    SEEN.clear()
    GATES.clear()
    FAIL_START.clear()


class Counter(Gear):
    """Source: emits {"seq": n} from its checkpoint on; `count` total, or endless when omitted."""

    type = "t-counter"
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, name: str, config: Mapping[str, Any], ctx: GearContext) -> None:
        super().__init__(name, config, ctx)
        self.count: int | None = config.get("count")
        self.checkpoint_every: int = config.get("checkpoint_every", 10)
        self.fail_after: int | None = config.get("fail_after")  # raise once after this many emits
        self.next_seq = 1
        self.runs = 0

    async def start(self) -> None:
        EVENTS.append(("start", self.name))
        if self.config.get("fail_start"):
            raise RuntimeError("refusing to start")

    async def run(self) -> None:
        self.runs += 1
        EVENTS.append(("run", self.name))
        saved = await self.ctx.load_checkpoint()
        if saved is not None:
            self.next_seq = int(saved)
        try:
            while not self.ctx.stopping.is_set():
                if self.count is not None and self.next_seq > self.count:
                    return
                if self.fail_after is not None and self.next_seq > self.fail_after and self.runs == 1:
                    raise RuntimeError("source crashed")
                await self.ctx.emit("out", {"seq": self.next_seq}, position=self.next_seq)
                self.next_seq += 1
                if self.next_seq % self.checkpoint_every == 0:
                    await self.ctx.save_checkpoint(self.next_seq)
                await asyncio.sleep(0)
        finally:
            await self.ctx.save_checkpoint(self.next_seq)

    async def stop(self) -> None:
        EVENTS.append(("stop", self.name))


class Pass(Gear):
    """in -> out unchanged; `fail_seq` makes handling of that seq raise every time."""

    type = "t-pass"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def start(self) -> None:
        EVENTS.append(("start", self.name))

    async def handle(self, port: str, message: Message) -> None:
        fail = self.config.get("fail_seq")
        if fail is not None and message.body.get("seq") in (fail if isinstance(fail, list) else [fail]):
            raise ValueError(f"cannot pass seq {message.body.get('seq')}")
        await self.ctx.emit("out", message.body)

    async def stop(self) -> None:
        EVENTS.append(("stop", self.name))


class Collect(Gear):
    """Sink: records bodies (and headers) in SEEN[name]; waits on GATES[name] when set;
    `fail_times` makes each message fail that many times before succeeding; `delay` sleeps."""

    type = "t-collect"
    inputs = (Port("in", required=True), Port("other"))
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, name: str, config: Mapping[str, Any], ctx: GearContext) -> None:
        super().__init__(name, config, ctx)
        self.attempts: dict[str, int] = {}
        self.active = 0
        self.max_active = 0
        SEEN.setdefault(name, [])

    async def start(self) -> None:
        EVENTS.append(("start", self.name))
        if self.config.get("fail_start") or self.name in FAIL_START:
            raise RuntimeError("cannot open the thing")

    async def handle(self, port: str, message: Message) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            gate = GATES.get(self.name)
            if gate is not None:
                await gate.wait()
            if self.config.get("delay"):
                await asyncio.sleep(self.config["delay"])
            n = self.attempts.get(message.id, 0) + 1
            self.attempts[message.id] = n
            if n <= self.config.get("fail_times", 0):
                raise RuntimeError(f"attempt {n} failed")
            SEEN[self.name].append({**message.body, "_port": port, "_headers": dict(message.headers),
                                    "_id": message.id})
        finally:
            self.active -= 1

    async def stop(self) -> None:
        EVENTS.append(("stop", self.name))


class Broken(Gear):
    """A gear whose constructor refuses its config (a build failure)."""

    type = "t-broken"
    inputs = (Port("in"),)
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, name: str, config: Mapping[str, Any], ctx: GearContext) -> None:
        raise ValueError("bad config for broken")


def catalog() -> Catalog:
    return Catalog({g.type: g for g in (Counter, Pass, Collect, Broken)})


def scenario(name: str, gears: list[tuple[str, str, dict[str, Any]]], wires: list[tuple[str, str] | tuple[str, str, dict[str, Any]]]) -> Scenario:
    """Build a Scenario from compact tuples: gears (name, type, config), wires (from, to[, options])."""
    wire_specs = []
    for w in wires:
        src, dst = w[0], w[1]
        opts = dict(w[2]) if len(w) > 2 else {}  # type: ignore[misc]
        transport = opts.pop("transport", "memory")
        s_gear, s_port = src.split(".")
        d_gear, d_port = dst.split(".")
        wire_specs.append(WireSpec(Endpoint(s_gear, s_port), Endpoint(d_gear, d_port), transport, opts))
    return Scenario(name=name, gears=tuple(GearSpec(n, t, c) for n, t, c in gears), wires=tuple(wire_specs))


