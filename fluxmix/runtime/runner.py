"""One gear's runner: its instance, its lifecycle (build -> start -> drain -> stop) and its message path.

A runner owns everything that belongs to one running instance of one gear: the instance, its
context, the consumer tasks of its input wires, its source loop, its counters. The runtime
decides in which order runners start and stop; a partial reload stops and replaces a few of them
while the others keep running, so nothing here may assume the whole graph stops together.

Counters come in two kinds: `counters` since this instance started, and `carried`, what earlier
instances of the same gear in the same runtime counted (a restarted gear's totals go on).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any, Callable, Literal, Protocol, Sequence

from fluxmix.errors import GearError, LeaseLostError
from fluxmix.gears.base import ERROR_PORT, Gear
from fluxmix.message import Message, derived_id
from fluxmix.runtime.context import (
    CheckpointStore,
    GearBatch,
    GearCtx,
    Outputs,
    SourceGuard,
    Throttle,
    detail,
    gear_code,
    send_to_all,
)
from fluxmix.scenario import GearSpec, Scenario
from fluxmix.status import GEAR_COUNTER_FIELDS, GearCounters, GearStatus
from fluxmix.transports.base import BatchCursor, Delivery, Wire

log = logging.getLogger("fluxmix.runtime")

# A source whose run() raises is restarted after a pause that doubles up to this bound, so a
# transient failure (a file not there yet, NATS briefly away) heals without a reload and a
# permanent one costs one log line per bound instead of a busy loop.
SOURCE_RESTART_MIN = 0.5
SOURCE_RESTART_MAX = 30.0
SOURCE_HEALTHY_AFTER = 30.0  # a run that lasted this long resets the backoff

# What stopping does with one input wire: "drain" hands everything queued to this instance
# first (its upstream is already quiet); "detach" stops after the message in hand and leaves the
# rest queued for the next consumer (its upstream keeps running through a partial reload).
InputStop = Literal["drain", "detach"]

# Called for every message handled at a sink: (runner, time.time()). Installed by whoever
# wants to watch the flow (the activator's reload stopwatch); None costs one attribute check.
SinkObserver = Callable[["GearRunner", float], None]


class RunnerHost(Protocol):
    """What a runner reads of the runtime it runs in (fluxmix.runtime.core.Runtime); read on use,
    so a partial reload that switches the scenario's hash is seen at once."""

    scenario: Scenario
    scenario_hash: str
    globals: Any
    checkpoints: CheckpointStore
    source_guard: SourceGuard | None
    claims: Any
    start_timeout: float
    state: str
    sources_paused: bool


def _sum(a: GearCounters, b: GearCounters) -> GearCounters:
    return GearCounters(**{name: getattr(a, name) + getattr(b, name) for name in GEAR_COUNTER_FIELDS})


_NO_LOCK = contextlib.nullcontext()  # single-input gears need no lock: one consumer task feeds them


class GearRunner:
    """One instance of one gear of the scenario, with its own lifecycle."""

    def __init__(self, runtime: RunnerHost, spec: GearSpec, cls: type[Gear], *, generation: int = 1,
                 carried: GearCounters | None = None) -> None:
        self.runtime = runtime
        self.spec = spec
        self.name = spec.name
        self.cls = cls
        self.generation = generation  # 1 for the first instance in this runtime, +1 per restart
        self.gear: Gear | None = None
        self.ctx: GearCtx | None = None
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
        self.batch: GearBatch | None = None  # the batch being handled (None: one message, or none)
        self.counters = GearCounters()
        self.carried = carried or GearCounters()
        self.state = "built"
        self.started = False
        self.up_since: float | None = None  # time.time() when this instance started
        self.last_error: str | None = None
        self.inputs: list[tuple[str, Wire]] = []
        self.outputs = Outputs()
        self.consumers: list[asyncio.Task[None]] = []
        self.run_task: asyncio.Task[None] | None = None
        self.is_source = cls.is_source()
        self.is_sink = False
        self.flushes = False  # the gear has a flush() hook (see Gear.flush)
        self.first_handled_at: float | None = None  # sinks: this instance's first message (time.time())
        self.last_handled_at: float | None = None  # sinks: the last message handled (time.time())
        self.observer: SinkObserver | None = None
        self.error_log = Throttle()
        self.drop_log = Throttle()

    # ---- build / start -----------------------------------------------------------------

    def build(self) -> None:
        """Instantiate the gear; raises GearError when its constructor refuses the config."""
        runtime = self.runtime
        self.ctx = GearCtx(self, scenario_name=runtime.scenario.name, scenario_hash=runtime.scenario_hash,
                           globals_=runtime.globals, checkpoints=runtime.checkpoints,
                           claims=getattr(runtime, "claims", None))
        try:
            self.gear = self.cls(self.name, self.spec.config, self.ctx)
            self.is_source = self.gear.is_source()  # the instance decides: `python` wraps sources or not
            self.flushes = self.gear.flushes()
        except (Exception, SystemExit) as exc:  # a gear's sys.exit() must not end the mixer
            raise GearError(self.name, f"cannot be built: {detail(exc, self.name)}") from exc
        guard = getattr(runtime, "source_guard", None)
        if guard is not None and self.is_source:
            self.ctx.fence = functools.partial(guard.valid, runtime.scenario.name, self.name)

    def note_wiring(self) -> None:
        """A sink is where a message's trip ends: reload gaps and flow are measured there."""
        self.is_sink = bool(self.inputs) and not any(p != ERROR_PORT for p in self.outputs.ports)

    async def start(self) -> None:
        assert self.gear is not None
        self.state = "starting"
        timeout = self.runtime.start_timeout
        try:
            async with asyncio.timeout(timeout):
                await gear_code(self, "start", self.gear.start())
        except TimeoutError as exc:
            self.state = "failed"
            self.last_error = f"start did not finish within {timeout:g}s"
            raise GearError(self.name, self.last_error) from exc
        except Exception as exc:
            self.state = "failed"
            self.last_error = f"start failed: {detail(exc, self.name)}"
            raise GearError(self.name, self.last_error) from exc
        self.started = True
        self.up_since = time.time()
        self.state = "running"

    def start_consumers(self) -> None:
        for port, wire in self.inputs:
            self.start_consumer(port, wire)

    def start_consumer(self, port: str, wire: Wire) -> None:
        # Nothing redelivers what a memory wire handed over: for a gear with a flush hook
        # each such message is final once handled (see _handle_then_flush).
        final = self.flushes and not wire.durable
        delivery = Delivery(
            handle=functools.partial(self._handle_then_flush if final else self._handle, port),
            dead_letter=functools.partial(self.dead_letter, port),
            flush_downstream=self.flush_outputs,
            handle_batch=functools.partial(self._handle_batch_then_flush if final else self._handle_batch, port),
        )
        task = asyncio.create_task(self._consume(wire, delivery), name=f"fluxmix wire {wire.spec.key}")
        self.consumers.append(task)

    def run_source(self) -> None:
        self.state = "running"
        self.run_task = asyncio.create_task(self._run_guarded(), name=f"fluxmix source {self.name}")

    async def _run_guarded(self) -> None:
        """Run the source; in a fleet, only while this member holds its lease.

        Standby until the lease is acquired; then a fresh instance is started (its checkpoint is
        the previous holder's, read now) and runs until the runtime stops it or the lease is
        lost; a lost lease stops the source and it waits for the lease again."""
        runtime = self.runtime
        guard = getattr(runtime, "source_guard", None)
        if guard is None:
            await self._run_source()
            return
        scenario = runtime.scenario.name
        try:
            while runtime.state in ("starting", "running") and not getattr(runtime, "sources_paused", False):
                assert self.ctx is not None
                self.state = "standby"
                if not await guard.acquire(scenario, self.name, self.ctx.stopping):
                    return
                # The instance start() began read its checkpoint before the lease was ours: a fresh
                # one reads the previous holder's.
                if self.started:
                    await gear_code(self, "stop", self.gear.stop())  # type: ignore[union-attr]
                    self.started = False
                self.build()
                await self.start()
                assert self.ctx is not None
                stopping = self.ctx.stopping
                lost = guard.lost(scenario, self.name)
                watch = asyncio.create_task(_stop_on(lost, stopping), name=f"fluxmix lease watch {self.name}")
                try:
                    await self._run_source()
                    if self.state == "finished":  # keep the lease: nobody else need run it again
                        await asyncio.wait({watch})
                finally:
                    watch.cancel()
                if not lost.is_set() or runtime.state != "running" or getattr(runtime, "sources_paused", False):
                    return
                log.warning("source %s: lease lost; stopped, waiting for the lease again", self.name,
                            extra={"gear": self.name})
                await self.stop()
                self.started = False
                self.build()  # a fresh context (its stopping event unset) to wait with
        finally:
            if not guard.lost(scenario, self.name).is_set():
                await guard.release(scenario, self.name)

    async def _consume(self, wire: Wire, delivery: Delivery) -> None:
        """Run a wire's consumer; if it crashes (a transport fault), restart it with backoff."""
        pause = SOURCE_RESTART_MIN
        while True:
            try:
                await wire.consume(delivery)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.runtime.state not in ("starting", "running") or self.state == "stopping":
                    log.error("wire %s: consumer failed while stopping: %s", wire.spec.key, exc,
                              extra={"wire": wire.spec.key, "gear": self.name})
                    return
                log.error("wire %s: consumer failed, restarting in %.1fs: %s", wire.spec.key, pause, exc,
                          extra={"wire": wire.spec.key, "gear": self.name}, exc_info=exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, SOURCE_RESTART_MAX)

    # ---- message path ------------------------------------------------------------------

    def _note_sink(self) -> None:
        now = time.time()
        if self.first_handled_at is None:
            self.first_handled_at = now
        self.last_handled_at = now
        observer = self.observer
        if observer is not None:
            observer(self, now)

    async def _handle(self, port: str, message: Message) -> None:
        if len(self.inputs) <= 1:
            # One input wire means one consumer task: handle() calls are already one at a time.
            await self._handle_one(port, message)
        else:
            async with self.lock:
                await self._handle_one(port, message)
        self.counters.handled += 1
        if self.is_sink:
            self._note_sink()

    async def _handle_batch(self, port: str, messages: Sequence[Message],
                            cursor: BatchCursor) -> tuple[int, Exception | None]:
        """gear.handle_batch over `messages`: (how many were handled, failure of the next one)."""
        gear = self.gear
        assert gear is not None
        batch = GearBatch(messages, self, cursor)
        failure: Exception | None = None
        # A gear with several inputs handles one batch at a time; the in-hand state (parent task,
        # buffer) is set inside the lock, or a batch waiting for it would overwrite the state of
        # the one being handled and its emits would lose their derived ids.
        async with self.lock if len(self.inputs) > 1 else _NO_LOCK:
            self.parent_task, self.parent_emitted = asyncio.current_task(), None
            self.batch = batch
            try:
                self.buffer = {}
                await gear_code(self, "handle_batch", gear.handle_batch(port, batch))
                await self.send_buffered()
            except Exception as exc:
                failure = exc
                try:  # what the messages before the failing one emitted is theirs: it goes out
                    await self.send_buffered()
                except Exception as send_exc:
                    log.error("gear %s: sending what a failed batch emitted failed: %s", self.name, send_exc,
                              extra={"gear": self.name})
            finally:
                self.parent = self.parent_task = self.batch = None
                self.buffer = None
                self.buffered = 0
        n = len(messages)
        if failure is None:
            handled = n
        else:
            # An exception after the iteration ran out is the last message's: it is the one
            # retried; those before it are done.
            handled = min(batch.pos, n - 1)
            self._count_failure(port, messages[handled], failure)
        batch.finish(handled)
        if self.is_sink and handled:
            self._note_sink()
        return handled, failure

    async def send_buffered(self) -> None:
        """Put what the gear emitted during its batch on the wires, one send_batch per wire."""
        buffer = self.buffer
        if buffer:
            self.buffer, self.buffered = {}, 0
            for wire, messages in buffer.items():
                await wire.send_batch(messages)

    async def _handle_then_flush(self, port: str, message: Message) -> None:
        """Handle, then flush the gear: a memory wire never delivers the message again, so what
        the gear did with it must not stay provisional (file-out would cut it after a crash).
        A failed flush fails the message: the retry finds it handled and flushes again."""
        await self._handle(port, message)
        assert self.gear is not None
        await gear_code(self, "flush()", self.gear.flush())

    async def _handle_batch_then_flush(self, port: str, messages: Sequence[Message],
                                       cursor: BatchCursor) -> tuple[int, Exception | None]:
        """_handle_batch, then flush the gear for what it handled (see _handle_then_flush). Never
        raises for the flush: those messages are handled; the next flush records them."""
        handled, failure = await self._handle_batch(port, messages, cursor)
        if handled:
            assert self.gear is not None
            try:
                await gear_code(self, "flush()", self.gear.flush())
            except Exception as exc:
                self.counters.errors += 1
                self.last_error = f"flush failed: {type(exc).__name__}: {exc}"
                if self.error_log.hit():
                    log.error("gear %s: flush failed after %d messages: %s", self.name, handled, exc,
                              extra={"gear": self.name})
        return handled, failure

    async def _handle_one(self, port: str, message: Message) -> None:
        assert self.gear is not None
        self.parent, self.parent_emitted, self.parent_task = message, None, asyncio.current_task()
        try:
            await gear_code(self, "handle", self.gear.handle(port, message))
        except Exception as exc:
            self._count_failure(port, message, exc)
            raise
        finally:
            self.parent = self.parent_task = None

    def _count_failure(self, port: str, message: Message, exc: Exception) -> None:
        self.counters.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.error_log.hit():
            log.warning("gear %s failed on message %s (port %s): %s [%d failures so far]", self.name,
                        message.id, port, self.last_error, self.error_log.count, extra={"gear": self.name})

    async def dead_letter(self, port: str, message: Message, exc: BaseException) -> bool:
        """A message used up its attempts: to the gear's `error` wires if any, else a counted drop."""
        self.counters.dead_lettered += 1
        reason = f"{type(exc).__name__}: {exc}"
        wires = self.outputs.get(ERROR_PORT)
        if wires:
            headers = {**message.headers, "error": reason, "error-gear": self.name, "error-port": port}
            await send_to_all(wires, derived_id(message.id, self.name, ERROR_PORT, 0), message.body,
                              gear=self.name, port=ERROR_PORT, scenario_hash=self.runtime.scenario_hash,
                              headers=headers)
            return True
        self.counters.dropped += 1
        if self.drop_log.hit():
            log.error("gear %s: message %s dropped after its last attempt failed (no error wire): %s "
                      "[%d dropped so far]", self.name, message.id, reason, self.counters.dropped,
                      extra={"gear": self.name})
        return False

    async def refused(self, port: str, message: Message, exc: BaseException) -> bool:
        """A transport refused one of this gear's emits for good: it goes to the gear's `error`
        port like a message that used up its attempts (a refused `error` emit is dropped and counted)."""
        if port == ERROR_PORT:
            self.counters.dropped += 1
            log.error("gear %s: error message %s refused by its wire and dropped: %s", self.name, message.id, exc,
                      extra={"gear": self.name})
            return False
        forwarded = await self.dead_letter(port, message, exc)
        for wire in self.outputs.get(ERROR_PORT):
            await wire.flush()
        return forwarded

    async def flush_outputs(self) -> None:
        """Before an ack (or a source's checkpoint): the gear's own flush hook (file-out records
        how far its file is acknowledged), then what it emitted, made safe on its wires."""
        if self.flushes:
            assert self.gear is not None
            await gear_code(self, "flush()", self.gear.flush())
        for wire in list(self.outputs.all()):
            await wire.flush()

    async def _run_source(self) -> None:
        """Drive a source's run(); restart it with backoff when it raises (never crash the mixer)."""
        assert self.gear is not None and self.ctx is not None
        stopping = self.ctx.stopping
        pause = SOURCE_RESTART_MIN
        while True:
            began = time.monotonic()
            try:
                await gear_code(self, "run", self.gear.run())
            except asyncio.CancelledError:
                raise
            except LeaseLostError as exc:
                # not the gear's failure: this member lost the source's lease (fleet); the lease
                # watch sets `stopping` and the guarded run waits for the lease again
                log.warning("source %s: %s; it stops", self.name, exc, extra={"gear": self.name})
                await stopping.wait()
                return
            except Exception as exc:
                self.counters.errors += 1
                self.last_error = f"run failed: {type(exc).__name__}: {exc}"
                if stopping.is_set():
                    log.error("source %s failed while stopping: %s", self.name, exc, exc_info=exc,
                              extra={"gear": self.name})
                    return
                if time.monotonic() - began >= SOURCE_HEALTHY_AFTER:
                    pause = SOURCE_RESTART_MIN
                self.state = "failed"
                log.error("source %s failed; restarting in %.1fs: %s", self.name, pause, exc, exc_info=exc,
                          extra={"gear": self.name})
                try:
                    await asyncio.wait_for(stopping.wait(), pause)
                    return  # asked to stop while waiting
                except TimeoutError:
                    pass
                pause = min(pause * 2, SOURCE_RESTART_MAX)
                self.counters.restarts += 1
                self.state = "running"
                continue
            if not stopping.is_set():
                self.state = "finished"
                log.info("source %s finished", self.name, extra={"gear": self.name})
                try:
                    await self.flush_outputs()
                except Exception as exc:
                    log.warning("source %s: flushing its wires failed: %s", self.name, exc, extra={"gear": self.name})
            return

    # ---- stop --------------------------------------------------------------------------

    async def stop_source(self) -> None:
        """Ask run() to return (its position is checkpointed by the gear) and wait for it."""
        if self.run_task is None:
            return
        assert self.ctx is not None
        self.ctx.stopping.set()
        if self.state == "running":
            self.state = "stopping"
        await asyncio.wait({self.run_task})

    async def stop(self, inputs: dict[str, InputStop] | None = None) -> None:
        """Finish the inputs (drained, or detached per `inputs` by wire key), then stop the gear
        and make what it emitted last safe on its wires."""
        assert self.ctx is not None and self.gear is not None
        if self.state == "stopped":
            return
        self.ctx.stopping.set()
        if self.started:
            self.state = "stopping"
        for _port, wire in self.inputs:
            how = (inputs or {}).get(wire.spec.key, "drain")
            await (detach_wire(wire) if how == "detach" else drain_wire(wire))
        if self.started:
            try:
                await gear_code(self, "stop", self.gear.stop())
            except Exception as exc:
                self.counters.errors += 1
                self.last_error = f"stop failed: {type(exc).__name__}: {exc}"
                log.error("gear %s: stop failed: %s", self.name, exc, exc_info=exc, extra={"gear": self.name})
            try:
                await self.flush_outputs()  # stop() may have emitted a last batch
            except Exception as exc:
                log.error("gear %s: flushing its wires failed: %s", self.name, exc, extra={"gear": self.name})
            self.state = "stopped"
        elif self.state != "failed":
            self.state = "stopped"

    async def cancel_tasks(self) -> None:
        """Cancel the source loop and input consumers still running (an abandoned stop)."""
        tasks = [t for t in (self.run_task, *self.consumers) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def force_stop(self) -> None:
        """stop() of a gear whose graceful stop was abandoned; bounded, never raises."""
        if self.started and self.state != "stopped":
            assert self.gear is not None
            try:
                async with asyncio.timeout(5.0):
                    await gear_code(self, "stop", self.gear.stop())
            except Exception as exc:
                log.error("gear %s: stop failed: %s", self.name, exc, extra={"gear": self.name})
            self.state = "stopped"

    # ---- introspection -----------------------------------------------------------------

    @property
    def totals(self) -> GearCounters:
        return _sum(self.carried, self.counters)

    def status(self) -> GearStatus:
        """Counters at the top level are totals over every instance of this gear in this runtime
        (monotonic, like /metrics); `since_start` are this instance's own."""
        counters = self.counters
        return GearStatus(self.spec.type, self.state, self.is_source, self.is_sink, self.last_error,
                          **{name: getattr(self.totals, name) for name in GEAR_COUNTER_FIELDS},
                          since_start={name: getattr(counters, name) for name in GEAR_COUNTER_FIELDS},
                          up_since=self.up_since, instance=self.generation,
                          restarted_at=self.up_since if self.generation > 1 else None)


async def _stop_on(lost: asyncio.Event, stopping: asyncio.Event) -> None:
    """Set `stopping` when the lease is lost (the source's run() then returns)."""
    waiters = {asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stopping.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    stopping.set()


async def drain_wire(wire: Wire) -> None:
    try:
        await wire.drain()
    except Exception as exc:
        log.error("wire %s: drain failed: %s", wire.spec.key, exc, extra={"wire": wire.spec.key})


async def detach_wire(wire: Wire) -> None:
    try:
        await wire.detach()
    except Exception as exc:
        log.error("wire %s: stopping its consumer failed: %s", wire.spec.key, exc, extra={"wire": wire.spec.key})
