"""A partial reload: swap a running runtime to a new version of its scenario, restarting only
what the change touches (the shape of Vector's topology reload: diff -> shutdown the diff ->
build -> connect the diff -> spawn the diff; a failure flips the diff back).

The affected set is every added, removed or changed gear plus both ends of every added, removed
or changed wire. Everything else keeps running: same instance, counters, in-flight messages,
source position. A wire kept between a kept gear and a restarted one keeps its queue (memory) or
its durable consumer (standard): the old instance's consumer is detached after the message in
hand and the new instance consumes what is left. A removed or changed memory wire is drained
into its old consumer first (its upstream is affected too, so it stopped before).

    plan_reload(old, new)          what restarts and why (no side effects)
    prepare(runtime, new, plan)    build the new gears and wires; nothing running is touched
    apply(runtime, prepared)       stop the affected gears, connect, start the new ones; on a
                                   failure restore the previous gears (fresh instances of the
                                   old specs, on the same wires) and raise ReloadRolledBack
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from fluxmix.diff import ScenarioDiff, diff_scenarios
from fluxmix.errors import ActivationError, FluxmixError
from fluxmix.runtime.core import Runtime, topological_order
from fluxmix.runtime.runner import GearRunner, InputStop, detach_wire
from fluxmix.runtime.wiring import close_all
from fluxmix.scenario import Scenario
from fluxmix.transports.base import Wire

log = logging.getLogger("fluxmix.runtime")


class ReloadRolledBack(ActivationError):
    """The new gears did not start; the previous ones run again (the runtime is as before)."""


class ReloadFailed(ActivationError):
    """The new gears did not start and the previous ones could not be restored: stop the runtime."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a partial reload restarts. `full` says it cannot be partial (and `reasons` why)."""

    diff: ScenarioDiff
    affected: frozenset[str]  # gear names stopped (old) and/or started (new)
    gears_added: tuple[str, ...]
    gears_removed: tuple[str, ...]
    gears_restarted: tuple[str, ...]  # in both scenarios and affected
    gears_kept: tuple[str, ...]
    wires_added: tuple[str, ...]
    wires_removed: tuple[str, ...]
    wires_changed: tuple[str, ...]
    wires_reconsumed: tuple[str, ...]  # kept wires whose consumer restarts (downstream affected)
    wires_kept: tuple[str, ...]  # kept wires whose both ends keep running
    watch_sinks: frozenset[str]  # sinks of the new scenario downstream of (or in) the affected set
    reasons: tuple[str, ...] = ()
    full: bool = False

    @property
    def empty(self) -> bool:
        return not self.affected and not self.full

    def summary(self, total: int) -> dict[str, Any]:
        """JSON-ready, for the journal: what restarted, what was kept, and why more restarted."""
        return {
            "mode": "full" if self.full else "partial",
            "gears_total": total,
            "gears_restarted": sorted(self.gears_restarted),
            "gears_added": list(self.gears_added),
            "gears_removed": list(self.gears_removed),
            "gears_kept": sorted(self.gears_kept),
            "wires_added": list(self.wires_added),
            "wires_removed": list(self.wires_removed),
            "wires_changed": list(self.wires_changed),
            "wires_reconsumed": list(self.wires_reconsumed),
            "wires_kept": list(self.wires_kept),
            "reasons": list(self.reasons),
        }


def plan_reload(old: Scenario, new: Scenario) -> ReloadPlan:
    """The affected set of going from `old` to `new` (see the module doc)."""
    diff = diff_scenarios(old, new)
    reasons: list[str] = []
    full = False
    if old.name != new.name:
        full = True
        reasons.append(f"the scenario was renamed ({old.name!r} -> {new.name!r}): checkpoints, global state and "
                       "standard wires are keyed by name, so every gear restarts")
    affected: set[str] = {g.name for g in diff.added_gears} | {g.name for g in diff.removed_gears}
    affected |= {c.name for c in diff.changed_gears}
    for spec in (*diff.added_wires, *diff.removed_wires):
        affected |= {spec.source.gear, spec.target.gear}
    for change in diff.changed_wires:
        source, target = change.key.split("->", 1)
        affected |= {source.rsplit(".", 1)[0], target.rsplit(".", 1)[0]}
        if change.old_transport != change.new_transport:
            reasons.append(f"wire {change.key} moved from {change.old_transport} to {change.new_transport}: "
                           "both its ends restart on the new wire")
    old_names = [g.name for g in old.gears]
    new_names = {g.name for g in new.gears}
    if full:
        affected = set(old_names) | new_names
    changed_keys = {c.key for c in diff.changed_wires}
    removed_keys = {w.key for w in diff.removed_wires}
    kept_wires = [w for w in new.wires if w.key not in changed_keys and w.key not in {a.key for a in diff.added_wires}]
    # Sinks to watch for the reload gap: reachable from the affected gears in the new graph.
    successors: dict[str, set[str]] = {}
    for w in new.wires:
        successors.setdefault(w.source.gear, set()).add(w.target.gear)
    reach, todo = set(), [n for n in affected if n in new_names]
    while todo:
        name = todo.pop()
        if name not in reach:
            reach.add(name)
            todo.extend(successors.get(name, ()))
    sinks = {n for n in reach if not any(w.source.gear == n and w.source.port != "error" for w in new.wires)}
    return ReloadPlan(
        diff=diff,
        affected=frozenset(affected),
        gears_added=tuple(g.name for g in new.gears if g.name not in old_names),
        gears_removed=tuple(n for n in old_names if n not in new_names),
        gears_restarted=tuple(n for n in old_names if n in new_names and n in affected),
        gears_kept=tuple(n for n in old_names if n in new_names and n not in affected),
        wires_added=tuple(w.key for w in diff.added_wires),
        wires_removed=tuple(sorted(removed_keys)),
        wires_changed=tuple(sorted(changed_keys)),
        wires_reconsumed=tuple(w.key for w in kept_wires if w.target.gear in affected and not full),
        wires_kept=tuple(w.key for w in kept_wires if not (affected & {w.source.gear, w.target.gear})),
        watch_sinks=frozenset(sinks),
        reasons=tuple(reasons),
        full=full,
    )


@dataclass(slots=True)
class PreparedReload:
    """New runners and wires, built and not running; `apply` swaps them in."""

    scenario: Scenario
    scenario_hash: str
    plan: ReloadPlan
    runners: dict[str, GearRunner]
    wires: dict[str, Wire]  # added and changed wires (new objects)
    retired: dict[str, Wire] = field(default_factory=dict)  # removed and changed wires (old objects)


def _succession(before: GearRunner | None, gear_type: str) -> dict[str, Any]:
    """A restarted gear's instance number and the totals it goes on from. A gear whose type
    changed starts its totals anew (they are counted per type; the old ones are retired)."""
    if before is None:
        return {"generation": 1, "carried": None}
    same = before.spec.type == gear_type
    return {"generation": before.generation + 1, "carried": before.totals if same else None}


async def prepare(runtime: Runtime, scenario: Scenario, scenario_hash: str, plan: ReloadPlan) -> PreparedReload:
    """Build the affected gears of `scenario` and its added/changed wires; raises GearError or
    ActivationError and leaves the running runtime untouched."""
    topological_order(scenario)  # refuses a cycle before anything is built
    runners: dict[str, GearRunner] = {}
    for spec in scenario.gears:
        if spec.name in plan.affected:
            before = runtime.runners.get(spec.name)
            runners[spec.name] = runtime.new_runner(spec, **_succession(before, spec.type))
            await asyncio.sleep(0)  # a gear's constructor may compile a lot: the running gears go first
    for runner in runners.values():
        assert runner.ctx is not None
        runner.ctx.scenario_hash = scenario_hash
    fresh = {w.key for w in plan.diff.added_wires} | set(plan.wires_changed)
    specs = [w for w in scenario.wires if w.key in fresh]
    wires = await runtime.wiring.create(scenario, scenario_hash, specs)
    for key in plan.wires_reconsumed:
        wire = runtime.wires.get(key)
        if wire is not None and type(wire).detach is Wire.detach:
            await close_all(wires.values())
            raise ActivationError(f"wire {key}: its transport cannot hand its consumer over; reload with --reload full")
    return PreparedReload(scenario, scenario_hash, plan, runners, wires)


async def apply(runtime: Runtime, prepared: PreparedReload, *, on_stopped: Callable[[], None] | None = None,
                stop_timeout: float | None = None) -> bool:
    """Stop the affected gears, connect the new ones and start them; everything else runs on.

    Returns True when stopping the affected gears did not finish within `stop_timeout` (NATS
    away, a gear stuck in its code) and what they still had in hand was abandoned, as a full stop
    does past its timeout. Raises ReloadRolledBack (the previous gears run again, on the same
    wires) or ReloadFailed (they could not be restored either: the caller stops the runtime).
    `on_stopped` is called once the affected gears stopped, before the new ones start."""
    plan = prepared.plan
    old_scenario, old_hash = runtime.scenario, runtime.scenario_hash
    old_runners = [r for r in runtime.order if r.name in plan.affected]
    gone = set(plan.wires_removed) | set(plan.wires_changed)
    runtime.reloading = True
    try:
        timed_out = await _stop_within(runtime, old_runners, gone, stop_timeout)
        if on_stopped is not None:
            on_stopped()
        prepared.retired = {key: runtime.wires[key] for key in gone if key in runtime.wires}
        _swap(runtime, old_runners, list(prepared.runners.values()), prepared.retired, prepared.wires,
              prepared.scenario, prepared.scenario_hash)
        started = [runtime.runners[name] for name in topological_order(prepared.scenario) if name in prepared.runners]
        try:
            await runtime.in_context(runtime.start_runners(started))
        except Exception as exc:
            await _restore(runtime, prepared, started, old_scenario, old_hash, old_runners, exc, stop_timeout)
        await close_all(prepared.retired.values())
    finally:
        runtime.reloading = False
    return timed_out


async def _stop_within(runtime: Runtime, runners: list[GearRunner], gone: set[str], timeout: float | None) -> bool:
    """_stop, bounded: past `timeout` the runners' tasks are cancelled and their gears stopped
    without waiting for what they had in hand (True)."""
    try:
        async with asyncio.timeout(timeout):
            await _stop(runtime, runners, gone)
        return False
    except TimeoutError:
        log.error("scenario %s: stopping %s did not finish within %gs; abandoning what they had in hand",
                  runtime.scenario.name, ", ".join(r.name for r in runners), timeout,
                  extra={"scenario": runtime.scenario.name})
        for runner in runners:
            await runner.cancel_tasks()
            await runner.force_stop()
        return True


async def _stop(runtime: Runtime, runners: list[GearRunner], gone: set[str]) -> None:
    """Stop `runners` (topological order) the way a full stop would, except that a kept input
    wire is detached (its upstream keeps sending) instead of drained."""
    for runner in runners:
        if runner.run_task is not None and runner.ctx is not None:
            runner.ctx.stopping.set()
    for runner in runners:
        await runner.stop_source()
    # Durable consumers all stop at once (what they have not taken stays in the stream).
    await asyncio.gather(*(detach_wire(w) for r in runners for _p, w in r.inputs if w.durable))
    for runner in runners:
        how: dict[str, InputStop] = {
            w.spec.key: "drain" if w.spec.key in gone and not w.durable else "detach" for _p, w in runner.inputs
        }
        await runner.stop(how)


def _swap(runtime: Runtime, old: list[GearRunner], new: list[GearRunner], retired: dict[str, Wire],
          fresh: dict[str, Wire], scenario: Scenario, scenario_hash: str, *, undo: bool = False) -> None:
    """Take `old` runners and `retired` wires out, put `new` runners and `fresh` wires in, and
    plug every kept wire that touches a new runner into it.

    Counters stay monotonic: a replaced wire of the same transport hands its counts to its
    successor (`undo`: the successor already holds them), and what leaves for good (a removed
    gear or wire, or a type or transport change) is kept in `runtime.retired` for /metrics."""
    wiring = runtime.wiring
    for wire in retired.values():
        wiring.disconnect(wire, runtime.runners.get(wire.spec.source.gear), runtime.runners.get(wire.spec.target.gear))
        successor = fresh.get(wire.spec.key)
        if successor is not None and successor.spec.transport == wire.spec.transport:
            _carry_stats(wire, successor, undo=undo)
        else:
            runtime.retire(wires={wire.spec.key: wire.status()})
    successors = {r.name: r for r in new}
    for runner in old:
        del runtime.runners[runner.name]
        successor = successors.get(runner.name)
        if successor is None or successor.spec.type != runner.spec.type:
            runtime.retire(gears={runner.name: runner.status()})
    for runner in new:
        runtime.runners[runner.name] = runner
    runtime.scenario, runtime.scenario_hash = scenario, scenario_hash
    replaced = {r.name for r in new}
    for spec in scenario.wires:
        source, target = runtime.runners[spec.source.gear], runtime.runners[spec.target.gear]
        if spec.key in fresh:
            wiring.connect(fresh[spec.key], source, target)
        elif spec.source.gear in replaced or spec.target.gear in replaced:
            wiring.attach(wiring.wires[spec.key], source, target)
    for runner in runtime.runners.values():
        if runner.ctx is not None:
            runner.ctx.scenario_hash = scenario_hash
    for runner in new:
        runner.note_wiring()
        runner.observer = runtime.sink_observer  # installed after these were built (the reload stopwatch)
    runtime.order = [runtime.runners[name] for name in topological_order(scenario)]
    runtime.chain_wires()


def _carry_stats(old: Wire, new: Wire, *, undo: bool) -> None:
    """In place: a transport's publisher may hold the stats object itself."""
    for name, value in old.stats.as_dict().items():
        setattr(new.stats, name, value if undo else getattr(new.stats, name) + value)


async def _restore(runtime: Runtime, prepared: PreparedReload, started: list[GearRunner], old_scenario: Scenario,
                   old_hash: str, old_runners: list[GearRunner], exc: Exception,
                   stop_timeout: float | None = None) -> NoReturn:
    """The flipped diff: stop the new gears, put fresh instances of the previous ones back on the
    previous wires and start them. Always raises."""
    reason = str(exc) if isinstance(exc, FluxmixError) else f"{type(exc).__name__}: {exc}"
    failed = [r for r in runtime.order if r.name in prepared.runners]
    await _stop_within(runtime, failed, set(prepared.wires), stop_timeout)
    for runner in started:
        await runner.cancel_tasks()
    try:
        restored = []
        for previous in old_runners:
            current = runtime.runners.get(previous.name)
            if current is not None and current.spec.type == previous.spec.type:
                succession = _succession(current, previous.spec.type)
            else:  # the gear was removed, or its type changed: go on from its own last counts
                succession = {"generation": previous.generation + 1, "carried": previous.totals}
            restored.append(runtime.new_runner(previous.spec, **succession))
    except Exception as build_exc:
        raise ReloadFailed(f"{reason}; the previous gears could not be built again: {build_exc}") from exc
    _swap(runtime, failed, restored, dict(prepared.wires), prepared.retired, old_scenario, old_hash, undo=True)
    await close_all(prepared.wires.values())
    names = {r.name for r in restored}
    try:
        await runtime.in_context(runtime.start_runners([r for r in runtime.order if r.name in names]))
    except Exception as start_exc:
        raise ReloadFailed(f"{reason}; the previous gears did not start again: {start_exc}") from exc
    raise ReloadRolledBack(reason) from exc
