"""The fleet's one desired scenario: its bytes in an Object Store, its hash in a KV key.

Publishing puts the bytes under their SHA-256 (hex) and then points the `scenario` key at them;
a member that sees a new hash fetches the bytes, checks the hash before anything else reads them,
and imports them into its local store, from which its normal activation runs them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from fluxmix.errors import FleetError
from fluxmix.fleet.naming import DESIRED_KEY
from fluxmix.refs import short_hash

MAX_SCENARIO_BYTES = 1 << 20  # the store's own limit for a scenario file


@dataclass(frozen=True, slots=True)
class Desired:
    hash: str
    name: str | None
    by: str | None  # the member that published it
    ts: float | None
    revision: int

    def as_dict(self) -> dict[str, Any]:
        return {"hash": self.hash, "name": self.name, "by": self.by, "ts": self.ts, "revision": self.revision}


class DesiredScenario:
    def __init__(self, kv: KeyValue, objects: ObjectStore, member: str) -> None:
        self.kv = kv
        self.objects = objects
        self.member = member

    async def publish(self, digest: str, data: bytes, name: str | None) -> None:
        if hashlib.sha256(data).hexdigest() != digest:
            raise FleetError(f"fleet: refusing to publish bytes that are not {short_hash(digest)}")
        await self.objects.put(digest, data)
        record = {"hash": digest, "name": name, "by": self.member, "ts": time.time()}
        await self.kv.put(DESIRED_KEY, json.dumps(record).encode())

    async def current(self) -> Desired | None:
        try:
            entry = await self.kv.get(DESIRED_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            record = json.loads(entry.value or b"{}")
            digest = str(record["hash"])
        except (ValueError, KeyError, TypeError):
            raise FleetError("fleet: the desired scenario record is unreadable") from None
        return Desired(digest, record.get("name"), record.get("by"), record.get("ts"), int(entry.revision or 0))

    async def fetch(self, digest: str) -> bytes:
        """The bytes of sha256:digest, verified; FleetError when missing, too big, or altered."""
        try:
            info = await self.objects.get_info(digest)
            if info.size is not None and info.size > MAX_SCENARIO_BYTES:
                raise FleetError(f"fleet: desired scenario {short_hash(digest)} is {info.size} bytes (limit 1 MiB)")
            result = await self.objects.get(digest)
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError):
            raise FleetError(f"fleet: desired scenario {short_hash(digest)} is not in the fleet's object store") from None
        except nats.errors.Error as exc:
            raise FleetError(f"fleet: cannot fetch desired scenario {short_hash(digest)}: {exc}") from None
        data = bytes(result.data or b"")
        if hashlib.sha256(data).hexdigest() != digest:
            raise FleetError(f"fleet: desired scenario {short_hash(digest)}: the bytes fetched do not match their "
                             "hash; not used")
        return data
