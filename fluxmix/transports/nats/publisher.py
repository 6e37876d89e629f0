"""Pipelined JetStream publishing for one wire: a window of core publishes, one outcome each.

Why not `js.publish_async()`: nats-py 2.16 never resolves its future when JetStream refuses a
message (the wire hung forever) and it costs about half the throughput of a plain publish. Here
every message is a core `PUB <subject> <reply>` with `Nats-Msg-Id`, its PubAck arrives on one
wildcard reply subscription of the wire, and:

- at most `window` messages await their PubAck; `publish()` waits for a slot (backpressure);
- no PubAck within `ack_timeout` (a lost ack, a reconnect): the same bytes go out again with the
  same `Nats-Msg-Id`, so JetStream stores the message once (inside its duplicate window);
- a retriable reply (leader election, no responders, insufficient resources, a full stream or a
  full wire with discard-new) is resent after a backoff, for as long as it takes: backpressure,
  never loss;
- a refusal for good (payload over the server's or the stream's maximum, ...) fails that one
  message at once: its slot is freed, `on_refused(message, error)` runs (the runtime sends it to
  the emitting gear's `error` port or counts a drop) and the wire keeps flowing;
- with a per-wire `bound` (the scenario's `backlog:` wire option), at most `bound` messages of
  the wire are in its stream or on their way there: stored ones are counted as their PubAck
  arrives and uncounted as the wire's consumer acks (or terminates) them, so a wire at its bound
  blocks its producer and resumes as soon as its consumer frees room. The count starts from the
  server's (consumer info) and is taken from the server again while a producer waits at the
  bound for over a second (a consumer elsewhere may have taken messages).

Which publishes carry a server-side id: all of them, on every wire (decided for issue 17). A
publish can be repeated on any wire, not only by a replaying source: a PubAck lost to a
reconnect makes the sweeper resend, and a parent redelivered after a crash or a failed flush
makes its gear emit the same derived messages again. Without the id those copies reach the next
gear, and only a de-duplicating sink at the very end absorbs them: a counting or aggregating
gear in between, or a `log` sink, would see them. What an id costs is server memory for the
duplicate window (rate x window x ~300 B), so the window is sized to what it must cover
(`provisioning.duplicate_window_for`: ack wait + a restart allowance, 60 s by default) rather
than ids being dropped; and 15-25% of publish CPU, measured by the bench.

Fast-ingest batches (`publish_many`, the runtime's send of what a gear emitted in one batch): a
run of FAST_MIN..FAST_MAX messages goes out as one ADR-50 fast-ingest batch, each message with its
own Nats-Msg-Id, committed by its last message (so nothing is held open for more input: a lone
emit is a plain publish). JetStream answers the batch with one PubAck (`count`: the first N are
stored) instead of one per message, which was a third of nats-py's per-message work. It stops a
batch at the first message it cannot store: a refusal for good fails that message as above, a
retriable answer backs it off, and every message behind it is resent one by one with the same id,
in order. No PubAck within `ack_timeout`: the per-message resend. A stream without batches
(err_code 10205) turns batching off for the wire. A batch whose publish raises mid-send (the
client's buffer full while it reconnects) is never committed: what it sent goes again one by one,
in order, once connected, and only then the rest (see _resend_broken).

Ordering: messages are stored in the order they were sent, except that a message resent after a
timeout or a retriable error may land behind later ones, and a refused message is not stored at
all: it leaves the wire for the error port, and the messages behind it are stored (no halt). A
refusal inside a batch leaves no hole either: the batch ends there and the rest follows in order.
That is the same per-wire order standard wires always had (resends existed before); a consumer
that needs strict order must not rely on JetStream sequence order across a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from fluxmix.errors import NatsUnavailableError, TransportError
from fluxmix.message import Message
from fluxmix.transports.base import WireStats
from fluxmix.transports.nats.connection import NatsConnection
from fluxmix.transports.nats.errors import Outcome, PublishRefused, classify_reply, describe, is_full

log = logging.getLogger("fluxmix.transports.nats")

RefusalHandler = Callable[[Message, PublishRefused], Awaitable[None]]
_PUBACK = b'{"stream":'
_mono = time.monotonic

# Fast-ingest batches (stream `allow_batched`, nats-server >= 2.14): a run of at least FAST_MIN
# messages handed over at once goes out as one batch of at most FAST_MAX, answered by one PubAck
# (plus a flow ack at its start) instead of one PubAck per message.
FAST_MIN = 8
FAST_MAX = 500
BATCH_DISABLED = 10205  # the stream does not allow batched publishes: go message by message
BATCH_UNKNOWN = 10208  # a message behind the one that ended its batch: not stored, resent alone


@dataclass(slots=True, eq=False)
class _Entry:
    """One message on its way to JetStream, until its outcome is known."""

    data: bytes
    headers: dict[str, str]
    message: Message
    sent_at: float = 0.0
    attempts: int = 0
    retry_at: float | None = None  # a retriable reply came: resend at this time
    batch: str | None = None  # the fast-ingest batch it was last sent in


class Publisher:
    def __init__(
        self,
        conn: NatsConnection,
        subject: str,
        *,
        label: str,
        window: int,
        ack_timeout: float,
        on_refused: RefusalHandler,
        stats: WireStats | None = None,
        bound: int | None = None,
        count_backlog: Callable[[], Awaitable[int]] | None = None,
        fast: bool = False,
    ) -> None:
        self.conn = conn
        self.subject = subject
        self.label = label  # the wire key, for logs and errors
        self.window = max(1, window)
        self.ack_timeout = ack_timeout
        self.on_refused = on_refused
        self.stats = stats if stats is not None else WireStats()
        self.acked = 0
        self.duplicates = 0
        self.resent = 0
        self.refused = 0
        self.last_refusal: str | None = None
        self.full_since: float | None = None  # the stream/wire refused as full; we wait for room
        self.bound = bound  # messages of this wire stored or in flight, at most (None: no own bound)
        self.backlog = 0  # stored and not yet acked by a consumer (while `bound` is set)
        self._count_backlog = count_backlog
        self._backlog_synced_at = 0.0
        self._syncing: asyncio.Task[None] | None = None
        self._pending: dict[int, _Entry] = {}  # insertion order == send order
        self._counter = itertools.count(1)
        self._sent = 0  # the last number handed out
        # producers waiting for a window slot, first come first served: with one shared wakeup
        # the fastest producer took every freed slot and a second one on the same wire starved
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []  # (last number it waits for, wakeup)
        self._refusals: set[asyncio.Task[None]] = set()
        self._refusal_failures: list[str] = []
        self._sub: Any = None
        self._prefix = ""
        self.fast = fast  # the stream allows fast-ingest batches (off for good after a 10205)
        self.fast_batches = 0
        self.broken_batches = 0  # fast batches a failed publish broke mid-send (resent one by one)
        self._fast_sub: Any = None
        self._fast_prefix = ""
        self._batch_ids = itertools.count(1)
        self._batches: dict[str, list[int]] = {}  # batch id -> the numbers of its messages, in order
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def _start(self) -> None:
        async with self._start_lock:
            if self._sub is not None:
                return
            nc = self.conn.client()
            inbox = nc.new_inbox()
            self._prefix = inbox + "."
            self._sub = await nc.subscribe(inbox + ".*", cb=self._on_reply, pending_msgs_limit=0, pending_bytes_limit=0)
            if self.fast:
                fast_inbox = nc.new_inbox()
                self._fast_prefix = fast_inbox + "."
                self._fast_sub = await nc.subscribe(fast_inbox + ".>", cb=self._on_fast_reply,
                                                    pending_msgs_limit=0, pending_bytes_limit=0)
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name=f"nats-publish-sweeper {self.label}")
            if self.bound is not None:
                await self._sync_backlog()  # what an earlier activation left in the stream counts

    async def publish(self, message: Message, data: bytes, msg_id: str) -> None:
        """Hand one message to the connection; returns once it is sent (its outcome comes later).
        The one per-message way out, window and bound checked: a lone emit, a run too short for a
        batch, and whatever follows a batch that broke mid-send all take it."""
        if self._closed:
            raise TransportError(f"wire {self.label} is closed")
        if self._sub is None:
            await self._start()
        if self._waiters or self._room() <= 0:
            await self._wait_for_room()
        if not self.conn.is_connected:
            await self.conn.wait_connected()
        n = next(self._counter)
        self._sent = n
        entry = _Entry(data, {"Nats-Msg-Id": msg_id}, message)
        self._pending[n] = entry
        await self._send(n, entry)

    async def publish_many(self, batch: list[tuple[Message, bytes, str]]) -> None:
        """publish() for each (message, data, msg id) in order. While the window has room for
        FAST_MIN or more of them, those go out as one fast-ingest batch (one PubAck for all)."""
        if self._closed:
            raise TransportError(f"wire {self.label} is closed")
        if self._sub is None:
            await self._start()
        at, total = 0, len(batch)
        while at < total:
            if self.fast and total - at >= FAST_MIN and not self._waiters and self.conn.is_connected:
                take = min(self._room(), FAST_MAX, total - at)
                if take >= FAST_MIN:
                    limit = self.conn.client().max_payload
                    for k in range(at, at + take):  # an oversized message is refused alone, by the client
                        if len(batch[k][1]) > limit:
                            take = k - at
                            break
                if take >= FAST_MIN:
                    at += await self._send_fast(batch[at:at + take])  # all of it, or up to a break
                    continue
            message, data, msg_id = batch[at]
            at += 1
            await self.publish(message, data, msg_id)

    def _room(self) -> int:
        """How many more messages the window (and the wire's bound) takes right now; none while
        the stream or wire answered "full" and something is in flight (backpressure)."""
        if self.full_since is not None and self._pending:
            return 0
        room = self.window - len(self._pending)
        if self.bound is not None:
            room = min(room, self.bound - self.backlog - len(self._pending))
        return room

    async def _send_fast(self, chunk: list[tuple[Message, bytes, str]]) -> int:
        """Send `chunk` as one fast-ingest batch, committed by its last message (never held open:
        a lone or slow producer waits for nothing). Reply subject per ADR-50:
        <inbox>.<batch id>.<flow>.fail.<batch seq>.<op>.$FI (op 0 start, 1 append, 2 commit).
        JetStream stores the batch in order and stops it at the first message it cannot store;
        what it did not store goes the per-message way (see _on_fast_reply). Returns how many of
        `chunk` it took: all, or those up to a publish that broke the batch (the caller sends the
        rest, after this resent what the batch had sent: see _resend_broken)."""
        nc = self.conn.client()
        bid = f"{self._fast_prefix.split('.')[-2]}b{next(self._batch_ids)}"
        numbers: list[int] = []
        self._batches[bid] = numbers
        self.fast_batches += 1
        pending, counter, subject, prefix = self._pending, self._counter, self.subject, f"{self._fast_prefix}{bid}.{FAST_MAX}.fail."
        last = len(chunk)
        now = _mono()
        for i, (message, data, msg_id) in enumerate(chunk, 1):
            n = next(counter)
            self._sent = n
            entry = _Entry(data, {"Nats-Msg-Id": msg_id}, message, now, 1, None, bid)
            pending[n] = entry
            numbers.append(n)
            op = 2 if i == last else (0 if i == 1 else 1)
            try:
                await nc.publish(subject, data, reply=f"{prefix}{i}.{op}.$FI", headers=entry.headers)
            except BaseException as exc:
                await self._resend_broken(bid, numbers, exc)
                return i
        return last

    async def _resend_broken(self, bid: str, numbers: list[int], exc: BaseException) -> None:
        """A publish raised inside fast batch `bid` (the client's buffer full while it reconnects,
        the connection closed, the task cancelled): the batch is never committed. It is forgotten,
        so a late answer about it cannot settle or refuse anything. What it had sent (JetStream may
        have stored a part) is sent again one by one through _send, same ids (stored once), in
        order, once connected, before the caller sends the rest: nothing behind the break can
        overtake it. Cancelled, the sweeper resends it instead and the cancellation goes on."""
        del self._batches[bid]
        self.broken_batches += 1
        pending = self._pending
        held = [n for n in numbers if n in pending]
        for n in held:
            pending[n].batch = None
        cancelled = not isinstance(exc, Exception) or _cancel_requested()
        log.warning("wire %s: a fast batch broke after %d of its messages (%s); %s", self.label, len(numbers),
                    describe(exc), "the sweeper resends them" if cancelled else "resending them in order")
        if cancelled:
            resend_at = _mono()
            for n in held:
                pending[n].retry_at = resend_at
            if isinstance(exc, Exception):  # nats-py swallowed the task's cancellation in a flush
                raise asyncio.CancelledError() from exc
            raise exc
        if not self.conn.is_connected:
            await self.conn.wait_connected()
        for n in held:
            entry = pending.get(n)
            if entry is not None:  # (a copy the sweeper resent meanwhile may be stored already)
                self.resent += 1
                await self._send(n, entry)

    @property
    def at_bound(self) -> bool:
        """The wire holds `bound` messages: its producer waits for its consumer."""
        return self.bound is not None and self.backlog + len(self._pending) >= self.bound

    def consumed(self, count: int) -> None:
        """The wire's consumer acked (or terminated) `count` messages: room under the bound."""
        if self.bound is None or count <= 0:
            return
        self.backlog = max(0, self.backlog - count)
        for _ in range(min(count, len(self._waiters))):
            self._wake_one()

    async def _sync_backlog(self) -> None:
        """Take the wire's count in the stream from the server (bounded wait; keep ours on failure)."""
        if self._count_backlog is None:
            return
        self._backlog_synced_at = _mono()
        try:
            counted = await asyncio.wait_for(self._count_backlog(), 2.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("wire %s: counting the backlog failed: %s", self.label, describe(exc))
            return
        # a message stored whose PubAck is still on its way is counted twice until the next sync:
        # erring on the side of the bound (at the first publish nothing is on its way)
        self.backlog = max(0, counted)
        assert self.bound is not None
        room = self.bound - self.backlog - len(self._pending)
        for _ in range(max(0, min(room, len(self._waiters)))):
            self._wake_one()

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        try:
            while True:
                await fut
                if self._closed:
                    raise TransportError(f"wire {self.label} is closed")
                if self._room() > 0:
                    break
                fut = loop.create_future()
                self._waiters.appendleft(fut)  # woken too early: keep its place at the head
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._wake_one()  # it was handed a slot it will not use: pass it on
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def _send(self, n: int, entry: _Entry) -> None:
        entry.attempts += 1
        entry.sent_at = _mono()
        entry.retry_at = None
        entry.batch = None
        delay = 0.05
        while True:
            try:
                await self.conn.client().publish(self.subject, entry.data, reply=self._prefix + str(n), headers=entry.headers)
                return
            except nats.errors.MaxPayloadError as exc:
                self._refuse(n, f"message of {len(entry.data)} bytes is over the server's max_payload ({describe(exc)})", None)
                return
            except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError) as exc:
                # the client's buffer is full while reconnecting: wait, then try again; unless the
                # task is being cancelled (nats-py swallows a cancel that hits its forced flush)
                if _cancel_requested():
                    raise asyncio.CancelledError() from exc
            except nats.errors.ConnectionClosedError as exc:
                if self._closed or self.conn.state == "closed":
                    raise NatsUnavailableError(f"wire {self.label}: NATS connection closed") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # outcomes --------------------------------------------------------------------------------
    async def _on_reply(self, msg: Msg) -> None:
        try:
            n = int(msg.subject[len(self._prefix):])
        except ValueError:
            return
        entry = self._pending.get(n)
        if entry is None:
            return  # the reply to an earlier attempt of a message already settled
        data = msg.data
        if data[:10] == _PUBACK and b'"error"' not in data:
            self._stored(n, b'"duplicate"' in data)  # {...,"duplicate": true}
            return
        outcome, reason, err_code = classify_reply(data, msg.headers)
        if outcome is Outcome.RETRY:
            self._retry_later(entry, err_code, reason)
            return
        self._refuse(n, reason, err_code)

    async def _on_fast_reply(self, msg: Msg) -> None:
        """A reply to a fast-ingest batch: a flow ack (ignored), the batch's PubAck (the first
        `count` messages are stored), or an error for one message (refused, retriable, or after the
        batch ended: not stored). Whatever the batch did not store is resent message by message,
        same Nats-Msg-Id, in order, by the sweeper."""
        tokens = msg.subject[len(self._fast_prefix):].split(".")
        if len(tokens) < 4:
            return
        numbers = self._batches.get(tokens[0])
        if numbers is None:
            return
        try:
            at = int(tokens[3])
        except ValueError:
            return
        data = msg.data
        if data.startswith(b'{"type":"ack"') or data.startswith(b'{"type":"gap"'):
            return  # flow control / the gap left by a message that ended the batch
        pending = self._pending
        if data[:10] == _PUBACK and b'"error"' not in data:
            stored = _count(data)
            if stored is None:  # a server without fast ingest acked this message alone
                if 0 < at <= len(numbers) and numbers[at - 1] in pending:
                    self._stored(numbers[at - 1], b'"duplicate"' in data)
                return
            del self._batches[tokens[0]]
            for n in numbers[:stored]:
                if n in pending:
                    self._stored(n)  # a duplicate inside a batch counts under the bound (the sync corrects it)
            rest = [n for n in numbers[stored:] if n in pending and pending[n].batch == tokens[0]]
            if rest:
                later = max((pending[n].retry_at or 0.0) for n in rest)
                resend_at = max(_mono(), later)
                for n in rest:
                    entry = pending[n]
                    entry.batch = None
                    entry.retry_at = resend_at
            return
        if not 0 < at <= len(numbers):
            return
        n = numbers[at - 1]
        entry = pending.get(n)
        if entry is None or entry.batch != tokens[0]:
            return
        outcome, reason, err_code = classify_reply(data, msg.headers)
        if err_code == BATCH_UNKNOWN:
            return  # behind the message that ended the batch: the batch's PubAck says what was stored
        if err_code == BATCH_DISABLED:
            if self.fast:
                self.fast = False
                log.info("wire %s: the stream does not allow batched publishes; publishing one by one", self.label)
            entry.batch = None
            entry.retry_at = _mono()
            return
        if outcome is Outcome.RETRY:
            self._retry_later(entry, err_code, reason)
            return
        self._refuse(n, reason, err_code)

    def _retry_later(self, entry: _Entry, err_code: int | None, reason: str) -> None:
        """A retriable answer: resend after a backoff that grows with the attempts; a stream or
        wire that answered "full" also holds its producers until something is stored."""
        if is_full(err_code, reason) and self.full_since is None:
            self.full_since = time.time()
            log.warning("wire %s: JetStream is full (%s); the producer waits for room", self.label, reason)
        entry.retry_at = _mono() + min(0.05 * 2 ** min(entry.attempts, 5), 1.0)

    def _stored(self, n: int, duplicate: bool = False) -> None:
        """JetStream stored message `n` (a PubAck, alone or inside a batch's count)."""
        self.acked += 1
        self.stats.sent += 1
        if duplicate:
            self.duplicates += 1
        elif self.bound is not None:
            self.backlog += 1
        self.full_since = None
        self._settle(n)

    def _settle(self, n: int) -> None:
        del self._pending[n]
        if self._waiters:
            self._wake_one()
        flushers = self._flushers
        if flushers:
            first = next(iter(self._pending), None)
            while flushers and (first is None or first > flushers[0][0]):
                _, fut = flushers.pop(0)
                if not fut.done():  # (a cancelled flush left a done future behind)
                    fut.set_result(None)

    def _refuse(self, n: int, reason: str, err_code: int | None) -> None:
        entry = self._pending.get(n)
        if entry is None:
            return
        self.refused += 1
        error = PublishRefused(f"JetStream refused message {entry.message.id} on wire {self.label}: {reason}", err_code)
        self.last_refusal = str(error)
        log.error("%s; it goes to the error port (or is counted as dropped), the wire goes on", error)
        task = asyncio.get_running_loop().create_task(self._handle_refusal(entry.message, error))
        self._refusals.add(task)
        task.add_done_callback(self._refusals.discard)
        self._settle(n)

    async def _handle_refusal(self, message: Message, error: PublishRefused) -> None:
        try:
            await self.on_refused(message, error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text = f"wire {self.label}: handling refused message {message.id} failed: {describe(exc)}"
            log.error("%s", text)
            self._refusal_failures.append(text)

    async def flush(self) -> None:
        """Return once everything sent before this call has its outcome (stored, or refused and
        handed to the error port); raise when handing a refused message on failed."""
        last = self._sent
        first = next(iter(self._pending), None)
        if first is not None and first <= last:
            fut = asyncio.get_running_loop().create_future()
            self._flushers.append((last, fut))
            task = asyncio.current_task()
            try:
                if task is not None and task.cancelling():
                    await self._flush_while_cancelled(fut, last)
                else:
                    await fut  # resolved by _settle(), or by close()
            finally:
                if not fut.done():  # cancelled: forget the waiter
                    fut.cancel()
                    with contextlib.suppress(ValueError):
                        self._flushers.remove((last, fut))
            first = next(iter(self._pending), None)
            if self._closed and first is not None and first <= last:
                raise TransportError(f"wire {self.label}: closed with {len(self._pending)} publishes unconfirmed")
        if self._refusals:
            await asyncio.gather(*list(self._refusals), return_exceptions=True)
        if self._refusal_failures:
            failures, self._refusal_failures = self._refusal_failures, []
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise TransportError(failures[0] + more)

    async def _flush_while_cancelled(self, fut: asyncio.Future[None], last: int) -> None:
        """A flush in the clean-up of a cancelled task (a stop past its timeout: a source saving
        its position in `finally`) must end: with NATS down the PubAcks may never come, and the
        runtime waits for that task before it closes the wires. Wait one ack timeout while
        connected, not at all while disconnected, then fail the flush: nothing is lost, the
        position is not saved, and the source replays those messages (same ids) next time."""
        if self.conn.is_connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), self.ack_timeout)
        if not fut.done():
            waiting = sum(1 for n in self._pending if n <= last)
            text = (f"wire {self.label}: stopping with {waiting} publish(es) not confirmed by JetStream "
                    f"(NATS {self.conn.state}); they are not claimed as sent and will be sent again")
            log.warning("%s", text)
            raise TransportError(text)

    async def _sweep(self) -> None:
        """Resend what JetStream did not acknowledge in time, or asked us to retry, same Nats-Msg-Id."""
        tick = min(0.25, self.ack_timeout / 4)
        warned = 0.0
        while not self._closed:
            await asyncio.sleep(tick)
            if (
                self.bound is not None and self._waiters and self.conn.is_connected
                and _mono() - self._backlog_synced_at > 1.0 and (self._syncing is None or self._syncing.done())
            ):  # a producer waits at the bound: maybe a consumer elsewhere took messages
                self._syncing = asyncio.get_running_loop().create_task(self._sync_backlog())
            if self._batches:  # batches whose PubAck never came (their messages were resent alone)
                pending = self._pending
                for bid in [b for b, ns in self._batches.items() if not any(n in pending for n in ns)]:
                    del self._batches[bid]
            if not self._pending or not self.conn.is_connected:
                continue  # while reconnecting nats-py buffers what was sent; resend once back
            now = _mono()
            overdue = now - self.ack_timeout
            due = [
                (n, e)
                for n, e in self._pending.items()
                if (e.retry_at is not None and e.retry_at <= now) or (e.retry_at is None and e.sent_at <= overdue)
            ]
            if not due:
                continue
            if now - warned > 10:
                warned = now
                log.warning(
                    "wire %s: %d publish(es) not stored by JetStream yet (NATS %s); resending",
                    self.label, len(due), self.conn.state,
                )
            for n, entry in due:
                if n not in self._pending:
                    continue
                self.resent += 1
                try:
                    await self._send(n, entry)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never let the sweeper die with messages outstanding
                    log.error("wire %s: resending %s failed: %s", self.label, entry.message.id, describe(exc))
                    break

    async def close(self) -> None:
        self._closed = True
        if self._syncing is not None:
            self._syncing.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
        for task in list(self._refusals):
            task.cancel()
        for sub in (self._sub, self._fast_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._sub = self._fast_sub = None
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()
        for _, fut in self._flushers:
            if not fut.done():
                fut.set_result(None)


def _cancel_requested() -> bool:
    """The current task is being cancelled (the cancellation may have been swallowed on the way)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _count(data: bytes) -> int | None:
    """`count` of a fast-ingest batch's PubAck ({"stream":..,"seq":..,"batch":..,"count":N}), else None."""
    i = data.find(b'"count":')
    if i < 0:
        return None
    i += 8
    j = i
    while j < len(data) and 47 < data[j] < 58:
        j += 1
    return int(data[i:j]) if j > i else None
