"""The wires of a running scenario and who they connect; changeable while the gears run.

The runtime's only place that asks brokers for wires. `create()` prepares and instantiates the
wires of some specs (all of them at build, the added or changed ones in a partial reload) without
connecting them; `connect()` plugs a wire into its two runners (the upstream's fan-out, the
downstream's inputs) and points the wire's refusals at the upstream runner. Because a runner
reads its fan-out through its `Outputs` on every emit, connecting or disconnecting a wire takes
effect on a running gear at once.
"""

from __future__ import annotations

import functools
import logging
from typing import Awaitable, Iterable, Mapping, Protocol

from fluxmix.errors import ActivationError, FluxmixError
from fluxmix.message import Message
from fluxmix.runtime.context import Outputs
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.transports.base import Broker, Wire

log = logging.getLogger("fluxmix.runtime")


class WiredGear(Protocol):
    """The two ends of a wire, as the wiring sees them (runner.GearRunner)."""

    outputs: Outputs
    inputs: list[tuple[str, Wire]]

    def refused(self, port: str, message: Message, exc: BaseException) -> Awaitable[bool]: ...


class Wiring:
    """Wires by key (`a.out->b.in`), created through the brokers of their transports."""

    def __init__(self, brokers: Mapping[str, Broker]) -> None:
        self.brokers = brokers
        self.wires: dict[str, Wire] = {}

    async def create(self, scenario: Scenario, scenario_hash: str, specs: Iterable[WireSpec]) -> dict[str, Wire]:
        """New wires for `specs` (not yet connected, not yet in `wires`). Raises ActivationError
        when a transport cannot prepare them; nothing created is left open then."""
        specs = list(specs)
        by_kind: dict[str, list[WireSpec]] = {}
        for spec in specs:
            by_kind.setdefault(spec.transport, []).append(spec)
        for kind, kind_specs in sorted(by_kind.items()):
            broker = self.brokers.get(kind)
            if broker is None:
                raise ActivationError(f"no broker for transport {kind!r}")
            try:
                await broker.prepare(scenario, scenario_hash, kind_specs)
            except FluxmixError:
                raise
            except Exception as exc:
                raise ActivationError(f"transport {kind!r}: preparing wires failed: {exc}") from exc
        created: dict[str, Wire] = {}
        try:
            for spec in specs:
                try:
                    created[spec.key] = self.brokers[spec.transport].wire(scenario, scenario_hash, spec)
                except FluxmixError:
                    raise
                except Exception as exc:
                    raise ActivationError(f"wire {spec.key}: cannot be created: {exc}") from exc
        except BaseException:
            await close_all(created.values())
            raise
        return created

    def connect(self, wire: Wire, source: "WiredGear", target: "WiredGear") -> None:
        """Make `wire` the live wire between `source` and `target` (replacing one of the same key)."""
        spec = wire.spec
        old = self.wires.get(spec.key)
        if old is not None and old is not wire:
            self.disconnect(old, source, target)
        self.wires[spec.key] = wire
        self.attach(wire, source, target)

    @staticmethod
    def attach(wire: Wire, source: "WiredGear", target: "WiredGear") -> None:
        """Plug an existing wire into (new) runners: a restarted gear takes over the wires it kept."""
        spec = wire.spec
        wire.on_refused = functools.partial(source.refused, spec.source.port)
        if wire not in source.outputs.get(spec.source.port):
            source.outputs.add(spec.source.port, wire)
        if all(w is not wire for _p, w in target.inputs):
            target.inputs.append((spec.target.port, wire))

    def disconnect(self, wire: Wire, source: "WiredGear | None", target: "WiredGear | None") -> None:
        """Take `wire` out of the fan-out and inputs of its runners and out of `wires`."""
        spec = wire.spec
        if self.wires.get(spec.key) is wire:
            del self.wires[spec.key]
        if source is not None:
            source.outputs.set(spec.source.port, [w for w in source.outputs.get(spec.source.port) if w is not wire])
        if target is not None:
            target.inputs = [(p, w) for p, w in target.inputs if w is not wire]

    async def close(self) -> None:
        await close_all(self.wires.values())


async def close_all(wires: Iterable[Wire]) -> None:
    for wire in list(wires):
        try:
            await wire.close()
        except Exception as exc:
            log.error("wire %s: close failed: %s", wire.spec.key, exc, extra={"wire": wire.spec.key})
