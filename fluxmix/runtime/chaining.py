"""Operator chaining: which wires hand batches to their consumer in the sender's task.

A memory wire that joins one producer port to one consumer (no fan-out on the port, no other
input on the consumer) can skip its queue: when its consumer is idle, a batch the producer
sends is handled right there, as Flink and bytewax run chained operators (no queue hop, no
task switch; the sender waits until it is handled, which is backpressure by construction).
The gears stay separate runners with their own counters, retries and lifecycle, so a partial
reload restarts exactly what it restarted before; only where a batch is handled changes.

Only a built-in consumer is run in another gear's task: a plugin's `handle` may block or keep
its own tasks, and would then hold up its producer in ways its author could not foresee. The
`python` gear runs user code, so it is not chained either. A wire opts out with `chain: false`.
The runtime decides after every change of the wiring (build, each partial reload).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol

from fluxmix.gears.base import ERROR_PORT
from fluxmix.runtime.context import Outputs
from fluxmix.scenario import GearSpec
from fluxmix.transports.base import Wire

# Built-in gears whose handle runs someone's code: never run inside another gear's task.
USER_CODE_TYPES = frozenset({"python"})


class ChainEnd(Protocol):
    """A wire's two ends as chaining sees them (runner.GearRunner)."""

    spec: GearSpec
    outputs: Outputs
    inputs: list[tuple[str, Wire]]


def may_chain(wire: Wire, source: ChainEnd, target: ChainEnd, origins: Mapping[str, str]) -> bool:
    """True when `wire` may hand its batches to its consumer in the sender's task."""
    spec = wire.spec
    if not type(wire).chainable or spec.options.get("chain", True) is False:
        return False
    if spec.source.port == ERROR_PORT:  # dead letters go out from a retry path: keep them queued
        return False
    if len(source.outputs.get(spec.source.port)) != 1 or len(target.inputs) != 1:
        return False  # fan-out or fan-in: each consumer keeps its own task
    return runs_inline(target.spec.type, origins)


def runs_inline(kind: str, origins: Mapping[str, str]) -> bool:
    """A gear of type `kind` may be handed batches in its producer's task: a built-in that
    runs no user code."""
    return origins.get(kind) == "built-in" and kind not in USER_CODE_TYPES


def chain_wires(wires: Iterable[Wire], runners: Mapping[str, ChainEnd], origins: Mapping[str, str]) -> None:
    """Set `chained` on every wire from the current wiring (a wire no longer eligible stops
    chaining at its next send; what it queued meanwhile its consumer's task handles)."""
    for wire in wires:
        source, target = runners.get(wire.spec.source.gear), runners.get(wire.spec.target.gear)
        chained = source is not None and target is not None and may_chain(wire, source, target, origins)
        if type(wire).chainable or chained:
            wire.chained = chained
