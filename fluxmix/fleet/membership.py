"""Registration and heartbeat of a fleet member, and the members' view of each other.

Each member keeps one key (its member id) in a KV bucket whose TTL is the member TTL, rewritten
every third of it with what the member runs (active hash, readiness, last activation, the leases
it holds). A member that leaves deletes its key; one killed with -9 is gone once the TTL passed.
The incarnation (a random id per process) tells a restarted member from its previous process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, kv: KeyValue, member: str, incarnation: str, *, ttl: float,
                 describe: Callable[[], dict[str, Any]]) -> None:
        self.kv = kv
        self.member = member
        self.incarnation = incarnation
        self.ttl = ttl
        self.describe = describe  # what this member says about itself in each heartbeat
        self.beat_every = ttl / 3
        self.members: dict[str, dict[str, Any]] = {}  # the last view of the fleet (refresh())
        self.viewed_at: float | None = None
        self.last_beat: float | None = None

    def _record(self) -> bytes:
        return json.dumps({**self.describe(), "member": self.member, "incarnation": self.incarnation,
                           "heartbeat": time.time()}, default=str).encode()

    async def beat(self) -> None:
        await self.kv.put(self.member, self._record())
        self.last_beat = time.time()

    async def register(self) -> None:
        try:
            entry = await self.kv.get(self.member)
            previous = json.loads(entry.value or b"{}")
            if previous.get("incarnation") != self.incarnation:
                log.warning("fleet member %s: replacing the registration of its previous process (pid %s on %s)",
                            self.member, previous.get("pid"), previous.get("host"))
        except nats.js.errors.KeyNotFoundError:
            pass
        await self.beat()

    async def refresh(self) -> dict[str, dict[str, Any]]:
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        view: dict[str, dict[str, Any]] = {}
        for key in keys:
            try:
                entry = await self.kv.get(key)
                view[key] = json.loads(entry.value or b"{}")
            except (nats.js.errors.KeyNotFoundError, ValueError):
                continue
        self.members, self.viewed_at = view, time.time()
        return view

    async def alive(self, member: str, incarnation: str) -> bool:
        """Is that process still registered (its key present, naming that incarnation)?"""
        try:
            entry = await self.kv.get(member)
        except nats.js.errors.KeyNotFoundError:
            return False
        try:
            return json.loads(entry.value or b"{}").get("incarnation") == incarnation
        except ValueError:
            return False

    async def leave(self) -> None:
        try:
            await self.kv.delete(self.member)
            log.info("fleet member %s left", self.member)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("fleet member %s: could not deregister (its key ages out after %gs): %s",
                        self.member, self.ttl, exc)
