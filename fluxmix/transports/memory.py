"""In-memory wires: one bounded asyncio.Queue per wire, inside the mixer process.

The bound is the whole point: a slow consumer makes `send()` wait, so backpressure travels
upstream to the source instead of memory growing without limit. Nothing is dropped on the way;
the only messages a memory wire can lose are those still queued when it is closed without a
drain (an abandoned activation or a stop that timed out), and those are counted as `dropped`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from fluxmix.errors import TransportError
from fluxmix.message import Message
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.transports.base import Broker, Delivery, Wire

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1024
DEFAULT_MAX_DELIVER = 5
DEFAULT_RETRY_DELAY = 0.05
# Retries back off exponentially from retry_delay up to this (or retry_delay itself when larger):
# long enough to ride out a short outage downstream, short enough that a drain stays bounded.
MAX_RETRY_DELAY = 5.0


class _Stop:
    """Queued by drain() behind the last real message, so the consumer ends between messages."""


_STOP = _Stop()


class MemoryWire(Wire):
    """A bounded queue between one upstream port and one downstream port.

    Counters: `sent` (accepted into the queue), `received` (finished: handled or dead-lettered),
    `failed` (handling attempts that raised), `redelivered` (retries), `dead_lettered` (messages
    that used up their attempts) and, of those, `dropped` when the gear had no `error` wire.
    """

    def __init__(self, spec: WireSpec, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__(spec)
        opts = spec.options
        self.capacity = int(opts.get("queue_size") or queue_size)
        if self.capacity < 1:
            raise TransportError(f"wire {spec.key}: queue_size must be at least 1")
        self.max_deliver = max(1, int(opts.get("max_deliver", DEFAULT_MAX_DELIVER)))
        self.retry_delay = max(0.0, float(opts.get("retry_delay", DEFAULT_RETRY_DELAY)))
        self._queue: asyncio.Queue[Message | _Stop] = asyncio.Queue(maxsize=self.capacity)
        self._consumer: asyncio.Task[Any] | None = None
        self._in_hand: Message | None = None
        self._closed = False
        self._stop_pending = False  # the drain marker is queued but not yet taken

    @property
    def depth(self) -> int:
        """Messages waiting in the queue (the one being handled is not counted)."""
        return self._queue.qsize() - (1 if self._stop_pending else 0)

    async def send(self, message: Message) -> None:
        if self._closed:
            raise TransportError(f"memory wire {self.spec.key} is closed")
        await self._queue.put(message)  # waits while full: this is the backpressure
        self.stats.sent += 1

    async def flush(self) -> None:
        """Nothing to wait for: a message in the queue is as safe as memory gets."""

    async def consume(self, delivery: Delivery) -> None:
        if self._closed:
            raise TransportError(f"memory wire {self.spec.key} is closed")
        if self._consumer is not None and not self._consumer.done():
            raise TransportError(f"memory wire {self.spec.key} already has a consumer")
        self._consumer = asyncio.current_task()
        queue = self._queue
        while True:
            item = await queue.get()
            try:
                if isinstance(item, _Stop):
                    self._stop_pending = False
                    return
                self._in_hand = item
                await self._deliver(item, delivery)
                self._in_hand = None
                if queue.empty():
                    # Idle: make what the gear emitted safe downstream (a no-op unless it feeds a
                    # durable wire), without paying for it on every message of a burst.
                    try:
                        await delivery.flush_downstream()
                    except Exception as exc:
                        log.warning("wire %s: flushing downstream failed: %s", self.spec.key, exc,
                                    extra={"wire": self.spec.key})
            finally:
                queue.task_done()

    async def _deliver(self, message: Message, delivery: Delivery) -> None:
        """Handle with retries; after the last failed attempt, dead-letter. Never raises."""
        attempt = 1
        while True:
            try:
                await delivery.handle(message)
            except Exception as exc:
                self.stats.failed += 1
                if attempt < self.max_deliver:
                    self.stats.redelivered += 1
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                self.stats.dead_lettered += 1
                try:
                    forwarded = await delivery.dead_letter(message, exc)
                except Exception as dl_exc:  # the error port itself failed: count, never crash
                    forwarded = False
                    log.error("wire %s: dead-lettering message %s failed: %s", self.spec.key, message.id,
                              dl_exc, extra={"wire": self.spec.key})
                if forwarded is False:
                    self.stats.dropped += 1
            self.stats.received += 1
            return

    def _backoff(self, attempt: int) -> float:
        cap = max(self.retry_delay, MAX_RETRY_DELAY)
        return min(self.retry_delay * (2 ** (attempt - 1)), cap)

    async def drain(self) -> int:
        """Wait until every queued message and the one in hand are finished, then stop consuming.

        Upstream must already be quiet (the runtime drains in topological order); a send that
        still arrives is handled too, because the stop marker only goes in behind it.
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
        while True:
            await self._queue.join()
            try:
                self._queue.put_nowait(_STOP)
                self._stop_pending = True
                break
            except asyncio.QueueFull:  # a late send filled it again: keep draining
                continue
        # asyncio.wait, not `await consumer`: if the caller's timeout cancels us, the consumer
        # must not be cancelled mid-message by that; close() decides what happens next.
        await asyncio.wait({consumer})
        return self.stats.received - before

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
        lost = self.depth + (1 if self._in_hand is not None else 0)
        self._in_hand = None
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        if lost:
            self.stats.dropped += lost
            log.warning("wire %s: closed with %d message(s) not handled; counted as dropped", self.spec.key,
                        lost, extra={"wire": self.spec.key})

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "in_queue": self.depth,
            "capacity": self.capacity,
            "max_deliver": self.max_deliver,
            "retry_delay": self.retry_delay,
            "consuming": self._consumer is not None and not self._consumer.done(),
        }


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

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "queue_size": self.queue_size, "wires_created": self.wires_created}
