"""One activation of one scenario: its gears, the wires between them, start and graceful stop.

The runtime is the only place that knows both gears and transports. Gears see a `GearContext`
(emit, checkpoints, a stopping flag); wires see a `Delivery` (handle, dead-letter, flush). The
runtime keeps the rules that make a reload lose nothing:

- start follows the wires backwards (every consumer is listening before anything produces);
- stop runs forwards: sources stop first, then each gear's inputs are drained before the gear
  stops, so whatever was in flight reaches the end of the pipeline;
- a source's checkpoint is saved only after what it emitted is safe on its wires;
- a failing gear is contained: per-message errors are retried by the wire, then dead-lettered
  to the gear's `error` port or counted as dropped; a crashing source is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import logging
import time
import uuid
from asyncio import current_task
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Iterator, Mapping, Protocol, Sequence

from fluxmix.errors import ActivationError, FluxmixError, GearError, TransportError
from fluxmix.gears.base import ERROR_PORT, Gear
from fluxmix.gears.catalog import Catalog
from fluxmix.globals_state import MemoryBackend, ScenarioGlobals, use as use_globals
from fluxmix.message import NO_HEADERS, FrozenDict, Message, derived_id, freeze_body, freeze_headers, source_id
from fluxmix.scenario import GearSpec, Scenario, WireSpec
from fluxmix.status import GearCounters, GearStatus, RuntimeStatus
from fluxmix.transports.base import BatchCursor, Broker, Delivery, Wire

log = logging.getLogger(__name__)

# Runtime states: created -> built -> starting -> running -> stopping -> stopped (or failed).
# Gear states add "finished": a source whose run() returned on its own (e.g. `count` reached).
# "paused": a source stopped by pause_sources() until resume_sources().
GEAR_STATES = ("built", "starting", "running", "finished", "paused", "stopping", "stopped", "failed")

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30.0
# A source whose run() raises is restarted after a pause that doubles up to this bound, so a
# transient failure (a file not there yet, NATS briefly away) heals without a reload and a
# permanent one costs one log line per bound instead of a busy loop.
SOURCE_RESTART_MIN = 0.5
SOURCE_RESTART_MAX = 30.0
SOURCE_HEALTHY_AFTER = 30.0  # a run that lasted this long resets the backoff
# A gear handling a batch emits into a buffer sent to its memory wires when it returns; past
# this many buffered messages they go out at once (bounds memory; backpressure applies there).
BUFFER_MAX = 256


class CheckpointStore(Protocol):
    """Where sources keep their positions (fluxmix.store.Store satisfies it)."""

    def load_checkpoint(self, scenario_name: str, gear: str) -> Any | None: ...

    def save_checkpoint(self, scenario_name: str, gear: str, value: Any) -> None: ...


class MemoryCheckpoints:
    """A CheckpointStore in a dict: for offline runs (`fluxmix scenario test`) and tests, where
    positions must not outlive the run."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}
        self.saves = 0

    def load_checkpoint(self, scenario_name: str, gear: str) -> Any | None:
        return self.values.get((scenario_name, gear))

    def save_checkpoint(self, scenario_name: str, gear: str, value: Any) -> None:
        self.saves += 1
        self.values[(scenario_name, gear)] = value


@dataclass(frozen=True, slots=True)
class StopReport:
    drained: int  # deliveries completed on the wires while stopping (one per wire a message crossed)
    timed_out: bool  # True when the stop was cut short and what was left was abandoned


class _Throttle:
    """Says when to log a repeating event: the first few, then one in `every`, with the count."""

    def __init__(self, first: int = 5, every: int = 100) -> None:
        self.first = first
        self.every = every
        self.count = 0

    def hit(self) -> bool:
        self.count += 1
        return self.count <= self.first or self.count % self.every == 0


async def _send_to_all(wires: list[Wire], msg_id: str, body: Mapping[str, Any], *, gear: str, port: str,
                       scenario_hash: str, headers: Mapping[str, str] | None) -> None:
    """Send one message on every wire of a port, all sharing one read-only body.

    The body is frozen once here (a body already frozen, e.g. a filter passing its input on,
    costs nothing), so no gear can change what another sees and memory wires pass the object
    itself. One wire after the other: a full wire holds the gear back (backpressure)."""
    frozen = freeze_body(body, gear, port)
    hdrs = freeze_headers(headers)
    origin = f"{gear}.{port}"
    ts = time.time()
    for wire in wires:
        await wire.send(Message(msg_id, frozen, origin, scenario_hash, ts, hdrs))


class _Batch(Sequence[Message]):
    """The messages a gear gets in `handle_batch`. Iterating them is how the runtime knows which
    message is in hand: what the gear emits derives its id from it, a failure is its failure,
    and the wire counts the messages not yet taken as still queued (backpressure)."""

    __slots__ = ("_messages", "_slot", "_cursor", "_started", "_handled", "pos")

    def __init__(self, messages: Sequence[Message], slot: "_GearSlot", cursor: BatchCursor) -> None:
        self._messages = messages
        self._slot = slot
        self._cursor = cursor
        self._started = cursor.started  # the wire's count before this batch (a retry resumes mid-way)
        self._handled = slot.counters.handled
        self.pos = 0  # index of the message in hand; len() once the iteration ran past the end

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: Any) -> Any:
        return self._messages[index]

    def __iter__(self) -> Iterator[Message]:
        # Assignments, not increments: a gear that iterates twice still counts each message once.
        slot, cursor, counters = self._slot, self._cursor, self._slot.counters
        started, handled = self._started, self._handled
        for i, message in enumerate(self._messages):
            counters.handled = handled + i  # those before it are done
            self.pos = i
            slot.parent, slot.parent_emitted = message, None
            cursor.started = started + i + 1
            yield message
        self.pos = len(self._messages)

    def finish(self, handled: int) -> None:
        self._slot.counters.handled = self._handled + handled


async def _gear_code(slot: "_GearSlot", what: str, call: Awaitable[Any]) -> Any:
    """Await a gear's own code. Its sys.exit() fails the gear like any error; it never ends the
    mixer (asyncio would re-raise a SystemExit out of the event loop)."""
    try:
        return await call
    except SystemExit as exc:
        raise GearError(slot.name, f"{what} called sys.exit({exc.code!r})") from None


def _detail(exc: BaseException, gear: str) -> str:
    """What went wrong, without repeating the gear name a GearError already carries."""
    if isinstance(exc, GearError) and exc.gear == gear:
        prefix = f"gear '{gear}': "
        text = str(exc)
        return text[len(prefix):] if text.startswith(prefix) else text
    if isinstance(exc, FluxmixError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _GearSlot:
    """Everything the runtime keeps about one gear of the scenario."""

    def __init__(self, spec: GearSpec, cls: type[Gear]) -> None:
        self.spec = spec
        self.name = spec.name
        self.cls = cls
        self.gear: Gear | None = None
        self.ctx: _Context | None = None
        self.lock = asyncio.Lock()  # one handle() at a time per gear (needed with several inputs)
        # The message being handled, so what the handling task emits gets deterministic derived
        # ids; handle() calls are one at a time per gear, so one set of fields is enough.
        self.parent: Message | None = None
        self.parent_emitted: dict[str, int] | None = None  # per port: how many so far (None: none yet)
        self.parent_task: asyncio.Task[Any] | None = None  # the consumer task handling it
        # While a batch is handled: what the handling task emitted to memory wires, per wire, in
        # order; put on the wires as one batch each when the gear returns (or every BUFFER_MAX).
        self.buffer: dict[Wire, list[Message]] | None = None
        self.buffered = 0
        self.counters = GearCounters()
        self.state = "built"
        self.started = False
        self.last_error: str | None = None
        self.inputs: list[tuple[str, Wire]] = []
        self.outputs: dict[str, list[Wire]] = {}
        self.consumers: list[asyncio.Task[None]] = []
        self.run_task: asyncio.Task[None] | None = None
        self.is_source = cls.is_source()
        self.is_sink = False
        self.flushes = False  # the gear has a flush() hook (see Gear.flush)
        self.error_log = _Throttle()
        self.drop_log = _Throttle()

    def status(self) -> GearStatus:
        return GearStatus(self.spec.type, self.state, self.is_source, self.is_sink, self.last_error,
                          **asdict(self.counters))


class _Context:
    """The GearContext a gear gets: emit through the runtime, checkpoints through the store."""

    def __init__(self, runtime: Runtime, slot: _GearSlot) -> None:
        self._runtime = runtime
        self._slot = slot
        self.scenario_name = runtime.scenario.name
        self.scenario_hash = runtime.scenario_hash
        self.gear_name = slot.name
        self.globals = runtime.globals  # read: .get(key, default); write: .set(key, value, who=...)
        self.log = logging.getLogger(f"fluxmix.gear.{slot.name}")
        self.stopping = asyncio.Event()
        self._ports: dict[str, tuple[list[Wire] | None, str]] = {}  # filled once wires exist
        self._loop = runtime_loop()

    def is_wired(self, port: str) -> bool:
        return bool(self._slot.outputs.get(port))

    def _parent_index(self, port: str) -> int | None:
        """The index of this emit among those on `port` derived from the message in hand, or
        None when there is none. Only emits made by the handling task itself derive from it: a
        gear's own background task (a timer, a run() loop beside its inputs) must not borrow it."""
        slot = self._slot
        if slot.parent is not None and _running_task(self._loop) is slot.parent_task:
            emitted = slot.parent_emitted
            if emitted is None:
                slot.parent_emitted = {port: 1}
                return 0
            index = emitted.get(port, 0)
            emitted[port] = index + 1
            return index
        return None

    def _port(self, port: str) -> tuple[list[Wire] | None, str]:
        found = self._ports.get(port)
        if found is None:
            found = self._ports[port] = (self._slot.outputs.get(port) or None, f"{self.gear_name}.{port}")
        return found

    async def emit(
        self,
        port: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        position: int | str | None = None,
    ) -> None:
        # The hot path of every gear: freeze once (free for a body passed on), one Message per
        # wire sharing body and headers, a derived id hashed only if someone reads it.
        slot = self._slot
        wires, origin = self._ports.get(port) or self._port(port)
        if position is not None:
            if wires is None:
                return
            msg_id = source_id(self.scenario_name, self.gear_name, position)
            index = None
        else:
            index = self._parent_index(port)  # counted even when unwired: ids stay stable if wiring changes
            if wires is None:
                return
            msg_id = uuid.uuid4().hex if index is None else ""
        frozen = body if type(body) is FrozenDict else freeze_body(body, self.gear_name, port)
        hdrs = freeze_headers(headers) if headers else NO_HEADERS
        ts = time.time()
        buffer = slot.buffer if index is not None else None  # only the handling task's own emits
        for wire in wires:
            if index is None:
                message = Message(msg_id, frozen, origin, self.scenario_hash, ts, hdrs)
            else:
                message = Message.derived(slot.parent, self.gear_name, port, index, frozen, origin,  # type: ignore[arg-type]
                                          self.scenario_hash, ts, hdrs)
            if buffer is not None and not wire.durable:
                pending = buffer.get(wire)
                if pending is None:
                    buffer[wire] = [message]
                else:
                    pending.append(message)
                slot.buffered += 1
            else:
                await wire.send(message)
        slot.counters.emitted += 1
        if slot.buffered >= BUFFER_MAX:
            await self._runtime._send_buffered(slot)

    async def load_checkpoint(self) -> Any | None:
        return await asyncio.to_thread(self._runtime.checkpoints.load_checkpoint, self.scenario_name, self.gear_name)

    async def save_checkpoint(self, value: Any) -> None:
        # Flush first: a checkpoint must never claim messages that are not yet safe on the wires.
        await self._runtime._flush_outputs(self._slot)
        await asyncio.to_thread(self._runtime.checkpoints.save_checkpoint, self.scenario_name, self.gear_name, value)


_NO_LOCK = contextlib.nullcontext()  # single-input gears need no lock: one consumer task feeds them

# The task running now, by loop: asyncio.current_task() is a Python function on 3.11 and this
# runs on every emit; its table is the same dict it reads (fallback when a version moves it).
_CURRENT_TASKS: dict[Any, Any] | None = getattr(asyncio.tasks, "_current_tasks", None)


def _running_task(loop: asyncio.AbstractEventLoop | None) -> asyncio.Task[Any] | None:
    if loop is not None and _CURRENT_TASKS is not None:
        return _CURRENT_TASKS.get(loop)
    return current_task(loop)


def runtime_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop (tests): looked up per call instead
        return None


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
    """One activation of one scenario. Built once, started once, stopped once."""

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
        self.start_timeout = start_timeout
        self.state = "created"
        self.first_handled_at: float | None = None  # time.time() of the first message handled at a sink
        self.last_handled_at: float | None = None
        self.first_handled = asyncio.Event()  # set with first_handled_at (the reload gap needs it)
        self.started_at: float | None = None
        self.ready_seconds: float | None = None  # start() duration
        self.sources_paused = False  # set before start(): the sources start paused (see pause_sources)
        self._slots: dict[str, _GearSlot] = {}
        self._order: list[_GearSlot] = []
        self.wires: dict[str, Wire] = {}

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
            await self._build()
        except BaseException:
            self.state = "failed"
            await self._close_wires()
            raise
        self.state = "built"

    async def _build(self) -> None:
        for spec in self.scenario.gears:
            cls = self.catalog.get(spec.type)
            if cls is None:
                raise GearError(spec.name, f"unknown gear type {spec.type!r}")
            slot = _GearSlot(spec, cls)
            slot.ctx = _Context(self, slot)
            try:
                slot.gear = cls(spec.name, spec.config, slot.ctx)
                slot.is_source = slot.gear.is_source()  # the instance decides: `python` wraps sources or not
                slot.flushes = slot.gear.flushes()
            except (Exception, SystemExit) as exc:  # a gear's sys.exit() must not end the mixer
                raise GearError(spec.name, f"cannot be built: {_detail(exc, spec.name)}") from exc
            self._slots[spec.name] = slot
        self._order = [self._slots[name] for name in topological_order(self.scenario)]

        by_kind: dict[str, list[WireSpec]] = {}
        for wspec in self.scenario.wires:
            for end in (wspec.source, wspec.target):
                if end.gear not in self._slots:
                    raise ActivationError(f"wire {wspec.key}: gear {end.gear!r} is not defined")
            by_kind.setdefault(wspec.transport, []).append(wspec)
        for kind, specs in sorted(by_kind.items()):
            broker = self.brokers.get(kind)
            if broker is None:
                raise ActivationError(f"no broker for transport {kind!r}")
            try:
                await broker.prepare(self.scenario, self.scenario_hash, specs)
            except FluxmixError:
                raise
            except Exception as exc:
                raise ActivationError(f"transport {kind!r}: preparing wires failed: {exc}") from exc
        for wspec in self.scenario.wires:
            try:
                wire = self.brokers[wspec.transport].wire(self.scenario, self.scenario_hash, wspec)
            except FluxmixError:
                raise
            except Exception as exc:
                raise ActivationError(f"wire {wspec.key}: cannot be created: {exc}") from exc
            self.wires[wspec.key] = wire
            wire.on_refused = functools.partial(self._refused, self._slots[wspec.source.gear], wspec.source.port)
            self._slots[wspec.source.gear].outputs.setdefault(wspec.source.port, []).append(wire)
            self._slots[wspec.target.gear].inputs.append((wspec.target.port, wire))
        for slot in self._slots.values():
            # A sink is where a message's trip ends: the reload gap is measured there.
            slot.is_sink = bool(slot.inputs) and not any(p != ERROR_PORT for p in slot.outputs)

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
        # Every task a gear runs in descends from this one, so `globals.get` in its expressions
        # reads this scenario's global state, whichever runtime started it.
        context = contextvars.copy_context()
        context.run(use_globals, self.globals)
        await asyncio.create_task(self._start(), name=f"fluxmix start {self.scenario.name}", context=context)

    async def _start(self) -> None:
        self.state = "starting"
        t0 = time.monotonic()
        backwards = list(reversed(self._order))
        try:
            for slot in [s for s in backwards if not s.is_source] + [s for s in backwards if s.is_source]:
                await self._start_gear(slot)
                self._start_consumers(slot)
        except BaseException:
            self.state = "failed"
            raise
        for slot in backwards:
            if slot.is_source:
                if self.sources_paused:
                    slot.state = "paused"
                else:
                    slot.run_task = asyncio.create_task(self._run_source(slot), name=f"fluxmix source {slot.name}")
        self.state = "running"
        self.started_at = time.time()
        self.ready_seconds = time.monotonic() - t0

    async def _start_gear(self, slot: _GearSlot) -> None:
        assert slot.gear is not None
        slot.state = "starting"
        try:
            async with asyncio.timeout(self.start_timeout):
                await _gear_code(slot, "start", slot.gear.start())
        except TimeoutError as exc:
            slot.state = "failed"
            slot.last_error = f"start did not finish within {self.start_timeout:g}s"
            raise GearError(slot.name, slot.last_error) from exc
        except Exception as exc:
            slot.state = "failed"
            slot.last_error = f"start failed: {_detail(exc, slot.name)}"
            raise GearError(slot.name, slot.last_error) from exc
        slot.started = True
        slot.state = "running"

    def _start_consumers(self, slot: _GearSlot) -> None:
        for port, wire in slot.inputs:
            # Nothing redelivers what a memory wire handed over: for a gear with a flush hook
            # each such message is final once handled (see _handle_then_flush).
            final = slot.flushes and not wire.durable
            handler = self._handle_then_flush if final else self._handle
            batch_handler = self._handle_batch_then_flush if final else self._handle_batch
            delivery = Delivery(
                handle=functools.partial(handler, slot, port),
                dead_letter=functools.partial(self._dead_letter, slot, port),
                flush_downstream=functools.partial(self._flush_outputs, slot),
                handle_batch=functools.partial(batch_handler, slot, port),
            )
            task = asyncio.create_task(self._consume(slot, wire, delivery), name=f"fluxmix wire {wire.spec.key}")
            slot.consumers.append(task)

    async def _consume(self, slot: _GearSlot, wire: Wire, delivery: Delivery) -> None:
        """Run a wire's consumer; if it crashes (a transport fault), restart it with backoff."""
        pause = SOURCE_RESTART_MIN
        while True:
            try:
                await wire.consume(delivery)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.state not in ("starting", "running"):
                    log.error("wire %s: consumer failed while stopping: %s", wire.spec.key, exc,
                              extra={"wire": wire.spec.key, "gear": slot.name})
                    return
                log.error("wire %s: consumer failed, restarting in %.1fs: %s", wire.spec.key, pause, exc,
                          extra={"wire": wire.spec.key, "gear": slot.name}, exc_info=exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, SOURCE_RESTART_MAX)

    # ---- message path ------------------------------------------------------------------

    async def _handle(self, slot: _GearSlot, port: str, message: Message) -> None:
        if len(slot.inputs) <= 1:
            # One input wire means one consumer task: handle() calls are already one at a time.
            await self._handle_one(slot, port, message)
        else:
            async with slot.lock:
                await self._handle_one(slot, port, message)
        slot.counters.handled += 1
        if slot.is_sink:
            now = time.time()
            if self.first_handled_at is None:
                self.first_handled_at = now
                self.first_handled.set()
            self.last_handled_at = now

    async def _handle_batch(self, slot: _GearSlot, port: str, messages: Sequence[Message],
                            cursor: BatchCursor) -> tuple[int, Exception | None]:
        """gear.handle_batch over `messages`: (how many were handled, failure of the next one)."""
        gear = slot.gear
        assert gear is not None
        batch = _Batch(messages, slot, cursor)
        failure: Exception | None = None
        # A gear with several inputs handles one batch at a time; the slot's in-hand state (parent
        # task, buffer) is set inside the lock, or a batch waiting for it would overwrite the state
        # of the one being handled and its emits would lose their derived ids.
        async with slot.lock if len(slot.inputs) > 1 else _NO_LOCK:
            slot.parent_task = asyncio.current_task()
            try:
                slot.buffer = {}
                await _gear_code(slot, "handle_batch", gear.handle_batch(port, batch))
                await self._send_buffered(slot)
            except Exception as exc:
                failure = exc
                try:  # what the messages before the failing one emitted is theirs: it goes out
                    await self._send_buffered(slot)
                except Exception as send_exc:
                    log.error("gear %s: sending what a failed batch emitted failed: %s", slot.name, send_exc,
                              extra={"gear": slot.name})
            finally:
                slot.parent = slot.parent_task = None
                slot.buffer = None
                slot.buffered = 0
        n = len(messages)
        if failure is None:
            handled = n
        else:
            # An exception after the iteration ran out is the last message's: it is the one
            # retried; those before it are done.
            handled = min(batch.pos, n - 1)
            self._count_failure(slot, port, messages[handled], failure)
        batch.finish(handled)
        if slot.is_sink and handled:
            now = time.time()
            if self.first_handled_at is None:
                self.first_handled_at = now
                self.first_handled.set()
            self.last_handled_at = now
        return handled, failure

    @staticmethod
    async def _send_buffered(slot: _GearSlot) -> None:
        """Put what the gear emitted during its batch on the wires, one send_batch per wire."""
        buffer = slot.buffer
        if buffer:
            slot.buffer, slot.buffered = {}, 0
            for wire, messages in buffer.items():
                await wire.send_batch(messages)

    async def _handle_then_flush(self, slot: _GearSlot, port: str, message: Message) -> None:
        """Handle, then flush the gear: a memory wire never delivers the message again, so what
        the gear did with it must not stay provisional (file-out would cut it after a crash).
        A failed flush fails the message: the retry finds it handled and flushes again."""
        await self._handle(slot, port, message)
        assert slot.gear is not None
        await _gear_code(slot, "flush()", slot.gear.flush())

    async def _handle_batch_then_flush(self, slot: _GearSlot, port: str, messages: Sequence[Message],
                                       cursor: BatchCursor) -> tuple[int, Exception | None]:
        """_handle_batch, then flush the gear for what it handled (see _handle_then_flush). Never
        raises for the flush: those messages are handled; the next flush records them."""
        handled, failure = await self._handle_batch(slot, port, messages, cursor)
        if handled:
            assert slot.gear is not None
            try:
                await _gear_code(slot, "flush()", slot.gear.flush())
            except Exception as exc:
                slot.counters.errors += 1
                slot.last_error = f"flush failed: {type(exc).__name__}: {exc}"
                if slot.error_log.hit():
                    log.error("gear %s: flush failed after %d messages: %s", slot.name, handled, exc,
                              extra={"gear": slot.name})
        return handled, failure

    async def _handle_one(self, slot: _GearSlot, port: str, message: Message) -> None:
        assert slot.gear is not None
        slot.parent, slot.parent_emitted, slot.parent_task = message, None, asyncio.current_task()
        try:
            await _gear_code(slot, "handle", slot.gear.handle(port, message))
        except Exception as exc:
            self._count_failure(slot, port, message, exc)
            raise
        finally:
            slot.parent = slot.parent_task = None

    def _count_failure(self, slot: _GearSlot, port: str, message: Message, exc: Exception) -> None:
        slot.counters.errors += 1
        slot.last_error = f"{type(exc).__name__}: {exc}"
        if slot.error_log.hit():
            log.warning("gear %s failed on message %s (port %s): %s [%d failures so far]", slot.name,
                        message.id, port, slot.last_error, slot.error_log.count,
                        extra={"gear": slot.name})

    async def _dead_letter(self, slot: _GearSlot, port: str, message: Message, exc: BaseException) -> bool:
        """A message used up its attempts: to the gear's `error` wires if any, else a counted drop."""
        slot.counters.dead_lettered += 1
        reason = f"{type(exc).__name__}: {exc}"
        wires = slot.outputs.get(ERROR_PORT)
        if wires:
            headers = {**message.headers, "error": reason, "error-gear": slot.name, "error-port": port}
            await _send_to_all(wires, derived_id(message.id, slot.name, ERROR_PORT, 0), message.body,
                               gear=slot.name, port=ERROR_PORT, scenario_hash=self.scenario_hash, headers=headers)
            return True
        slot.counters.dropped += 1
        if slot.drop_log.hit():
            log.error("gear %s: message %s dropped after its last attempt failed (no error wire): %s "
                      "[%d dropped so far]", slot.name, message.id, reason, slot.counters.dropped,
                      extra={"gear": slot.name})
        return False

    async def _refused(self, slot: _GearSlot, port: str, message: Message, exc: BaseException) -> bool:
        """A transport refused one of `slot`'s emits for good: it goes to the gear's `error` port
        like a message that used up its attempts (a refused `error` emit is dropped and counted)."""
        if port == ERROR_PORT:
            slot.counters.dropped += 1
            log.error("gear %s: error message %s refused by its wire and dropped: %s", slot.name, message.id, exc,
                      extra={"gear": slot.name})
            return False
        forwarded = await self._dead_letter(slot, port, message, exc)
        for wire in slot.outputs.get(ERROR_PORT, []):
            await wire.flush()
        return forwarded

    async def _flush_outputs(self, slot: _GearSlot) -> None:
        """Before an ack (or a source's checkpoint): the gear's own flush hook (file-out records
        how far its file is acknowledged), then what it emitted, made safe on its wires."""
        if slot.flushes:
            assert slot.gear is not None
            await _gear_code(slot, "flush()", slot.gear.flush())
        for wires in slot.outputs.values():
            for wire in wires:
                await wire.flush()

    async def _run_source(self, slot: _GearSlot) -> None:
        """Drive a source's run(); restart it with backoff when it raises (never crash the mixer)."""
        assert slot.gear is not None and slot.ctx is not None
        stopping = slot.ctx.stopping
        pause = SOURCE_RESTART_MIN
        while True:
            began = time.monotonic()
            try:
                await _gear_code(slot, "run", slot.gear.run())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                slot.counters.errors += 1
                slot.last_error = f"run failed: {type(exc).__name__}: {exc}"
                if stopping.is_set():
                    log.error("source %s failed while stopping: %s", slot.name, exc, exc_info=exc,
                              extra={"gear": slot.name})
                    return
                if time.monotonic() - began >= SOURCE_HEALTHY_AFTER:
                    pause = SOURCE_RESTART_MIN
                slot.state = "failed"
                log.error("source %s failed; restarting in %.1fs: %s", slot.name, pause, exc, exc_info=exc,
                          extra={"gear": slot.name})
                try:
                    await asyncio.wait_for(stopping.wait(), pause)
                    return  # asked to stop while waiting
                except TimeoutError:
                    pass
                pause = min(pause * 2, SOURCE_RESTART_MAX)
                slot.counters.restarts += 1
                slot.state = "running"
                continue
            if not stopping.is_set():
                slot.state = "finished"
                log.info("source %s finished", slot.name, extra={"gear": slot.name})
                try:
                    await self._flush_outputs(slot)
                except Exception as exc:
                    log.warning("source %s: flushing its wires failed: %s", slot.name, exc, extra={"gear": slot.name})
            return

    # ---- stop --------------------------------------------------------------------------

    async def stop(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> StopReport:
        """Stop sources, then drain and stop every gear in topological order.

        Within `timeout` nothing in flight is lost. Past it, what is left is cancelled and the
        wires closed (a memory wire counts what it still held as dropped): timed_out=True.
        Safe to call in any state, including after a failed build() or start().
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
        drained = sum(wire.stats.received - before[key] for key, wire in self.wires.items())
        await self._abandon()
        self.state = "stopped"
        return StopReport(drained, timed_out)

    async def _stop_gracefully(self) -> None:
        runs = [s for s in self._order if s.run_task is not None]
        for slot in runs:
            assert slot.ctx is not None
            slot.ctx.stopping.set()
            if slot.state == "running":
                slot.state = "stopping"
        for slot in runs:
            assert slot.run_task is not None
            await asyncio.wait({slot.run_task})
        # Durable consumers can all stop at once (what they have not taken stays in the stream);
        # drained one by one in topological order, each idle one sat out its fetch timeout and a
        # reload of a scenario with many standard wires took seconds.
        await asyncio.gather(*(self._drain(wire) for wire in self.wires.values() if wire.durable))
        for slot in self._order:
            await self._stop_gear(slot)

    async def _stop_gear(self, slot: _GearSlot) -> None:
        assert slot.ctx is not None and slot.gear is not None
        if slot.state == "stopped":
            return
        slot.ctx.stopping.set()
        if slot.started:
            slot.state = "stopping"
        for _port, wire in slot.inputs:
            await self._drain(wire)
        if slot.started:
            try:
                await _gear_code(slot, "stop", slot.gear.stop())
            except Exception as exc:
                slot.counters.errors += 1
                slot.last_error = f"stop failed: {type(exc).__name__}: {exc}"
                log.error("gear %s: stop failed: %s", slot.name, exc, exc_info=exc, extra={"gear": slot.name})
            try:
                await self._flush_outputs(slot)  # stop() may have emitted a last batch
            except Exception as exc:
                log.error("gear %s: flushing its wires failed: %s", slot.name, exc, extra={"gear": slot.name})
            slot.state = "stopped"
        elif slot.state != "failed":
            slot.state = "stopped"

    @staticmethod
    async def _drain(wire: Wire) -> None:
        try:
            await wire.drain()
        except Exception as exc:
            log.error("wire %s: drain failed: %s", wire.spec.key, exc, extra={"wire": wire.spec.key})

    async def _abandon(self) -> None:
        """Cancel whatever still runs and release every wire; the normal path finds little left."""
        tasks = [s.run_task for s in self._order if s.run_task is not None and not s.run_task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._close_wires()
        consumers = [t for s in self._order for t in s.consumers if not t.done()]
        for task in consumers:
            task.cancel()
        if consumers:
            await asyncio.wait(consumers)
        for slot in self._order:
            if slot.started and slot.state not in ("stopped",):
                assert slot.gear is not None
                try:
                    async with asyncio.timeout(5.0):
                        await _gear_code(slot, "stop", slot.gear.stop())
                except Exception as exc:
                    log.error("gear %s: stop failed: %s", slot.name, exc, extra={"gear": slot.name})
                slot.state = "stopped"

    async def _close_wires(self) -> None:
        for key, wire in self.wires.items():
            try:
                await wire.close()
            except Exception as exc:
                log.error("wire %s: close failed: %s", key, exc, extra={"wire": key})

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
        slots = [s for s in self._order if s.is_source and s.state not in ("paused", "finished", "stopped")]
        for slot in slots:
            assert slot.ctx is not None
            slot.ctx.stopping.set()
        tasks = [s.run_task for s in slots if s.run_task is not None and not s.run_task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for slot in slots:
            await self._stop_gear(slot)
            slot.started = False  # stopped once: a later stop() must not stop it again
            slot.state = "paused"
        return [s.name for s in slots]

    async def resume_sources(self) -> list[str]:
        """Let paused sources run again. A source that had run gets a fresh instance, started
        like after a reload, so it continues from its checkpoint (no gear has to support
        run() twice). Raises GearError when a source cannot start again."""
        self.sources_paused = False
        if self.state != "running":
            return []
        slots = [s for s in self._order if s.is_source and s.state == "paused"]
        for slot in slots:
            if slot.run_task is not None:
                slot.ctx = _Context(self, slot)
                try:
                    slot.gear = slot.cls(slot.name, slot.spec.config, slot.ctx)
                except Exception as exc:
                    slot.state = "failed"
                    slot.last_error = f"cannot be built again: {_detail(exc, slot.name)}"
                    raise GearError(slot.name, slot.last_error) from exc
                await self._start_gear(slot)
            slot.state = "running"
            slot.run_task = asyncio.create_task(self._run_source(slot), name=f"fluxmix source {slot.name}")
        return [s.name for s in slots]

    # ---- introspection -----------------------------------------------------------------

    @property
    def gear_names(self) -> list[str]:
        """Gears in topological order (empty before build)."""
        return [s.name for s in self._order]

    def gear(self, name: str) -> Gear:
        """The gear instance (tests and diagnostics)."""
        gear = self._slots[name].gear
        assert gear is not None
        return gear

    def status(self) -> RuntimeStatus:
        return RuntimeStatus(
            self.scenario.name, self.scenario_hash, self.state,
            started_at=self.started_at,
            first_handled_at=self.first_handled_at,
            last_handled_at=self.last_handled_at,
            gears={s.name: s.status() for s in (self._order or self._slots.values())},
            wires={key: w.status() for key, w in self.wires.items()},
        )
