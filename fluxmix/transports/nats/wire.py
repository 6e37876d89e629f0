"""One standard wire: a pipelined publisher on its subject, a pull consumer on its durable.

Delivery guarantee: at least once across a wire. A message is acked only after the downstream gear
handled it AND whatever the gear emitted is itself flushed (stored by JetStream, or refused and
handed to the error port). Duplicates are suppressed where ids repeat: publishes carry
`Nats-Msg-Id`, ids are deterministic (sources: scenario/gear/seq; derived messages: a hash of the
parent id), so a replay after a crash or a redelivery re-publishes the same ids and JetStream drops
them inside the duplicate window. What remains is a side effect of the final gear (e.g. a file
line) for a message that was handled but not yet acked when the mixer died: sinks de-duplicate by
message id when they need exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import nats.js.errors

from fluxmix.errors import TransportError
from fluxmix.message import Message
from fluxmix.scenario import WireSpec
from fluxmix.status import DurableWireStatus
from fluxmix.transports.base import Delivery, Wire
from fluxmix.transports.nats.consumer import PullConsumer
from fluxmix.transports.nats.errors import PublishRefused
from fluxmix.transports.nats.naming import consumer_name, msg_id, stream_name, wire_subject
from fluxmix.transports.nats.provisioning import ensure_consumer, ensure_stream
from fluxmix.transports.nats.publisher import Publisher

if TYPE_CHECKING:
    from fluxmix.transports.nats.broker import NatsBroker

log = logging.getLogger("fluxmix.transports.nats")



class NatsWire(Wire):
    durable = True

    def __init__(self, broker: NatsBroker, scenario_name: str, spec: WireSpec) -> None:
        super().__init__(spec)
        self.broker = broker
        self.scenario_name = scenario_name
        self.stream = stream_name(scenario_name)
        self.subject = wire_subject(scenario_name, spec)
        self.consumer = consumer_name(spec)
        backlog = spec.options.get("backlog")
        self.backlog_bound: int | None = int(backlog) if backlog is not None else None
        self.publisher = Publisher(
            broker.connection,
            self.subject,
            label=spec.key,
            window=broker.max_in_flight,
            ack_timeout=broker.ack_timeout,
            on_refused=self._refused,
            stats=self.stats,
            bound=self.backlog_bound,
            count_backlog=self._count_backlog,
            fast=broker.settings.batched,
        )
        self._puller: PullConsumer | None = None
        self._consume_task: asyncio.Task[Any] | None = None
        self._consume_done = asyncio.Event()
        self._consume_done.set()
        self._stopping = False
        self._closed = False
        self._info: dict[str, Any] = {}
        self._info_at = 0.0
        self._info_task: asyncio.Task[None] | None = None

    @property
    def wire_id(self) -> str:
        return self.consumer

    # the publisher's and consumer's counters under the wire's name (status, tests)
    @property
    def duplicates(self) -> int:
        return self.publisher.duplicates

    @property
    def publish_retries(self) -> int:
        return self.publisher.resent

    @property
    def acked(self) -> int:
        return self.stats.received

    # sending ------------------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        """Publish, waiting while NATS is down or `max_in_flight` publishes await their PubAck."""
        await self.publisher.publish(message, message.encode(), msg_id(self.wire_id, message.id))

    async def send_batch(self, messages: Sequence[Message]) -> None:
        """Publish in order: one call into the publisher for the batch (slots taken together)."""
        wire_id = self.wire_id
        await self.publisher.publish_many([(m, m.encode(), msg_id(wire_id, m.id)) for m in messages])

    async def flush(self) -> None:
        await self.publisher.flush()

    async def _refused(self, message: Message, error: PublishRefused) -> None:
        """A message JetStream will never store: to the emitting gear's error port, else a counted drop."""
        handler = self.on_refused
        forwarded = await handler(message, error) if handler is not None else False
        self.stats.dead_lettered += 1
        if forwarded is False:
            self.stats.dropped += 1

    # consuming ----------------------------------------------------------------------------------
    async def consume(self, delivery: Delivery) -> None:
        self._consume_task = asyncio.current_task()
        self._consume_done.clear()
        broker = self.broker
        puller = self._puller = PullConsumer(
            broker.connection,
            self.stream,
            self.consumer,
            self.stats,
            label=self.spec.key,
            credit=broker.batch_size,
            retry=self.retry,
            ack_wait=broker.ack_wait,
            recreate=self._check_consumer,
            on_consumed=self.publisher.consumed,
        )
        if self._stopping:
            puller.stop()
        try:
            await puller.run(delivery)
        finally:
            self._consume_done.set()

    async def _count_backlog(self) -> int:
        """This wire's messages in the stream: not yet delivered plus delivered and not yet acked."""
        info = await self.broker.connection.jetstream().consumer_info(self.stream, self.consumer)
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def _check_consumer(self) -> None:
        """Make sure the durable exists: `nats consumer rm` on a live wire must not stop it silently."""
        js = self.broker.connection.jetstream()
        try:
            await js.consumer_info(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            log.warning("wire %s: consumer %s was removed; re-creating it", self.spec.key, self.consumer)
            await ensure_stream(js, self.broker.settings, self.scenario_name)
            await ensure_consumer(js, self.broker.settings, self.scenario_name, self.spec)

    async def drain(self) -> int:
        """Stop pulling, finish what is in hand (handle, flush, ack), flush publishes; never purge."""
        self._stopping = True
        if self._puller is not None:
            self._puller.stop()
        if self._consume_task is not None and not self._consume_done.is_set():
            await self._consume_done.wait()
        if not self._closed:
            with contextlib.suppress(TransportError, TimeoutError):
                await asyncio.wait_for(self.flush(), self.broker.ack_timeout * 4)
        return self._puller.drained if self._puller is not None else 0

    async def detach(self) -> None:
        """Stop pulling and finish what is in hand (handled, flushed, acked); the rest stays in the
        stream and the same wire may consume() again (a partial reload restarting its downstream)."""
        if self._consume_task is None:
            await asyncio.sleep(0)  # a consumer task created just before us registers first
        if self._puller is not None:
            self._puller.stop()
        if self._consume_task is not None and not self._consume_done.is_set():
            await self._consume_done.wait()

    async def close(self) -> None:
        self._stopping = True
        self._closed = True
        if self._puller is not None:
            self._puller.stop()
        task = self._consume_task
        if task is not None and not self._consume_done.is_set() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._consume_done.wait(), 5.0)
        await self.publisher.close()
        if self._info_task is not None:
            self._info_task.cancel()
        self.broker._forget(self)

    # status -------------------------------------------------------------------------------------
    def status(self) -> DurableWireStatus:
        now = time.monotonic()
        if now - self._info_at > 1.0 and (self._info_task is None or self._info_task.done()):
            self._info_at = now
            with contextlib.suppress(RuntimeError):  # no running loop: report what we have
                self._info_task = asyncio.get_running_loop().create_task(self._refresh_info())
        publisher = self.publisher
        return DurableWireStatus(
            **self.status_fields(), stream=self.stream, subject=self.subject, consumer=self.consumer,
            in_flight=publisher.in_flight, publish_retries=publisher.resent, duplicates=publisher.duplicates,
            refused=publisher.refused, last_refusal=publisher.last_refusal,
            full=publisher.full_since is not None or publisher.at_bound, publish_batches=publisher.fast_batches,
            backlog=publisher.backlog if publisher.bound is not None else None, backlog_bound=publisher.bound,
            **self._info,  # pending, ack_pending, server_redelivered once the first info came
        )

    async def _refresh_info(self) -> None:
        connection = self.broker.connection
        if connection.js is None or not connection.is_connected:
            return
        try:
            info = await asyncio.wait_for(connection.js.consumer_info(self.stream, self.consumer), 2.0)
        except Exception:
            return
        self._info = {
            "pending": info.num_pending or 0,  # lag: in the stream, not yet delivered
            "ack_pending": info.num_ack_pending or 0,
            "server_redelivered": info.num_redelivered or 0,
        }
