"""The gear contract: what a processing unit declares and how the runtime drives it.

A gear declares its ports and a JSON Schema for its config, so a scenario is validated before
anything runs. The runtime then calls `start()`, `handle_batch(port, messages)` with what an
input wire has queued (one call at a time per gear; the default calls `handle(port, message)`
for each), `flush()` before what it handled is acknowledged, and `stop()`. Message bodies are
read-only (fluxmix.message.FrozenDict): a fan-out shares one body, so a gear builds a new dict to
change it. A source (a gear with no inputs) overrides
`run()`, which loops until `ctx.stopping` is set. Gears never see transports: they `emit()`
(or `emit_many()` several bodies at once) through their context and the runtime fans the message out to every wire on that port.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol, Sequence

from fluxmix.message import Message

ERROR_PORT = "error"


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    description: str = ""
    required: bool = False  # inputs only: validation refuses a scenario that leaves it unwired


class GearContext(Protocol):
    """What the runtime gives a gear. Implemented by the mixer's runtime and by test harnesses."""

    scenario_name: str
    scenario_hash: str
    gear_name: str
    log: logging.Logger
    stopping: asyncio.Event  # set when the gear must stop producing (sources check it)

    async def emit(
        self,
        port: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        position: int | str | None = None,
    ) -> None:
        """Send `body` on output `port` to every wire connected to it; waits under backpressure.

        A source passes `position` (e.g. its seq) so the message id is deterministic across
        restarts. Inside `handle()` ids derive from the input message automatically.
        Emitting on an unwired port is a no-op.
        """
        ...

    def is_wired(self, port: str) -> bool: ...
    async def emit_each(self, port: str, outputs: Sequence[tuple[Message, Mapping[str, Any]]]) -> None:
        """Emit each `(message, body)` of `outputs` on `port`, in order, as `message` would with
        `emit(port, body, headers=message.headers)` while in hand: its id derives from that
        message (continuing its count on `port`). For a `handle_batch` that computes a batch's
        outputs first and emits them at once (map, filter). Each message must be one of the
        batch at or before the message in hand, in the batch's order (GearError otherwise).
        """
        ...

    async def emit_many(
        self,
        port: str,
        bodies: Sequence[Mapping[str, Any]],
        *,
        headers: Mapping[str, str] | None = None,
        positions: Sequence[int | str] | None = None,
    ) -> int:
        """`emit` each of `bodies` on `port`, in order, handed to each wire as one batch: what
        a source producing many messages at once uses instead of one emit per message.

        `positions` (sources): one per body, as `emit`'s `position`. Without them, inside
        `handle()` the ids derive from the input message as successive emits' would. All bodies
        are checked first: one that cannot be carried fails the call with nothing emitted.
        Returns how many bodies were emitted, in order: all of them on a real wire; a test
        harness stopping a source after N messages (`stop_after`) may return fewer, and the
        source must continue from there.
        """
        ...


    async def load_checkpoint(self) -> Any | None:
        """The value last saved by this gear (keyed by scenario name + gear name), or None."""
        ...

    async def save_checkpoint(self, value: Any) -> None:
        """Persist a source's position after everything emitted before it is safely on its wires."""
        ...


class Gear:
    """Base class of every gear type. Subclasses set the ClassVars and override what they need."""

    type: ClassVar[str]
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = ()
    config_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}

    def __init__(self, name: str, config: Mapping[str, Any], ctx: GearContext) -> None:
        self.name = name
        self.config = dict(config)
        self.ctx = ctx

    # ---- declarations (classmethods: used by validation without instantiating) ----

    @classmethod
    def input_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        return cls.inputs

    @classmethod
    def output_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        """Declared outputs, plus the implicit `error` port of every gear that handles input.

        Gears whose outputs depend on config (e.g. `route`) override this.
        """
        outs = cls.outputs
        if cls.input_ports(config) and all(p.name != ERROR_PORT for p in outs):
            outs = outs + (Port(ERROR_PORT, "messages that kept failing"),)
        return outs

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Semantic checks beyond the JSON Schema (e.g. an expression that does not parse).

        Returns (path relative to `config`, reason) pairs; the schema has already passed.
        """
        return []

    @classmethod
    def is_source(cls) -> bool:
        return cls.run is not Gear.run

    # ---- lifecycle ----

    async def start(self) -> None:
        """Acquire resources (open files, connect). Raising here fails the activation."""

    async def handle(self, port: str, message: Message) -> None:
        """Process one message from input `port`. Raising counts as a failure of that message.

        `message.body` is read-only (changing it raises ReadOnlyBodyError): emit a new dict,
        e.g. `{**message.body, "total": 1}`. A gear that only implements `handle_batch` gets
        single messages (retries, durable wires) through it."""
        if type(self).handle_batch is not Gear.handle_batch:
            await self.handle_batch(port, (message,))
            return
        raise NotImplementedError(f"gear type {self.type!r} has inputs but does not handle messages")

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        """Process messages from input `port`, in order; the default calls `handle` for each.

        Override it to save per-message work. Iterate `messages` once, in order, and emit as
        you go: the message the iteration last produced is the one in hand. What you emit
        derives its id from it, and raising fails it alone: those before it count as handled,
        it is retried (through `handle`) and dead-lettered on its own, and those after it are
        handed over again. So never raise for a message whose effects are already done.
        """
        for message in messages:
            await self.handle(port, message)

    async def flush(self) -> None:
        """Make permanent what handle() has done so far.

        The runtime calls it after handling and before a message is acknowledged (with the
        wire's flush of what the gear emitted), so a gear that buffers or keeps side records
        (file-out's ack log) commits here: everything handled before the call may be acked once
        it returns, and what was handled after the last call may come again after a crash.
        Called from the task that handled the messages; may be called with nothing new.
        """

    def flushes(self) -> bool:
        """True when flush() does something: the runtime then also calls it after every message
        or batch from a memory wire (nothing redelivers those, so each is final once handled)."""
        return type(self).flush is not Gear.flush

    async def run(self) -> None:
        """Sources only: produce until `self.ctx.stopping` is set, then return."""

    async def wait_for_stop(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds, waking as soon as the gear must stop: for sources that
        pace or poll, so a stop or reload never waits out a whole interval."""
        try:
            await asyncio.wait_for(self.ctx.stopping.wait(), timeout=timeout)
        except TimeoutError:
            pass

    async def stop(self) -> None:
        """Release resources. Called after inputs are drained (or run() returned)."""
