"""Fleet-wide de-duplication of sink writes: a claim per (sink gear, message id) in NATS KV.

Why: on standard wires the members are competing consumers, so a message a member wrote and
then could not ack (killed, paused past ack_wait) is redelivered to *another* member. A sink's
local de-duplication cannot see the other member's file; the fleet needs one record per message
that says who writes it. The protocol (file-out drives it, see fluxmix.gears.file_out; it keeps what a round hands over and does
steps 1-3 in its flush, once per round, so a round costs two KV round trips whatever its size):

1. claim: before writing, `create(key, pending by me)`. If the key exists:
   - `done` (by anyone): skip, the line is in that member's file for good;
   - pending by this process: go on (a redelivery to ourselves);
   - pending by a process that is gone (its member key expired or names another incarnation,
     including our own previous process): take it over with compare-and-set on the revision;
   - pending by a live member: wait (its commit or its death decides), bounded.
2. write the line (the file's unacknowledged tail);
3. commit: before the sink records its local ack offset, `update(key, done by me, last=revision
   of my claim)`. A commit that fails its compare-and-set was taken over (this member was
   presumed dead): the line is removed from the tail before the local record.
4. a restarted member cuts its unacknowledged tail as always, but first re-appends the lines of
   that tail whose claim is `done` by this member (committed, then killed before the local
   record), so nothing committed is lost and nothing uncommitted stays.

So every message is `done` by exactly one member, and each member's file holds exactly the
lines it committed, once the member has (re)started since its last crash. Cost: two KV writes
per message (pipelined per batch), replicated like the streams; claims expire after the claim
TTL, which must exceed how long JetStream may redeliver a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable, Iterable

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from fluxmix.errors import FleetError
from fluxmix.fleet.naming import claim_key

log = logging.getLogger(__name__)

PENDING, DONE = "p", "d"
CONCURRENCY = 256  # KV requests in flight per batch
WAIT_POLL = 0.25


class SinkClaims:
    """The claims of one fleet member; `for_gear` binds them to one sink gear."""

    def __init__(self, kv: KeyValue, member: str, incarnation: str,
                 alive: Callable[[str, str], Awaitable[bool]], *, live_wait: float) -> None:
        self.kv = kv
        self.member = member
        self.incarnation = incarnation
        self.alive = alive  # (member, incarnation) -> is that process still registered?
        self.live_wait = live_wait  # how long to wait for a live member's pending claim
        self.stats = {"claimed": 0, "skipped": 0, "taken_over": 0, "committed": 0, "lost": 0, "waits": 0}
        self._sem = asyncio.Semaphore(CONCURRENCY)

    def for_gear(self, scenario: str, gear: str) -> GearClaims:
        return GearClaims(self, scenario, gear)

    def _value(self, state: str) -> bytes:
        return json.dumps({"m": self.member, "i": self.incarnation, "s": state, "t": round(time.time(), 3)}).encode()

    def status(self) -> dict[str, Any]:
        return dict(self.stats)


class GearClaims:
    """Claims of one sink gear. Keeps the revision of each claim it holds pending."""

    def __init__(self, owner: SinkClaims, scenario: str, gear: str) -> None:
        self.owner = owner
        self.scenario = scenario
        self.gear = gear
        self._pending: dict[str, int] = {}  # message id -> revision of our pending claim

    def _key(self, message_id: str) -> str:
        return claim_key(self.scenario, self.gear, message_id)

    async def claim(self, ids: Iterable[str]) -> set[str]:
        """The ids this member may write (the rest: skip). Raises FleetError when the KV cannot
        be reached (the batch fails and is retried)."""
        ids = list(dict.fromkeys(ids))
        results = await asyncio.gather(*(self._bounded(self._claim_one(i)) for i in ids))
        return {i for i, mine in zip(ids, results) if mine}

    async def _bounded(self, coro: Awaitable[Any]) -> Any:
        async with self.owner._sem:
            try:
                return await coro
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                raise FleetError(f"sink {self.gear}: fleet claims unavailable: {type(exc).__name__}: {exc}") from None

    async def _claim_one(self, message_id: str) -> bool:
        if message_id in self._pending:
            return True
        owner, kv, key = self.owner, self.owner.kv, self._key(message_id)
        waited_until: float | None = None
        while True:
            try:
                self._pending[message_id] = await kv.create(key, owner._value(PENDING))
                owner.stats["claimed"] += 1
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue  # expired or deleted in between: create again
            holder = json.loads(entry.value or b"{}")
            if holder.get("s") == DONE:
                owner.stats["skipped"] += 1
                return False
            same_member = holder.get("m") == owner.member
            if same_member and holder.get("i") == owner.incarnation:
                self._pending[message_id] = int(entry.revision or 0)
                return True
            if same_member or not await owner.alive(str(holder.get("m")), str(holder.get("i"))):
                try:
                    self._pending[message_id] = await kv.update(key, owner._value(PENDING), last=entry.revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
                owner.stats["taken_over"] += 1
                if owner.stats["taken_over"] in (1, 10) or owner.stats["taken_over"] % 1000 == 0:
                    log.info("sink %s: took over the claim on %s from %s (gone) [%d taken over so far]", self.gear,
                             message_id, holder.get("m"), owner.stats["taken_over"])
                return True
            # A live member wrote it and has not committed yet (its ack is late): it commits or dies.
            now = time.monotonic()
            if waited_until is None:
                waited_until = now + owner.live_wait
                owner.stats["waits"] += 1
            elif now >= waited_until:
                raise FleetError(f"sink {self.gear}: message {message_id} is still claimed by live member "
                                 f"{holder.get('m')} after {owner.live_wait:g}s; retried later")
            await asyncio.sleep(WAIT_POLL)

    async def commit(self, ids: Iterable[str]) -> set[str]:
        """Mark our pending claims done; returns the ids whose claim another member took over
        meanwhile (their lines must not stay). Raises FleetError when the KV cannot be reached:
        nothing is lost, the claims stay pending and the next commit retries them."""
        ids = [i for i in dict.fromkeys(ids) if i in self._pending]
        results = await asyncio.gather(*(self._bounded(self._commit_one(i)) for i in ids))
        return {i for i, ok in zip(ids, results) if not ok}

    async def _commit_one(self, message_id: str) -> bool:
        revision = self._pending[message_id]
        try:
            await self.owner.kv.update(self._key(message_id), self.owner._value(DONE), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            self._pending.pop(message_id, None)
            self.owner.stats["lost"] += 1
            log.error("sink %s: the claim on %s was taken over by another member (this one was presumed gone); "
                      "its line is removed", self.gear, message_id)
            return False
        self._pending.pop(message_id, None)
        self.owner.stats["committed"] += 1
        return True

    async def committed_here(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` this member committed (by any of its processes): a restarted sink keeps
        those lines of its unacknowledged tail."""
        ids = list(dict.fromkeys(ids))

        async def mine(message_id: str) -> bool:
            try:
                entry = await self.owner.kv.get(self._key(message_id))
            except nats.js.errors.KeyNotFoundError:
                return False
            holder = json.loads(entry.value or b"{}")
            return holder.get("s") == DONE and holder.get("m") == self.owner.member

        results = await asyncio.gather(*(self._bounded(mine(i)) for i in ids))
        return {i for i, ok in zip(ids, results) if ok}
