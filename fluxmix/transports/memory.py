"""In-memory wires: one bounded asyncio.Queue per wire, inside the mixer process.

The bound is the whole point: a slow consumer makes `send()` wait, so backpressure travels
upstream to the source instead of memory growing without limit. Nothing is dropped on the way;
the only messages a memory wire can lose are those still queued when it is closed without a
drain (an abandoned activation or a stop that timed out), and those are counted as `dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, ClassVar, Sequence

from fluxmix.errors import TransportError
from fluxmix.message import Message
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.status import MemoryBrokerStatus, MemoryWireStatus
from fluxmix.transports.base import BatchCursor, Broker, Delivery, Wire

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1024


# The most a consumer takes at once ("what is there", up to this): enough to amortise the hand-
# over, small enough that one batch never holds a gear for long.
MAX_BATCH = 256


class _Stop:
    """Queued by drain() behind the last real message, so the consumer ends between messages."""


_STOP = _Stop()


class _Detach:
    """Put in front of the queue by detach(): the consumer ends after the batch in hand and
    leaves the rest queued for the next consumer of this wire."""


_DETACH = _Detach()


class _Cursor(BatchCursor):
    """A batch in hand. Senders waiting for room are woken as each message is taken on the
    per-message path, and at the end of a batch otherwise (the gear runs the batch without
    yielding unless it waits downstream, so earlier wake-ups would buy nothing)."""

    __slots__ = ("wire",)

    def __init__(self, wire: "MemoryWire") -> None:
        super().__init__()
        self.wire = wire

    def advance_to(self, started: int) -> None:
        self.started = started
        if self.wire._putters:
            self.wire._wake_putters()


class MemoryWire(Wire):
    """A bounded queue between one upstream port and one downstream port.

    Senders put messages (or batches); the consumer takes what is there (up to MAX_BATCH) and
    hands it to the gear as one batch. Messages of a batch the gear has not started yet still
    count as queued, so the bound is what it is per message: `queue_size` waiting plus the one
    being handled.

    A chained wire (`chained`, set by the runtime: fluxmix.runtime.chaining) hands a batch sent
    while its consumer is idle and nothing is queued straight to the consumer's `handle_batch`,
    in the sending task: no queue hop, no task switch, and the sender waits until the batch is
    handled (backpressure by construction). Anything else (a batch already in hand, messages
    queued, the consumer restarting in a partial reload, a stop marker) takes the queue, so
    per-wire order, retries, drain and detach stay those of the queue path.

    Counters: `sent` (accepted into the queue), `received` (finished: handled or dead-lettered),
    `failed` (handling attempts that raised), `redelivered` (retries), `dead_lettered` (messages
    that used up their attempts) and, of those, `dropped` when the gear had no `error` wire.
    """

    chainable: ClassVar[bool] = True

    def __init__(self, spec: WireSpec, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__(spec)
        opts = spec.options
        self.capacity = int(opts.get("queue_size") or queue_size)
        if self.capacity < 1:
            raise TransportError(f"wire {spec.key}: queue_size must be at least 1")
        self._items: deque[Message | _Stop | _Detach] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._consumer: asyncio.Task[Any] | None = None
        self._in_hand: list[Message] = []
        self._cursor = _Cursor(self)
        self._finished = 0  # of the batch in hand
        self._closed = False
        self._stop_pending = False  # the drain marker is queued but not yet taken
        self.chained = False  # hand batches to an idle consumer in the sender's task (see the class doc)
        self._delivery: Delivery | None = None  # the live consumer's, for a chained hand-over
        # Someone is handing messages to the consumer (its own task, or a sender of a chained
        # wire): the other waits, so the gear sees one batch at a time, in order.
        self._busy = False
        self._handing = False  # of which: a chained sender (it counts what it leaves if closed meanwhile)

    @property
    def depth(self) -> int:
        """Messages waiting: queued, plus those of the batch in hand the gear has not started (on a
        chained wire the batch in hand is usually the sender's own, handed over in its task)."""
        waiting = len(self._in_hand) - self._cursor.started
        return len(self._items) - (1 if self._stop_pending else 0) + (waiting if waiting > 0 else 0)

    def _occupied(self) -> int:
        waiting = len(self._in_hand) - self._cursor.started
        return len(self._items) + (waiting if waiting > 0 else 0)

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def _wake_putters(self) -> None:
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)

    async def _wait_room(self) -> None:
        putter = asyncio.get_running_loop().create_future()
        self._putters.append(putter)
        try:
            await putter
        except asyncio.CancelledError:
            if putter in self._putters:
                self._putters.remove(putter)
            raise

    def _idle_consumer(self) -> Delivery | None:
        """The consumer's delivery when a sender may hand over in its own task: chained, a
        consumer attached and idle, nothing queued (order) and nothing in hand."""
        if self.chained and not self._busy and not self._items and not self._in_hand and not self._closed:
            return self._delivery
        return None

    async def _hand_over(self, messages: Sequence[Message], delivery: Delivery) -> None:
        """Deliver `messages` (at most a batch of them) in this task, as the consumer would.

        Counted as sent and handled as a batch in hand is; if this task is cancelled part-way,
        what was not finished goes back to the front of the queue for the consumer's task."""
        batch = messages if type(messages) is list else list(messages)
        self.stats.sent += len(batch)
        self._busy = self._handing = True
        cursor = self._cursor = _Cursor(self)
        self._in_hand, self._finished = batch, 0
        try:
            await self._deliver_batch(batch, cursor, delivery)
            await self._flush_downstream(delivery)
        finally:
            left = len(batch) - self._finished
            if left and not self._closed:
                self._items.extendleft(reversed(batch[self._finished:]))
            elif left:
                self.stats.dropped += left
                log.warning("wire %s: closed with %d message(s) not handled; counted as dropped", self.spec.key,
                            left, extra={"wire": self.spec.key})
            self._in_hand, self._finished = [], 0
            self._cursor = _Cursor(self)
            self._busy = self._handing = False
            if self._items:
                self._wake_getter()  # queued meanwhile (or handed back): the consumer's task goes on
            if self._putters:
                self._wake_putters()

    async def send(self, message: Message) -> None:
        delivery = self._idle_consumer()
        if delivery is not None:
            await self._hand_over((message,), delivery)
            return
        items = self._items
        # inline _occupied(): this runs once per message per wire
        if self._closed or len(items) + len(self._in_hand) - self._cursor.started >= self.capacity:
            while True:
                if self._closed:
                    raise TransportError(f"memory wire {self.spec.key} is closed")
                if self._occupied() < self.capacity:
                    break
                await self._wait_room()  # waits while full: this is the backpressure
        items.append(message)
        self.stats.sent += 1
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def send_batch(self, messages: Sequence[Message]) -> None:
        """As many as there is room for at once, then wait for room for the rest (chained: handed
        to the idle consumer in this task, a batch of at most MAX_BATCH / queue_size at a time)."""
        i, n = 0, len(messages)
        while i < n:
            delivery = self._idle_consumer()
            if delivery is not None:
                step = min(MAX_BATCH, self.capacity)
                part = messages[i:i + step] if (i or step < n) else messages
                await self._hand_over(part, delivery)
                i += len(part)
                continue
            if self._closed:
                raise TransportError(f"memory wire {self.spec.key} is closed")
            room = self.capacity - self._occupied()
            if room <= 0:
                await self._wait_room()
                continue
            part = messages[i:i + room] if (i or room < n) else messages
            self._items.extend(part)
            self.stats.sent += len(part)
            i += len(part)
            self._wake_getter()

    async def flush(self) -> None:
        """Nothing to wait for: a message in the queue is as safe as memory gets."""

    async def _take(self) -> list[Message] | None:
        """What is queued (up to MAX_BATCH), waiting for something; None at the drain marker."""
        items = self._items
        while not items or self._busy:  # busy: a chained sender is handing a batch over
            getter = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                self._getter = None
        # No drain marker queued and no detach marker (always put in front): messages only,
        # taken as a slice at C speed.
        if not self._stop_pending and items[0] is not _DETACH:
            if len(items) <= MAX_BATCH:
                batch = list(items)  # type: ignore[arg-type]
                items.clear()
            else:
                popleft = items.popleft
                batch = [popleft() for _ in range(MAX_BATCH)]  # type: ignore[misc]
            return batch
        batch = []
        while items and len(batch) < MAX_BATCH:
            item = items.popleft()
            if item is _DETACH:
                if batch:
                    items.appendleft(item)
                    break
                return None
            if isinstance(item, _Stop):
                if batch:
                    items.appendleft(item)  # the batch first; the marker stays next
                    break
                if items:
                    items.append(item)  # sent after the drain began: handle them too
                    continue
                self._stop_pending = False
                return None
            batch.append(item)
        return batch

    async def consume(self, delivery: Delivery) -> None:
        if self._closed:
            raise TransportError(f"memory wire {self.spec.key} is closed")
        if self._consumer is not None and not self._consumer.done():
            raise TransportError(f"memory wire {self.spec.key} already has a consumer")
        self._consumer = asyncio.current_task()
        self._delivery = delivery
        try:
            await self._consume(delivery)
        finally:
            if self._delivery is delivery:
                self._delivery = None

    async def _consume(self, delivery: Delivery) -> None:
        if self._in_hand and not self._handing:
            # The previous consumer was cancelled mid-batch (a stop abandoned past its timeout):
            # what it had not finished goes first to this one instead of being lost unseen.
            self._items.extendleft(reversed(self._in_hand[self._finished:]))
            self._in_hand, self._finished = [], 0
            self._cursor = _Cursor(self)
        while True:
            batch = await self._take()
            if batch is None:
                return
            cursor = self._cursor = _Cursor(self)
            self._in_hand, self._finished = batch, 0
            self._busy = True
            try:
                await self._deliver_batch(batch, cursor, delivery)  # cancelled: close() counts what is left
                self._in_hand, self._finished = [], 0
                self._cursor = _Cursor(self)
                if self._putters:
                    self._wake_putters()
                if not self._items or (self._stop_pending and len(self._items) == 1):
                    await self._flush_downstream(delivery)
            finally:
                self._busy = False

    async def _flush_downstream(self, delivery: Delivery) -> None:
        """Idle: make what the gear emitted safe downstream (a no-op unless it feeds a durable
        wire), without paying for it on every message of a burst."""
        try:
            await delivery.flush_downstream()
        except Exception as exc:
            log.warning("wire %s: flushing downstream failed: %s", self.spec.key, exc, extra={"wire": self.spec.key})

    async def _deliver_batch(self, batch: list[Message], cursor: _Cursor, delivery: Delivery) -> None:
        """Hand the batch over; a message that fails is retried alone, in its place. Never raises."""
        n = len(batch)
        handle_batch = delivery.handle_batch
        while self._finished < n:
            done = self._finished
            if handle_batch is None or n - done == 1:
                cursor.advance_to(done + 1)
                await self._deliver(batch[done], delivery)
                self._finished = done + 1
                continue
            cursor.started = done
            handled, failure = await handle_batch(batch[done:] if done else batch, cursor)
            self.stats.received += handled
            self._finished = done + handled
            if failure is not None:
                cursor.started = self._finished + 1
                await self._deliver(batch[self._finished], delivery, failure)
                self._finished += 1

    async def _deliver(self, message: Message, delivery: Delivery, failure: Exception | None = None) -> None:
        """Handle (`failure`: the first attempt already failed); a failed attempt goes to the wire's
        retry policy, which answers with a delay before the next, or finishes it. Never raises."""
        attempt = 1
        while True:
            if failure is None:
                try:
                    await delivery.handle(message)
                    self.stats.received += 1
                    return
                except Exception as exc:
                    failure = exc
            delay = await self.retry.settle_failure(delivery, message, failure, attempt, self.stats, self.spec.key)
            if delay is None:
                return
            self.stats.redelivered += 1
            await asyncio.sleep(delay)
            attempt += 1
            failure = None

    async def drain(self) -> int:
        """Wait until every queued message and those in hand are finished, then stop consuming.

        Upstream must already be quiet (the runtime drains in topological order); a send that
        still arrives is handled too: the consumer only stops at the marker when nothing is
        queued behind it.
        """
        before = self.stats.received
        if self._consumer is None:
            # A consumer task created just before us has not run its first step yet; one turn of
            # the loop (tasks start in FIFO order) lets it register.
            await asyncio.sleep(0)
        consumer = self._consumer
        if consumer is None or consumer.done():
            left = self.depth
            if left:
                log.warning("wire %s: %d message(s) queued but no consumer to drain them", self.spec.key, left,
                            extra={"wire": self.spec.key})
            return 0
        if not self._stop_pending:
            while self._occupied() >= self.capacity and not consumer.done():
                await self._wait_room()
            self._items.append(_STOP)
            self._stop_pending = True
            self._wake_getter()
        # asyncio.wait, not `await consumer`: if the caller's timeout cancels us, the consumer
        # must not be cancelled mid-message by that; close() decides what happens next.
        await asyncio.wait({consumer})
        return self.stats.received - before

    async def detach(self) -> None:
        """Stop the consumer after the batch in hand; what is queued stays for the next consume()
        (a partial reload restarting the downstream gear while the upstream keeps sending)."""
        if self._consumer is None:
            await asyncio.sleep(0)  # a consumer task created just before us registers first
        consumer = self._consumer
        if consumer is None or consumer.done():
            return
        self._items.appendleft(_DETACH)
        self._wake_getter()
        try:
            await asyncio.wait({consumer})
        finally:  # the consumer ended otherwise (close, or cancelled by an abandoned stop)
            with contextlib.suppress(ValueError):
                self._items.remove(_DETACH)

    async def close(self) -> None:
        """Stop at once; whatever is still queued or in hand is counted (and logged) as dropped."""
        if self._closed:
            return
        self._closed = True
        consumer = self._consumer
        if consumer is not None and not consumer.done() and consumer is not asyncio.current_task():
            consumer.cancel()
            try:
                await consumer
            except (asyncio.CancelledError, Exception):
                pass
        lost = sum(1 for item in self._items if isinstance(item, Message))
        if not self._handing:  # a chained sender's batch: it counts what it leaves itself
            lost += len(self._in_hand) - self._finished
            self._in_hand, self._finished = [], 0
        self._items.clear()
        self._stop_pending = False
        self._wake_putters()  # a sender waiting for room gets "closed" instead of waiting forever
        if lost:
            self.stats.dropped += lost
            log.warning("wire %s: closed with %d message(s) not handled; counted as dropped", self.spec.key,
                        lost, extra={"wire": self.spec.key})

    def status(self) -> MemoryWireStatus:
        consuming = self._consumer is not None and not self._consumer.done()
        return MemoryWireStatus(**self.status_fields(), in_queue=self.depth, capacity=self.capacity,
                                max_deliver=self.retry.max_attempts, retry_delay=self.retry.delay,
                                consuming=consuming, chained=self.chained)


class MemoryBroker(Broker):
    """Memory wires need no connection and nothing prepared; the broker only hands out queues."""

    kind: ClassVar[str] = "memory"

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise TransportError("memory queue size must be at least 1")
        self.queue_size = queue_size
        self.wires_created = 0

    def wire(self, scenario: Scenario, scenario_hash: str, spec: WireSpec) -> MemoryWire:
        self.wires_created += 1
        return MemoryWire(spec, queue_size=self.queue_size)

    def status(self) -> MemoryBrokerStatus:
        return MemoryBrokerStatus(self.kind, queue_size=self.queue_size, wires_created=self.wires_created)
