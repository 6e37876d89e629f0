"""What a running gear sees of the runtime: its `GearContext` (emit, checkpoints, stopping) and
the batch object that tells the runtime which message of a batch is in hand.

Emit is the hot path of every gear. It reads the gear's fan-out from the `Outputs` the wiring
keeps for that gear, so a reload that rewires a port takes effect on the next emit without the
gear knowing; everything else (freezing, ids, buffering) is per message and kept lean.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from asyncio import current_task
from operator import is_, itemgetter
from typing import Any, Awaitable, Callable, Iterator, Mapping, Protocol, Sequence

from fluxmix.errors import FluxmixError, GearError, LeaseLostError
from fluxmix.message import NO_HEADERS, FrozenDict, Message, freeze_body, freeze_headers, source_id
from fluxmix.transports.base import BatchCursor, Wire

# A gear handling a batch emits into a buffer sent to its wires when it returns (a standard wire
# publishes it as one fast-ingest batch); past this many buffered messages they go out at once
# (bounds memory; backpressure applies there).
BUFFER_MAX = 256

_first = itemgetter(0)
_new_message = Message.__new__


class CheckpointStore(Protocol):
    """Where sources keep their positions (fluxmix.store.Store satisfies it)."""

    def load_checkpoint(self, scenario_name: str, gear: str) -> Any | None: ...

    def save_checkpoint(self, scenario_name: str, gear: str, value: Any) -> None: ...


class SourceGuard(Protocol):
    """Where a source may run (a fleet's lease, fluxmix.fleet.leases): `acquire` waits until
    this process may run it (False: stopping was set first), `valid` is checked before every
    emit (fencing), `lost` is set when that right ends, `release` gives it up."""

    async def acquire(self, scenario: str, gear: str, stopping: asyncio.Event) -> bool: ...

    def valid(self, scenario: str, gear: str) -> bool: ...

    def lost(self, scenario: str, gear: str) -> asyncio.Event: ...

    async def release(self, scenario: str, gear: str) -> None: ...


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


class Throttle:
    """Says when to log a repeating event: the first few, then one in `every`, with the count."""

    def __init__(self, first: int = 5, every: int = 100) -> None:
        self.first = first
        self.every = every
        self.count = 0

    def hit(self) -> bool:
        self.count += 1
        return self.count <= self.first or self.count % self.every == 0


async def send_to_all(wires: Sequence[Wire], msg_id: str, body: Mapping[str, Any], *, gear: str, port: str,
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


async def gear_code(runner: "EmittingGear", what: str, call: Awaitable[Any]) -> Any:
    """Await a gear's own code. Its sys.exit() fails the gear like any error; it never ends the
    mixer (asyncio would re-raise a SystemExit out of the event loop)."""
    try:
        return await call
    except SystemExit as exc:
        raise GearError(runner.name, f"{what} called sys.exit({exc.code!r})") from None


def detail(exc: BaseException, gear: str) -> str:
    """What went wrong, without repeating the gear name a GearError already carries."""
    if isinstance(exc, GearError) and exc.gear == gear:
        prefix = f"gear '{gear}': "
        text = str(exc)
        return text[len(prefix):] if text.startswith(prefix) else text
    if isinstance(exc, FluxmixError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# The task running now, by loop: asyncio.current_task() is a Python function on 3.11 and this
# runs on every emit; its table is the same dict it reads (fallback when a version moves it).
_CURRENT_TASKS: dict[Any, Any] | None = getattr(asyncio.tasks, "_current_tasks", None)


def running_task(loop: asyncio.AbstractEventLoop | None) -> asyncio.Task[Any] | None:
    if loop is not None and _CURRENT_TASKS is not None:
        return _CURRENT_TASKS.get(loop)
    return current_task(loop)


def runtime_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop (tests): looked up per call instead
        return None


class Outputs:
    """One gear's fan-out: port -> the wires on it. The wiring replaces a port's tuple (never
    mutates it), so an emit already iterating keeps a consistent list, and bumps `version` so
    the gear's context drops what it cached."""

    __slots__ = ("ports", "version")

    def __init__(self) -> None:
        self.ports: dict[str, tuple[Wire, ...]] = {}
        self.version = 0

    def set(self, port: str, wires: Sequence[Wire]) -> None:
        if wires:
            self.ports[port] = tuple(wires)
        else:
            self.ports.pop(port, None)
        self.version += 1

    def add(self, port: str, wire: Wire) -> None:
        self.set(port, (*self.ports.get(port, ()), wire))

    def get(self, port: str) -> tuple[Wire, ...]:
        return self.ports.get(port, ())

    def all(self) -> Iterator[Wire]:
        for wires in self.ports.values():
            yield from wires


class _Counted(Protocol):
    handled: int
    emitted: int


class EmittingGear(Protocol):
    """What the context and the batch need of the runner of their gear (runner.GearRunner)."""

    name: str
    outputs: Outputs
    parent: Message | None
    parent_emitted: dict[str, int] | None
    parent_task: asyncio.Task[Any] | None
    buffer: dict[Wire, list[Message]] | None
    buffered: int
    batch: "GearBatch | None"
    counters: _Counted

    async def send_buffered(self) -> None: ...

    async def flush_outputs(self) -> None: ...


class GearCtx:
    """The GearContext a gear gets: emit through its runner's fan-out, checkpoints through the store."""

    def __init__(self, runner: "EmittingGear", *, scenario_name: str, scenario_hash: str, globals_: Any,
                 checkpoints: CheckpointStore, claims: Any = None) -> None:
        self._runner = runner
        self._outputs = runner.outputs
        self._checkpoints = checkpoints
        self.scenario_name = scenario_name
        self.scenario_hash = scenario_hash  # switched by a partial reload that keeps this gear
        self.gear_name = runner.name
        self.globals = globals_  # read: .get(key, default); write: .set(key, value, who=...)
        self.claims = claims  # a fleet's sink claims (fluxmix.fleet.claims), else None
        # A fleet's source lease: a source's emits check it first (None: no fleet, no check).
        self.fence: Callable[[], bool] | None = None
        self.log = logging.getLogger(f"fluxmix.gear.{runner.name}")
        self.stopping = asyncio.Event()
        self._ports: dict[str, tuple[tuple[Wire, ...] | None, str]] = {}
        self._version = -1
        self._loop = runtime_loop()

    def is_wired(self, port: str) -> bool:
        return bool(self._outputs.get(port))

    def _parent_index(self, port: str, count: int = 1) -> int | None:
        """The index of this emit (the first of `count`) among those on `port` derived from the
        message in hand, or None when there is none. Only emits made by the handling task itself
        derive from it: a gear's own background task (a timer, a run() loop beside its inputs)
        must not borrow it."""
        runner = self._runner
        if runner.parent is not None and running_task(self._loop) is runner.parent_task:
            batch = runner.batch
            if batch is not None and batch.lazy:
                batch.settle()
            emitted = runner.parent_emitted
            if emitted is None:
                runner.parent_emitted = {port: count}
                return 0
            index = emitted.get(port, 0)
            emitted[port] = index + count
            return index
        return None

    def _port(self, port: str) -> tuple[tuple[Wire, ...] | None, str]:
        if self._version != self._outputs.version:
            self._ports.clear()
            self._version = self._outputs.version
        found = self._ports.get(port)
        if found is None:
            found = self._ports[port] = (self._outputs.get(port) or None, f"{self.gear_name}.{port}")
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
        runner = self._runner
        if self.fence is not None and not self.fence():
            raise LeaseLostError(f"source {self.gear_name}: emit refused, this member no longer holds its lease")
        wires, origin = self._port(port)
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
        buffer = runner.buffer if index is not None else None  # only the handling task's own emits
        for wire in wires:
            if index is None:
                message = Message(msg_id, frozen, origin, self.scenario_hash, ts, hdrs)
            else:
                message = Message.derived(runner.parent, self.gear_name, port, index, frozen, origin,  # type: ignore[arg-type]
                                          self.scenario_hash, ts, hdrs)
            if buffer is not None:
                pending = buffer.get(wire)
                if pending is None:
                    buffer[wire] = [message]
                else:
                    pending.append(message)
                runner.buffered += 1
            else:
                await wire.send(message)
        runner.counters.emitted += 1
        if runner.buffered >= BUFFER_MAX:
            await runner.send_buffered()

    async def emit_many(
        self,
        port: str,
        bodies: Sequence[Mapping[str, Any]],
        *,
        headers: Mapping[str, str] | None = None,
        positions: Sequence[int | str] | None = None,
    ) -> int:
        # emit() for each body, in order, with the per-emit work done once per batch: one
        # port lookup, one timestamp, one send_batch per wire (or one buffer extend while
        # handling). Every body is frozen before any is sent: a body that cannot be carried
        # fails the call with nothing emitted.
        n = len(bodies)
        if positions is not None and len(positions) != n:
            raise ValueError(f"emit_many: {len(positions)} positions for {n} bodies")
        if self.fence is not None and not self.fence():
            raise LeaseLostError(f"source {self.gear_name}: emit refused, this member no longer holds its lease")
        runner = self._runner
        wires, origin = self._port(port)
        index = None if positions is not None else self._parent_index(port, n)
        if wires is None or not n:
            return n
        gear, scenario_hash = self.gear_name, self.scenario_hash
        frozen = [b if type(b) is FrozenDict else freeze_body(b, gear, port) for b in bodies]
        hdrs = freeze_headers(headers) if headers else NO_HEADERS
        ts = time.time()
        ids: list[str] | None = None
        if positions is not None:
            prefix = source_id(self.scenario_name, gear, "")  # source_id's spelling, one f-string each
            ids = [f"{prefix}{position}" for position in positions]
        elif index is None:
            ids = [uuid.uuid4().hex for _ in range(n)]
        buffer = runner.buffer if index is not None else None  # only the handling task's own emits
        for wire in wires:
            if ids is not None:
                messages = []
                append, new = messages.append, _new_message
                for msg_id, body in zip(ids, frozen):  # Message(...) inlined: once per message
                    message = new(Message)
                    message._id, message._derive, message.body = msg_id, None, body
                    message.origin, message.scenario, message.ts, message.headers = origin, scenario_hash, ts, hdrs
                    append(message)
            else:
                derived, parent = Message.derived, runner.parent
                messages = [derived(parent, gear, port, index + k, b, origin, scenario_hash, ts, hdrs)  # type: ignore[arg-type,operator]
                            for k, b in enumerate(frozen)]
            await self._hand_over(buffer, wire, messages)
        await self._emitted(n)
        return n

    async def _hand_over(self, buffer: dict[Wire, list[Message]] | None, wire: Wire, messages: list[Message]) -> None:
        # A batch's emits wait in the handling task's buffer (one send_batch per wire when the
        # batch is done: on a standard wire one fast-ingest batch with one PubAck, where an emit
        # at a time cost a PubAck each); emits outside a batch go at once. The consumer acks the
        # batch only after flushing, so a durable wire's guarantee is the same.
        if buffer is not None:
            pending = buffer.get(wire)
            if pending is None:
                buffer[wire] = messages
            else:
                pending.extend(messages)
            self._runner.buffered += len(messages)
        else:
            await wire.send_batch(messages)

    async def _emitted(self, n: int) -> None:
        runner = self._runner
        runner.counters.emitted += n
        if runner.buffered >= BUFFER_MAX:
            await runner.send_buffered()

    async def emit_each(self, port: str, outputs: Sequence[tuple[Message, Mapping[str, Any]]]) -> None:
        # What a map or filter emits for a whole batch at once: one pass instead of one emit()
        # per message. Each body derives its id from its message (its next index on `port`,
        # counting that message's emit() calls too) and carries its headers.
        if not outputs:
            return
        runner = self._runner
        in_hand = runner.parent
        if in_hand is None or running_task(self._loop) is not runner.parent_task:
            raise GearError(self.gear_name, "emit_each() pairs bodies with the messages being handled: "
                                            "call it from handle() or handle_batch()")
        wires, origin = self._port(port)
        if wires is None:
            return  # nothing derives from an unwired port's emits
        batch = runner.batch
        if batch is not None and batch.first_on(port, outputs):
            indices: Sequence[int] = _ZEROS if len(outputs) <= len(_ZEROS) else [0] * len(outputs)
        else:
            indices = self._each_indices(port, outputs, in_hand)
        gear, scenario_hash = self.gear_name, self.scenario_hash
        ts = time.time()
        # built (every body frozen) before anything is sent: a body that cannot be carried fails
        # the call with nothing emitted; further wires reuse the frozen bodies and headers.
        # Message.derived inlined: this loop runs once per message per hop.
        new, first = _new_message, []
        append = first.append
        for (parent, body), index in zip(outputs, indices):
            message = new(Message)
            message._id, message._derive = None, (parent, gear, port, index)
            message.body = body if type(body) is FrozenDict else freeze_body(body, gear, port)
            message.origin, message.scenario, message.ts = origin, scenario_hash, ts
            headers = parent.headers
            message.headers = headers if type(headers) is FrozenDict else freeze_headers(headers)
            append(message)
        buffer = runner.buffer
        for w, wire in enumerate(wires):
            messages = first if w == 0 else [
                Message.derived(parent, gear, port, index, m.body, origin, scenario_hash, ts, m.headers)
                for (parent, _), index, m in zip(outputs, indices, first)]
            await self._hand_over(buffer, wire, messages)
        await self._emitted(len(outputs))

    def _each_indices(self, port: str, outputs: Sequence[tuple[Message, Any]], in_hand: Message) -> list[int]:
        """Each output's index on `port` among its message's emits; refuses a message that is not
        one of the batch's, in order, up to the one in hand (a later one has not started: what it
        emits now would go out even if it failed)."""
        runner = self._runner
        batch = runner.batch
        indices: list[int] = []
        if batch is None:  # handle(): the message in hand only
            for parent, _ in outputs:
                if parent is not in_hand:
                    raise GearError(self.gear_name, "emit_each() got a message other than the one being handled")
            first = self._parent_index(port, len(outputs))
            assert first is not None
            return list(range(first, first + len(outputs)))
        if batch.lazy:
            batch.settle()
        messages = batch._messages
        j, last = 0, min(batch.pos, len(messages) - 1)
        for parent, _ in outputs:
            while j <= last and messages[j] is not parent:
                j += 1
            if j > last:
                raise GearError(self.gear_name, "emit_each() got a message that is not one of the batch handled so "
                                                "far, or not in the batch's order")
            emitted = batch.counts_at(j)
            index = emitted.get(port, 0)
            emitted[port] = index + 1
            indices.append(index)
        return indices

    async def load_checkpoint(self) -> Any | None:
        return await asyncio.to_thread(self._checkpoints.load_checkpoint, self.scenario_name, self.gear_name)

    async def save_checkpoint(self, value: Any) -> None:
        # Flush first: a checkpoint must never claim messages that are not yet safe on the wires.
        await self._runner.flush_outputs()
        await asyncio.to_thread(self._checkpoints.save_checkpoint, self.scenario_name, self.gear_name, value)


# emit_each's indices when every output is its message's first on the port (the usual case)
_ZEROS = (0,) * 1024


class GearBatch(Sequence[Message]):
    """The messages a gear gets in `handle_batch`. Iterating them is how the runtime knows which
    message is in hand: what the gear emits derives its id from it, a failure is its failure,
    and the wire counts the messages not yet taken as still queued (backpressure)."""

    __slots__ = ("_messages", "_runner", "_cursor", "_started", "_handled", "pos", "emitted", "held", "lazy")

    def __init__(self, messages: Sequence[Message], runner: "EmittingGear", cursor: BatchCursor) -> None:
        self._messages = messages
        self._runner = runner
        self._cursor = cursor
        self._started = cursor.started  # the wire's count before this batch (a retry resumes mid-way)
        self._handled = runner.counters.handled
        self.pos = 0  # index of the message in hand; len() once the iteration ran past the end
        # per message left behind (by index): what it emitted per port, for emit_each's ids and
        # for a gear that iterates again; `held` is the index of the message in hand
        self.emitted: dict[int, dict[str, int]] = {}
        self.held = 0
        # emit_each calls whose every output was its message's first on the port, by port: the
        # per-message counts they imply are only written (settle) if something reads them
        self.lazy: dict[str, Sequence[tuple[Message, Any]]] = {}

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: Any) -> Any:
        return self._messages[index]

    def __iter__(self) -> Iterator[Message]:
        if self.lazy:
            self.settle()  # a gear iterating again reads the counts
        runner, cursor, counters = self._runner, self._cursor, self._runner.counters
        started, handled = self._started, self._handled
        emitted = self.emitted
        for i, message in enumerate(self._messages):
            counters.handled = handled + i  # those before it are done (/status reads it mid-batch)
            if runner.parent_emitted is not None:  # the message left behind emitted: keep its counts
                emitted[self.held] = runner.parent_emitted
            self.pos = self.held = i
            runner.parent = message
            runner.parent_emitted = emitted.pop(i, None) if emitted else None
            cursor.started = started + i + 1
            yield message
        self.pos = len(self._messages)

    def apply_bodies(self, fn: Callable[[Any], Any]) -> tuple[list[Any], Exception | None]:
        """[fn(message.body)] over the batch, in order, up to the first that raises: (results,
        that exception or None). For a gear whose per-message work is a pure function of the body
        (map, filter: no emit, no await in between), so nobody can tell which message is in hand
        until it returns: the in-hand state moves once, to the failing message (as iterating would
        have left it: its failure is its own) or past the last, instead of at every message."""
        if self.lazy:
            self.settle()
        messages = self._messages
        results: list[Any] = []
        append = results.append
        failure: Exception | None = None
        try:
            for message in messages:
                append(fn(message.body))
        except Exception as exc:
            failure = exc
        n, k = len(messages), len(results)
        if not n:
            return results, failure
        at = k if failure is not None else n - 1  # the message iterating would have in hand now
        runner, emitted = self._runner, self.emitted
        if at != self.held:
            if runner.parent_emitted is not None:
                emitted[self.held] = runner.parent_emitted
            runner.parent_emitted = emitted.pop(at, None) if emitted else None
        runner.parent = messages[at]
        self.held = at
        self.pos = at if failure is not None else n
        self._cursor.started = self._started + at + 1
        runner.counters.handled = self._handled + at
        return results, failure

    def first_on(self, port: str, outputs: Sequence[tuple[Message, Any]]) -> bool:
        """True (and recorded lazily) when each output is the first emit on `port` of a distinct
        message of this batch, in order, up to the one in hand: then every index is 0. Otherwise
        emit_each takes the general path (which also refuses what is not allowed)."""
        if self.emitted or self._runner.parent_emitted is not None or port in self.lazy:
            return False
        messages = self._messages
        last = min(self.pos, len(messages) - 1)
        if len(outputs) > last + 1:
            return False
        if not all(map(is_, map(_first, outputs), messages)):  # not the batch's prefix: a subset?
            j = 0
            for parent, _ in outputs:
                while j <= last and messages[j] is not parent:
                    j += 1
                if j > last:
                    return False
                j += 1
        self.lazy[port] = outputs
        return True

    def counts_at(self, j: int) -> dict[str, int]:
        """The emit counts per port of message `j` (created when missing): the runner's for the
        message in hand, the batch's record for those it moved past."""
        if j == self.held:
            counts = self._runner.parent_emitted
            if counts is None:
                counts = self._runner.parent_emitted = {}
            return counts
        counts = self.emitted.get(j)
        if counts is None:
            counts = self.emitted[j] = {}
        return counts

    def settle(self) -> None:
        """Write the per-message emit counts the lazy emit_each records imply."""
        lazy, self.lazy = self.lazy, {}
        messages = self._messages
        for port, outputs in lazy.items():
            j = 0
            for parent, _ in outputs:
                while messages[j] is not parent:
                    j += 1
                counts = self.counts_at(j)
                counts[port] = counts.get(port, 0) + 1
                j += 1

    def finish(self, handled: int) -> None:
        self._runner.counters.handled = self._handled + handled
