"""Source leases: each source gear runs on exactly one member at a time.

A lease is a key in a KV bucket whose TTL is the lease TTL. It is acquired with `create` (which
fails while another member holds it), renewed with compare-and-set on its revision (`update(...,
last=revision)`), and released with a conditional delete. A holder that dies renews nothing: the
key ages out after the TTL and a waiting member's `create` succeeds.

Fencing. Each renewal that succeeds extends a local deadline on the monotonic clock, counted from
when the renewal was *sent*, by half the TTL. Past it the lease counts as lost here, whatever the
KV says: the source is stopped and its emits and checkpoint saves are refused (`valid()`). Since
the key only ages out a full TTL after the last renewal was stored, the old holder has stopped
emitting well before anyone else can acquire it, even if it was paused (SIGSTOP, a long GC, a
frozen VM) at the worst moment. The revision of the key is the lease's fencing token: a renewal
from a holder whose lease was taken meanwhile fails its compare-and-set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from fluxmix.fleet.naming import gear_key

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Lease:
    key: str
    revision: int = 0
    deadline: float = 0.0  # time.monotonic() past which this member must not act on it
    held: bool = False
    since: float | None = None  # time.time() it was acquired
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    takeovers: int = 0


class SourceLeases:
    """The runtime's source guard in a fleet: acquire, renew, fence, release.

    The runtime calls `acquire` before a source runs (it waits while another member holds the
    lease), `valid` before every emit and checkpoint save, waits on `lost` to stop the source,
    and `release` when it stops the source for good."""

    def __init__(self, kv: KeyValue, member: str, incarnation: str, *, ttl: float) -> None:
        self.kv = kv
        self.member = member
        self.incarnation = incarnation
        self.ttl = ttl
        self.validity = ttl / 2  # the local deadline: shorter than the TTL (see the module doc)
        self.renew_every = ttl / 5
        self.poll = max(0.05, ttl / 20)  # how often a waiting member tries to create the key
        self._leases: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None

    def _value(self) -> bytes:
        return json.dumps({"member": self.member, "incarnation": self.incarnation, "host": socket.gethostname(),
                           "pid": os.getpid(), "renewed": time.time()}).encode()

    # ---- the runtime's side ----

    async def acquire(self, scenario: str, gear: str, stopping: asyncio.Event) -> bool:
        """Wait until this member holds the lease (True) or `stopping` is set (False)."""
        key = gear_key(scenario, gear)
        lease = self._leases.get(key)
        if lease is None or lease.lost.is_set():
            lease = self._leases[key] = Lease(key, takeovers=lease.takeovers if lease else 0)
        if lease.held and self.valid_lease(lease):
            return True
        waited = False
        while not stopping.is_set():
            sent = time.monotonic()
            try:
                revision = await self.kv.create(key, self._value())
            except nats.js.errors.KeyWrongLastSequenceError:
                revision = await self._take_own(key)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("lease %s: cannot reach the KV: %s", key, exc)
                revision = None
            if revision is not None:
                lease.revision, lease.deadline, lease.held, lease.since = revision, sent + self.validity, True, time.time()
                lease.takeovers += 1
                log.info("lease %s acquired by %s (revision %d)%s", key, self.member, revision,
                         " after waiting" if waited else "", extra={"lease": key, "revision": revision})
                self._ensure_renewing()
                return True
            waited = True
            try:
                await asyncio.wait_for(stopping.wait(), self.poll)
            except asyncio.TimeoutError:
                pass
        return False

    async def _take_own(self, key: str) -> int | None:
        """A lease still held in the name of this member's previous process (restarted within
        the TTL) is taken over at once: that process is gone, since this one owns its store."""
        try:
            entry = await self.kv.get(key)
            holder = json.loads(entry.value or b"{}")
        except (nats.errors.Error, asyncio.TimeoutError, ValueError):
            return None
        if holder.get("member") != self.member or holder.get("incarnation") == self.incarnation:
            return None
        try:
            return await self.kv.update(key, self._value(), last=entry.revision)
        except (nats.errors.Error, asyncio.TimeoutError):
            return None

    def valid(self, scenario: str, gear: str) -> bool:
        """May this member act as the source now? The fencing check before every emit."""
        lease = self._leases.get(gear_key(scenario, gear))
        return lease is not None and self.valid_lease(lease)

    @staticmethod
    def valid_lease(lease: Lease) -> bool:
        return lease.held and not lease.lost.is_set() and time.monotonic() < lease.deadline

    def lost(self, scenario: str, gear: str) -> asyncio.Event:
        lease = self._leases.get(gear_key(scenario, gear))
        return lease.lost if lease is not None else asyncio.Event()

    async def release(self, scenario: str, gear: str) -> None:
        """Give the lease up at once (a stop, a reload, SIGTERM): another member need not wait
        for the TTL. Conditional on our revision, so a lease taken meanwhile is left alone."""
        lease = self._leases.pop(gear_key(scenario, gear), None)
        if lease is None or not lease.held:
            return
        lease.held = False
        try:
            await self.kv.delete(lease.key, last=lease.revision)
            log.info("lease %s released by %s", lease.key, self.member, extra={"lease": lease.key})
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("lease %s: release failed (it ages out after its TTL): %s", lease.key, exc)

    async def release_all(self) -> None:
        for key in list(self._leases):
            scenario, _, gear = key.rpartition(".")
            await self.release(scenario, gear)

    # ---- renewal ----

    def _ensure_renewing(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._renew_loop(), name="fluxmix fleet lease renewal")

    async def _renew_loop(self) -> None:
        while any(lease.held for lease in self._leases.values()):
            await asyncio.sleep(min(self.renew_every, self.poll * 2))
            now = time.monotonic()
            for lease in list(self._leases.values()):
                if not lease.held or lease.lost.is_set():
                    continue
                if now >= lease.deadline:
                    self._lose(lease, "its local deadline passed without a renewal")
                    continue
                if lease.deadline - now > self.validity - self.renew_every:
                    continue  # renewed recently enough
                await self._renew(lease)

    async def _renew(self, lease: Lease) -> None:
        sent = time.monotonic()
        try:
            revision = await asyncio.wait_for(self.kv.update(lease.key, self._value(), last=lease.revision),
                                              max(0.1, lease.deadline - sent))
        except nats.js.errors.KeyWrongLastSequenceError:
            self._lose(lease, "another member holds it now")
            return
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            if time.monotonic() >= lease.deadline:
                self._lose(lease, f"renewal failed until the local deadline: {exc}")
            return
        if lease.held and not lease.lost.is_set():
            lease.revision, lease.deadline = revision, sent + self.validity

    def _lose(self, lease: Lease, why: str) -> None:
        lease.held = False
        lease.lost.set()
        log.error("lease %s lost by %s: %s; its source stops and its emits are refused", lease.key, self.member, why,
                  extra={"lease": lease.key})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"lease": lease.key, "revision": lease.revision, "since": lease.since,
                 "valid_for": round(max(0.0, lease.deadline - now), 3)}
                for lease in self._leases.values() if lease.held]
