"""One activation of one scenario: its runners, its wiring, start and graceful stop of the whole graph.

The runtime is the only place that knows both gears and transports. It keeps the rules that make
a stop or a reload lose nothing:

- start follows the wires backwards (every consumer is listening before anything produces);
- stop runs forwards: sources stop first, then each gear's inputs are drained before the gear
  stops, so whatever was in flight reaches the end of the pipeline;
- a source's checkpoint is saved only after what it emitted is safe on its wires;
- a failing gear is contained: per-message errors are retried by the wire, then dead-lettered
  to the gear's `error` port or counted as dropped; a crashing source is restarted with backoff.

A partial reload (fluxmix.runtime.reload) replaces some runners and wires of a running runtime;
the same object then runs the new scenario, so the gears it kept keep their instance.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from fluxmix.errors import ActivationError, GearError
from fluxmix.gears.base import Gear
from fluxmix.gears.catalog import Catalog
from fluxmix.globals_state import MemoryBackend, ScenarioGlobals, use as use_globals
from fluxmix.runtime.chaining import chain_wires
from fluxmix.runtime.context import CheckpointStore, SourceGuard, detail
from fluxmix.runtime.runner import GearRunner, SinkObserver, drain_wire
from fluxmix.runtime.wiring import Wiring
from fluxmix.scenario import GearSpec, Scenario
from fluxmix.status import GEAR_COUNTER_FIELDS, WIRE_COUNTER_FIELDS, GearCounters, GearStatus, RuntimeStatus, WireStatus
from fluxmix.transports.base import Broker, Wire

log = logging.getLogger("fluxmix.runtime")

# Runtime states: created -> built -> starting -> running -> stopping -> stopped (or failed); a
# partial reload happens while running (`reloading` is True meanwhile). Gear states add "finished":
# a source whose run() returned on its own (e.g. `count` reached); "paused": a source stopped by
# pause_sources() until resume_sources().
# "standby": a source waiting for its fleet lease (another member runs it).
GEAR_STATES = ("built", "starting", "standby", "running", "finished", "paused", "stopping", "stopped", "failed")

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class StopReport:
    drained: int  # deliveries completed on the wires while stopping (one per wire a message crossed)
    timed_out: bool  # True when the stop was cut short and what was left was abandoned


def _add_to(into: dict[str, Any], name: str, status: Any, counters: tuple[str, ...]) -> None:
    kept = into.get(name)
    if kept is None:
        into[name] = status
    else:
        for counter in counters:
            setattr(kept, counter, getattr(kept, counter) + getattr(status, counter))


def topological_order(scenario: Scenario) -> list[str]:
    """Gear names, every gear after all gears that feed it; ties keep declaration order.

    Validation refuses cycles; this check only guards a scenario that bypassed it.
    """
    index = {g.name: i for i, g in enumerate(scenario.gears)}
    successors: dict[str, set[str]] = {name: set() for name in index}
    indegree = dict.fromkeys(index, 0)
    for wire in scenario.wires:
        src, dst = wire.source.gear, wire.target.gear
        if src in index and dst in index and dst not in successors[src]:
            successors[src].add(dst)
            indegree[dst] += 1
    ready = [(index[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for nxt in successors[name]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (index[nxt], nxt))
    if len(order) != len(index):
        stuck = sorted(n for n in index if n not in order)
        raise ActivationError(f"scenario {scenario.name!r}: wires form a cycle through {', '.join(stuck)}")
    return order


class Runtime:
    """One activation of one scenario: built once, started once, stopped once; in between a
    partial reload may replace some of its gears and wires (`fluxmix.runtime.reload`)."""

    def __init__(
        self,
        scenario: Scenario,
        scenario_hash: str,
        *,
        catalog: Catalog,
        brokers: Mapping[str, Broker],
        checkpoints: CheckpointStore,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        globals_: ScenarioGlobals | None = None,
        source_guard: SourceGuard | None = None,
        claims: Any | None = None,
    ) -> None:
        self.scenario = scenario
        if globals_ is None:  # no store (tests, harnesses): the declared initial values, in memory
            globals_ = ScenarioGlobals(scenario.name, MemoryBackend(), scenario.globals)
            globals_.seed(who="initial")
        self.globals = globals_
        self.scenario_hash = scenario_hash
        self.catalog = catalog
        self.brokers = brokers
        self.checkpoints = checkpoints
        self.source_guard = source_guard  # fleet: sources run only where their lease is held
        self.claims = claims  # fleet: sinks claim message ids fleet-wide (fluxmix.fleet.claims)
        self.start_timeout = start_timeout
        self.state = "created"
        self.started_at: float | None = None
        self.ready_seconds: float | None = None  # start() duration
        self.sources_paused = False  # set before start(): the sources start paused (see pause_sources)
        self.reloading = False  # a partial reload is replacing some runners (fluxmix.runtime.reload)
        self.runners: dict[str, GearRunner] = {}
        self.order: list[GearRunner] = []  # topological
        self.wiring = Wiring(brokers)
        self._observer: SinkObserver | None = None
        # Final counters of gears and wires a partial reload took out for good, status-shaped,
        # until the mixer folds them into its retired totals (take_retired): /metrics stays monotonic.
        self.retired = RuntimeStatus(scenario.name, scenario_hash, "retired")
        self._context: contextvars.Context | None = None
        self._released = False  # the wires were closed (stop, or release() after stop(release=False))

    @property
    def wires(self) -> dict[str, Wire]:
        return self.wiring.wires

    # ---- build -------------------------------------------------------------------------

    async def build(self) -> None:
        """Instantiate every gear and create every wire; nothing runs yet.

        Raises GearError (a gear type is unknown or its constructor refused the config) or
        ActivationError (a transport could not prepare the wires). On failure whatever was
        created is closed again, so an abandoned build leaves nothing behind.
        """
        if self.state != "created":
            raise ActivationError(f"runtime of {self.scenario.name!r} is already {self.state}")
        try:
            for spec in self.scenario.gears:
                self.runners[spec.name] = self.new_runner(spec)
            self.order = [self.runners[name] for name in topological_order(self.scenario)]
            for wspec in self.scenario.wires:
                for end in (wspec.source, wspec.target):
                    if end.gear not in self.runners:
                        raise ActivationError(f"wire {wspec.key}: gear {end.gear!r} is not defined")
            created = await self.wiring.create(self.scenario, self.scenario_hash, self.scenario.wires)
            for wspec in self.scenario.wires:
                self.wiring.connect(created[wspec.key], self.runners[wspec.source.gear], self.runners[wspec.target.gear])
            for runner in self.runners.values():
                runner.note_wiring()
            self.chain_wires()
        except BaseException:
            self.state = "failed"
            await self.wiring.close()
            raise
        self.state = "built"

    def chain_wires(self) -> None:
        """Decide again which memory wires run their consumer in the sender's task
        (fluxmix.runtime.chaining); after every change of the wiring."""
        chain_wires(self.wires.values(), self.runners, self.catalog.origins)

    def new_runner(self, spec: GearSpec, *, generation: int = 1, carried: GearCounters | None = None) -> GearRunner:
        """A built (instantiated, not started) runner for `spec`; raises GearError."""
        cls: type[Gear] | None = self.catalog.get(spec.type)
        if cls is None:
            raise GearError(spec.name, f"unknown gear type {spec.type!r}")
        runner = GearRunner(self, spec, cls, generation=generation, carried=carried)
        runner.build()
        runner.observer = self._observer
        return runner

    # ---- start -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start gears backwards along the wires, then let the sources run.

        Every non-source gear starts (and its input wires begin consuming) in reverse
        topological order; then the sources start; only when all started do the sources'
        run() loops begin. Raises GearError naming the first gear that failed; `stop()` then
        cleans up whatever did start.
        """
        if self.state != "built":
            raise ActivationError(f"runtime of {self.scenario.name!r} cannot start: it is {self.state}")
        self.state = "starting"
        t0 = time.monotonic()
        try:
            await self.in_context(self.start_runners(self.order))
        except BaseException:
            self.state = "failed"
            raise
        self.state = "running"
        self.started_at = time.time()
        self.ready_seconds = time.monotonic() - t0

    async def in_context(self, work: Any) -> Any:
        """Run `work` in a task of this runtime's context: every task a gear runs in descends
        from it, so `globals.get` in its expressions reads this scenario's global state,
        whichever runtime started it (a partial reload starts gears later, in the same context)."""
        if self._context is None:
            self._context = contextvars.copy_context()
            self._context.run(use_globals, self.globals)
        return await asyncio.create_task(work, name=f"fluxmix start {self.scenario.name}", context=self._context)

    async def start_runners(self, runners: Iterable[GearRunner]) -> None:
        """Start `runners` (given in topological order) backwards, consumers first, sources last."""
        backwards = list(reversed(list(runners)))
        for runner in [r for r in backwards if not r.is_source] + [r for r in backwards if r.is_source]:
            await runner.start()
            runner.start_consumers()
        for runner in backwards:
            if runner.is_source:
                if self.sources_paused:
                    runner.state = "paused"
                else:
                    runner.run_source()

    # ---- stop --------------------------------------------------------------------------

    async def stop(self, *, timeout: float = DEFAULT_STOP_TIMEOUT, release: bool = True) -> StopReport:
        """Stop sources, then drain and stop every gear in topological order.

        Within `timeout` nothing in flight is lost. Past it, what is left is cancelled and the
        wires closed (a memory wire counts what it still held as dropped): timed_out=True.
        Safe to call in any state, including after a failed build() or start().
        `release=False` leaves the drained wires open for `release()` (a full reload closes the
        old runtime's wires once the new one runs: closing them is not on the reload's gap).
        """
        if self.state in ("stopped", "stopping"):
            return StopReport(0, False)
        self.state = "stopping"
        timed_out = False
        # Counted on the wires rather than from drain()'s return values: consumers keep working
        # while the sources wind down, so much of the draining happens before drain() is called.
        before = {key: wire.stats.received for key, wire in self.wires.items()}
        try:
            async with asyncio.timeout(timeout):
                await self._stop_gracefully()
        except TimeoutError:
            timed_out = True
            log.error("scenario %s: stop did not finish within %gs; abandoning what is left", self.scenario.name,
                      timeout, extra={"scenario": self.scenario.name})
        drained = sum(wire.stats.received - before.get(key, 0) for key, wire in self.wires.items())
        await self._abandon(release=release or timed_out)
        self.state = "stopped"
        return StopReport(drained, timed_out)

    async def release(self) -> None:
        """Close the wires a `stop(release=False)` left open; no-op once they are closed."""
        if not self._released:
            self._released = True
            await self.wiring.close()

    async def _stop_gracefully(self) -> None:
        runs = [r for r in self.order if r.run_task is not None]
        for runner in runs:
            assert runner.ctx is not None
            runner.ctx.stopping.set()
            if runner.state == "running":
                runner.state = "stopping"
        for runner in runs:
            await runner.stop_source()
        # Durable consumers can all stop at once (what they have not taken stays in the stream);
        # drained one by one in topological order, each idle one sat out its fetch timeout and a
        # reload of a scenario with many standard wires took seconds.
        await asyncio.gather(*(drain_wire(wire) for wire in self.wires.values() if wire.durable))
        for runner in self.order:
            await runner.stop()

    async def _abandon(self, *, release: bool = True) -> None:
        """Cancel whatever still runs and release every wire; the normal path finds little left."""
        tasks = [r.run_task for r in self.order if r.run_task is not None and not r.run_task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if release:
            await self.release()
        for runner in self.order:
            await runner.cancel_tasks()
        for runner in self.order:
            await runner.force_stop()

    # ---- pause / resume ----------------------------------------------------------------

    async def pause_sources(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
        """Stop every running source the way a stop does (run() returns, its position is
        checkpointed, its wires flushed) while every other gear keeps consuming, so what is in
        flight drains to the sinks. Returns the sources paused; later-started runtimes of this
        object start paused too. A source whose run() ignores `stopping` is cancelled after
        `timeout`."""
        self.sources_paused = True
        if self.state != "running":
            return []
        runners = [r for r in self.order if r.is_source and r.state not in ("paused", "finished", "stopped")]
        for runner in runners:
            assert runner.ctx is not None
            runner.ctx.stopping.set()
        tasks = [r.run_task for r in runners if r.run_task is not None and not r.run_task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for runner in runners:
            await runner.stop()
            runner.started = False  # stopped once: a later stop() must not stop it again
            runner.state = "paused"
        return [r.name for r in runners]

    async def resume_sources(self) -> list[str]:
        """Let paused sources run again. A source that had run gets a fresh instance, started
        like after a reload, so it continues from its checkpoint (no gear has to support
        run() twice). Raises GearError when a source cannot start again."""
        self.sources_paused = False
        if self.state != "running":
            return []
        runners = [r for r in self.order if r.is_source and r.state == "paused"]
        for runner in runners:
            if runner.run_task is not None:
                try:
                    runner.build()
                except GearError as exc:
                    runner.state = "failed"
                    runner.last_error = f"cannot be built again: {detail(exc, runner.name)}"
                    raise GearError(runner.name, runner.last_error) from exc
                await runner.start()
            runner.run_source()
        return [r.name for r in runners]

    # ---- observers ---------------------------------------------------------------------

    @property
    def sink_observer(self) -> SinkObserver | None:
        return self._observer

    def observe_sinks(self, observer: SinkObserver | None) -> None:
        """Call `observer(runner, time)` for every message handled at a sink, also at sinks a
        partial reload starts later; None removes it."""
        self._observer = observer
        for runner in self.runners.values():
            runner.observer = observer

    def retire(self, *, gears: dict[str, GearStatus] | None = None, wires: dict[str, WireStatus] | None = None) -> None:
        """Remember the final counters of gears/wires that left (summed when one leaves twice)."""
        for name, gear in (gears or {}).items():
            _add_to(self.retired.gears, name, gear, GEAR_COUNTER_FIELDS)
        for key, wire in (wires or {}).items():
            _add_to(self.retired.wires, key, wire, WIRE_COUNTER_FIELDS)

    def take_retired(self) -> RuntimeStatus:
        """What `retire` collected since the last call, for the mixer's retired totals."""
        taken, self.retired = self.retired, RuntimeStatus(self.scenario.name, self.scenario_hash, "retired")
        return taken

    # ---- introspection -----------------------------------------------------------------

    @property
    def gear_names(self) -> list[str]:
        """Gears in topological order (empty before build)."""
        return [r.name for r in self.order]

    def gear(self, name: str) -> Gear:
        """The gear instance (tests and diagnostics)."""
        gear = self.runners[name].gear
        assert gear is not None
        return gear

    @property
    def first_handled_at(self) -> float | None:
        """time.time() of the first message handled at a sink of this runtime."""
        times = [r.first_handled_at for r in self.runners.values() if r.first_handled_at is not None]
        return min(times) if times else None

    @property
    def last_handled_at(self) -> float | None:
        """time.time() of the last message handled at any sink."""
        times = [r.last_handled_at for r in self.runners.values() if r.last_handled_at is not None]
        return max(times) if times else None

    def status(self) -> RuntimeStatus:
        return RuntimeStatus(
            self.scenario.name, self.scenario_hash, self.state,
            started_at=self.started_at,
            first_handled_at=self.first_handled_at,
            last_handled_at=self.last_handled_at,
            gears={r.name: r.status() for r in (self.order or self.runners.values())},
            wires={key: w.status() for key, w in self.wires.items()},
            reloading=self.reloading,
        )
