"""Callback-driven pull consumer for one wire's durable, with a stop that takes one round trip.

Why not `PullSubscription.fetch()`: a fetch collects messages in a local list, so it cannot be
cancelled without stranding what it took until `ack_wait`; a drain had to wait for the held
request to expire (~0.5 s on every reload), and each batch cost a round trip. Here pull requests
are plain core requests to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with one inbox
subscription as the reply subject (a "generation"):

- credit: at most `credit` messages are requested-and-undelivered or delivered-and-unsettled;
  requests of `credit/4` go out whenever that much credit is free, so messages keep flowing
  while a round is handled, and a slow gear gets no more than `credit` in hand;
- a round = the messages delivered so far (at most half the credit): each is handled by the
  downstream gear, then the gear's emits are flushed, and only then the round is acked. A
  failure goes to the wire's `RetryPolicy` with JetStream's delivery count as the attempt: it is
  NAKed with the delay the policy answers, or TERMed once the policy dead-lettered it (the
  consumer itself has no max_deliver, so the server never drops a message before the policy);
- liveness: requests carry `expires` and `idle_heartbeat`; the broker tells us of a reconnect
  and we re-pull at once on a fresh inbox; silence for two heartbeats re-pulls as well, and a
  "consumer deleted" / "no responders" status re-creates the durable first;
- stop (drain): no new requests, finish the round in hand, then retire the inbox with a fenced
  drain (below), handle what was already delivered to us, and fence once more so every ack has
  reached the server. Nothing is left for `ack_wait`, nothing is handled after drain returns.

The fenced drain (nats-py 2.16's `flush()` is not a fence: it writes PING straight to the socket
while PUB/UNSUB wait in the client's pending buffer, so `Subscription.drain()` alone can finish
before the server saw the UNSUB and drop deliveries still on their way):
  1. publish a marker to our own inbox; the subscription callback parks on the first message it
     takes after that, so drain()'s wait for the subscription queue cannot finish early;
  2. start `sub.drain()` (its UNSUB enters the pending buffer), then publish to a second inbox of
     ours and wait for it: it travels behind the UNSUB, so when it returns the server has
     processed the UNSUB and everything it delivered before is in our queue;
  3. open the gate: the callback moves what was queued into the ready list and drain() ends.
     A message the server picks for our requests after the UNSUB finds no interest and goes
     straight back to its redelivery queue (no `ack_wait`). Until the next pull takes it (first,
     at once), consumer info counts it as ack-pending, up to the whole credit; it arrives counted
     as one more delivery (tests/test_nats_consumer_stop.py measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from fluxmix.message import Message
from fluxmix.retry import RetryPolicy
from fluxmix.transports.base import BatchCursor, Delivery, WireStats
from fluxmix.transports.nats.connection import NatsConnection
from fluxmix.transports.nats.errors import describe

log = logging.getLogger("fluxmix.transports.nats")

FENCE_HEADER = "Fluxmix-Fence"
ACK, NAK, TERM, WPI = b"+ACK", b"-NAK", b"+TERM", b"+WPI"
FENCE_TIMEOUT = 5.0


def _nak(delay: float) -> bytes:
    """A NAK asking JetStream to redeliver after `delay` seconds."""
    return b'-NAK {"delay":%d}' % int(delay * 1e9)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def delivery_count(reply: str) -> int:
    """How often JetStream delivered this message, from its ack subject (v1 or v2 form)."""
    tokens = reply.split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 1


class _Generation:
    """One inbox subscription and the pull requests sent on it."""

    __slots__ = ("inbox", "sub", "marker", "gate")

    def __init__(self, inbox: str) -> None:
        self.inbox = inbox
        self.sub: Any = None
        self.marker: asyncio.Future[None] | None = None
        self.gate: asyncio.Future[None] | None = None


class PullConsumer:
    def __init__(
        self,
        conn: NatsConnection,
        stream: str,
        consumer: str,
        stats: WireStats,
        *,
        label: str,
        credit: int,
        retry: RetryPolicy,
        ack_wait: float,
        recreate: Callable[[], Awaitable[None]],
        on_consumed: Callable[[int], None] | None = None,
        expires: float = 30.0,
        idle_heartbeat: float = 5.0,
    ) -> None:
        self.conn = conn
        self.stats = stats
        self.label = label
        self.credit = max(1, credit)
        self.batch = max(1, self.credit // 4)
        self.round_max = max(1, self.credit // 2)
        self.retry = retry
        self.ack_wait = ack_wait
        self.recreate = recreate
        self.on_consumed = on_consumed  # told how many messages left the stream (acked or terminated)
        self.idle_heartbeat = min(idle_heartbeat, expires / 2)
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.request = json.dumps(
            {"batch": self.batch, "expires": int(expires * 1e9), "idle_heartbeat": int(self.idle_heartbeat * 1e9)}
        ).encode()
        self.stopping = False
        self.drained = 0  # handled after stop was asked
        self.repulls = 0
        self.silence_repulls = 0  # re-pulls the watchdog made after two heartbeats of silence
        self.requests = 0
        self._ready: deque[Msg] = deque()
        self._round: list[Msg] = []
        self._held = 0  # delivered to us and not yet acked / naked / terminated
        self._requested = 0  # asked for on the current generation and not delivered yet
        self._gen: _Generation | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Future[None] | None = None
        self._repull_wanted = False
        self._check_wanted = False
        self._activity = 0
        self._fence_sub: Any = None
        self._fence_inbox = ""
        self._fences: dict[int, asyncio.Future[None]] = {}
        self._fence_no = itertools.count(1)

    # the loop ----------------------------------------------------------------------------------
    async def run(self, delivery: Delivery) -> None:
        """Consume until stop(); returns after the fenced drain, raises when NATS closed for good."""
        unregister = self.conn.on_change(self._on_reconnect)
        keepalive = asyncio.get_running_loop().create_task(self._keep_alive(), name=f"nats-inprogress {self.label}")
        finished = False
        try:
            await self._loop(delivery)
            await self._shutdown(delivery)
            finished = True
        finally:
            unregister()
            keepalive.cancel()
            if not finished:  # cancelled (close() without drain) or failed: hand back what we hold
                await self._abandon()

    async def _loop(self, delivery: Delivery) -> None:
        conn = self.conn
        tick = min(0.25, self.idle_heartbeat / 2)
        seen, quiet = self._activity, 0.0
        while not self.stopping:
            if not conn.is_connected:
                if conn.state == "closed":
                    await conn.wait_connected()  # raises: closed for good
                with contextlib.suppress(TimeoutError):
                    await conn.wait_connected(timeout=0.25)  # short, so a drain while NATS is down returns
                quiet = 0.0
                continue
            if self._fence_sub is None:
                nc = conn.client()
                self._fence_inbox = nc.new_inbox()
                self._fence_sub = await nc.subscribe(self._fence_inbox, cb=self._on_fence)
            if self._check_wanted:
                self._check_wanted = False
                await self._recreate()
                self._repull_wanted = True
            if self._gen is None or self._repull_wanted:
                await self._new_generation()
                seen, quiet = self._activity, 0.0
            await self._refill()
            if self._ready and conn.is_connected:
                # never while disconnected: the acks could not leave, and a gear that records what
                # it acked (file-out) would believe rounds acked that come back after ack_wait
                await self._handle_round(delivery)
                continue
            await self._wait(tick)
            if self._activity != seen or self._requested == 0:
                seen, quiet = self._activity, 0.0  # nothing asked for: no heartbeat is owed
            else:
                quiet += tick
                if quiet >= 2 * self.idle_heartbeat:
                    log.info("wire %s: no heartbeat for %.0fs; pulling again", self.label, quiet)
                    self.silence_repulls += 1
                    self._check_wanted = True
                    seen, quiet = self._activity, 0.0

    async def _wait(self, timeout: float) -> None:
        # a bare future with a timer, not asyncio.wait_for(): a delivery wakes the loop in one
        # event-loop step instead of two (the latency of a lone message at a low rate)
        loop = asyncio.get_running_loop()
        fut = self._wakeup = loop.create_future()
        timer = loop.call_later(timeout, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._wakeup = None

    def _wake(self) -> None:
        fut = self._wakeup
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_reconnect(self) -> None:
        self._repull_wanted = True
        self._wake()

    def stop(self) -> None:
        self.stopping = True
        self._wake()

    # pull requests -----------------------------------------------------------------------------
    async def _refill(self) -> None:
        gen = self._gen
        if gen is None or self.stopping:
            return
        nc = self.conn.client()
        while self.credit - self._requested - self._held >= self.batch:
            self._requested += self.batch
            self.requests += 1
            await nc.publish(self.next_subject, self.request, reply=gen.inbox)

    async def _new_generation(self) -> None:
        self._repull_wanted = False
        old = self._gen
        if old is not None:
            self.repulls += 1
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        nc = self.conn.client()
        gen = _Generation(nc.new_inbox())

        async def on_msg(msg: Msg, gen: _Generation = gen) -> None:
            await self._on_msg(msg, gen)

        gen.sub = await nc.subscribe(gen.inbox, cb=on_msg, pending_msgs_limit=0, pending_bytes_limit=0)
        self._gen = gen
        self._requested = 0
        self._activity += 1

    async def _on_msg(self, msg: Msg, gen: _Generation) -> None:
        self._activity += 1
        marker = gen.marker
        if marker is not None and not marker.done():  # this inbox is being retired: park (see module doc)
            marker.set_result(None)
            assert gen.gate is not None
            await gen.gate
        if not msg.reply:  # a status (heartbeat, request ended, error) or our own marker
            headers = msg.headers or {}
            if FENCE_HEADER not in headers and gen is self._gen:
                self._on_status(headers)
            return
        if gen is self._gen:
            self._requested -= 1
        self._held += 1
        self._ready.append(msg)
        self._wake()

    def _on_status(self, headers: dict[str, str]) -> None:
        code = headers.get("Status", "")
        if code == "100":
            return  # idle heartbeat: counted as activity
        description = headers.get("Description", "")
        left = headers.get("Nats-Pending-Messages")
        if left is not None:  # 408 expired / 409 batch completed ...: what it did not deliver
            self._requested = max(0, self._requested - int(left))
        elif code == "503" or "Deleted" in description:  # no responders / consumer deleted
            log.warning("wire %s: pull refused (%s %s); checking the consumer", self.label, code, description)
            self._requested = 0
            self._check_wanted = True
        elif code == "409" and "Leadership Change" in description:
            self._repull_wanted = True
        else:  # refused request (max waiting, ...): not registered; the watchdog asks again
            log.debug("wire %s: pull status %s %s", self.label, code, description)
            self._requested = max(0, self._requested - self.batch)
        self._wake()

    async def _recreate(self) -> None:
        try:
            await self.recreate()
        except Exception as exc:  # the next silence or status tries again
            log.error("wire %s: checking the consumer failed: %s", self.label, describe(exc))
            await asyncio.sleep(0.5)

    # handling ----------------------------------------------------------------------------------
    async def _handle_round(self, delivery: Delivery) -> None:
        ready, todo = self._ready, self._round
        while ready and len(todo) < self.round_max:
            todo.append(ready.popleft())
        nc = self.conn.client()
        settled: list[tuple[str, bytes]] = []
        stats = self.stats
        try:
            decoded: list[tuple[Message, str, int]] = []
            for raw in todo:
                reply = raw.reply
                delivered = delivery_count(reply)
                if delivered > 1:
                    stats.redelivered += 1
                try:
                    decoded.append((Message.decode(raw.data), reply, delivered))
                except Exception as exc:
                    stats.dropped += 1
                    log.error("wire %s: dropping an undecodable message (%s); terminated", self.label, exc)
                    settled.append((reply, TERM))
            if delivery.handle_batch is not None and len(decoded) > 1:
                await self._handle_batch(delivery, decoded, settled)
            else:
                for message, reply, delivered in decoded:
                    try:
                        await delivery.handle(message)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        await self._failed(delivery, message, reply, delivered, exc, settled)
                        continue
                    self._handled(reply, settled)
            # ack only once what the gear emitted is as safe as its wires make it
            try:
                await delivery.flush_downstream()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("wire %s: downstream flush failed (%s); %d messages will be redelivered",
                          self.label, exc, len(todo))
                settled = [(reply, _nak(self.retry.delay)) for reply, _ in settled]
                for reply, verdict in settled:
                    await nc.publish(reply, verdict)
                self._held -= len(todo)
                todo.clear()
                await asyncio.sleep(self.retry.delay)
                return
            for reply, verdict in settled:
                await nc.publish(reply, verdict)
            self._held -= len(todo)
            todo.clear()
            if self.on_consumed is not None:
                self.on_consumed(sum(1 for _, verdict in settled if verdict is ACK or verdict is TERM))
        except asyncio.CancelledError:
            done = {reply for reply, verdict in settled if verdict is not ACK}  # naks/terms are final too
            for reply, verdict in settled:
                if reply in done:
                    with contextlib.suppress(Exception):
                        await nc.publish(reply, verdict)
            self._round = [raw for raw in todo if raw.reply not in done]
            self._held -= len(todo) - len(self._round)
            raise

    async def _handle_batch(self, delivery: Delivery, decoded: list[tuple[Message, str, int]],
                            settled: list[tuple[str, bytes]]) -> None:
        """The round as batches (the gear's handle_batch: one call, its emits sent as one batch per
        wire); a failing message is settled alone (nak / dead letter) and the rest handed over again."""
        assert delivery.handle_batch is not None
        cursor = BatchCursor()
        at = 0
        while at < len(decoded):
            rest = decoded[at:]
            handled, failure = await delivery.handle_batch([m for m, _, _ in rest], cursor)
            for _, reply, _ in rest[:handled]:
                self._handled(reply, settled)
            at += handled
            if failure is None:
                break
            message, reply, delivered = decoded[at]
            await self._failed(delivery, message, reply, delivered, failure, settled)
            at += 1

    def _handled(self, reply: str, settled: list[tuple[str, bytes]]) -> None:
        self.stats.received += 1
        settled.append((reply, ACK))
        if self.stopping:
            self.drained += 1

    async def _failed(self, delivery: Delivery, message: Message, reply: str, delivered: int, exc: BaseException,
                      settled: list[tuple[str, bytes]]) -> None:
        """One message's handling raised: the policy answers NAK-with-delay, or it dead-lettered it (TERM)."""
        delay = await self.retry.settle_failure(delivery, message, exc, delivered, self.stats, self.label)
        settled.append((reply, TERM if delay is None else _nak(delay)))

    async def _keep_alive(self) -> None:
        """Tell JetStream a slow message is still being worked on, so ack_wait does not redeliver it."""
        interval = max(1.0, self.ack_wait / 3)
        before: set[str] = set()
        while True:
            await asyncio.sleep(interval)
            now = {raw.reply for raw in itertools.chain(self._round, self._ready)}
            if self.conn.is_connected:
                for reply in now & before:
                    with contextlib.suppress(Exception):
                        await self.conn.client().publish(reply, WPI)
            before = now

    # stopping ----------------------------------------------------------------------------------
    async def _fence(self) -> None:
        """One round trip that keeps its place in line behind everything published before it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        token = next(self._fence_no)
        self._fences[token] = fut
        try:
            await self.conn.client().publish(self._fence_inbox, str(token).encode())
            await asyncio.wait_for(fut, FENCE_TIMEOUT)
        finally:
            self._fences.pop(token, None)

    async def _on_fence(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            fut = self._fences.get(int(msg.data or 0))
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _retire(self, gen: _Generation) -> None:
        """Fenced drain of one generation's inbox (see the module doc)."""
        sub = gen.sub
        if not self.conn.is_connected or self._fence_sub is None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # deliveries in flight come back after ack_wait
            return
        loop = asyncio.get_running_loop()
        gen.marker = loop.create_future()
        gen.gate = loop.create_future()
        nc = self.conn.client()
        drain: asyncio.Task[None] | None = None
        try:
            await nc.publish(gen.inbox, b"", headers={FENCE_HEADER: "1"})
            await asyncio.wait_for(asyncio.shield(gen.marker), FENCE_TIMEOUT)  # the callback is parked
            drain = loop.create_task(sub.drain())
            await asyncio.sleep(0)  # drain()'s first step has put UNSUB in the pending buffer
            await self._fence()  # the server processed the UNSUB; all it delivered before is queued
        except Exception as exc:
            log.warning("wire %s: fenced drain of a pull inbox failed: %s", self.label, describe(exc))
        finally:
            if not gen.gate.done():
                gen.gate.set_result(None)
        if drain is None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drain, FENCE_TIMEOUT)

    async def _shutdown(self, delivery: Delivery) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            await self._retire(gen)
        if self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)
        while self._ready and self.conn.is_connected:  # delivered before the UNSUB took effect: in hand, so handled
            await self._handle_round(delivery)
        if self._ready:  # NATS is unreachable: not handled, JetStream redelivers them after ack_wait
            log.warning("wire %s: stopping while NATS is %s; %d message(s) in hand are left for redelivery",
                        self.label, self.conn.state, len(self._ready))
            self._held -= len(self._ready)
            self._ready.clear()
        if self._fence_sub is not None:
            if self.conn.is_connected:
                with contextlib.suppress(Exception):
                    await self._fence()  # every ack has reached the server
            with contextlib.suppress(Exception):
                await self._fence_sub.unsubscribe()
            self._fence_sub = None

    async def _abandon(self) -> None:
        """Cancelled or failed: NAK what we hold so it is redelivered now, not after ack_wait."""
        held = list(itertools.chain(self._round, self._ready))
        self._round, self._ready = [], deque()
        self._held = 0
        nc = self.conn.nc
        if nc is not None and self.conn.is_connected:
            for raw in held:
                with contextlib.suppress(Exception):
                    await nc.publish(raw.reply, NAK)
        for gen in [self._gen]:
            if gen is not None:
                with contextlib.suppress(Exception):
                    await gen.sub.unsubscribe()
        self._gen = None
        for task in list(self._retiring):
            task.cancel()
        if self._fence_sub is not None:
            with contextlib.suppress(Exception):
                await self._fence_sub.unsubscribe()
            self._fence_sub = None

