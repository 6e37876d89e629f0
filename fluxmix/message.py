"""The envelope every wire carries.

Memory wires pass the object itself; durable wires carry `encode()` bytes (msgpack), so the
envelope stays small and flat: plain str/float/dict values that round-trip through msgpack.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

_FIELDS = ("id", "body", "origin", "scenario", "ts", "headers")


@dataclass(slots=True)
class Message:
    """A unit of work moving along a wire.

    `id` is deterministic wherever possible (see `source_id`, `derived_id`) so a replay after a
    crash is recognised by JetStream's de-duplication instead of being delivered twice.
    """

    id: str
    body: dict[str, Any]
    origin: str = ""  # "gear.port" that emitted it
    scenario: str = ""  # sha256 hex of the scenario that emitted it
    ts: float = field(default_factory=time.time)
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return msgpack.packb(
            [self.id, self.body, self.origin, self.scenario, self.ts, self.headers],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> "Message":
        id_, body, origin, scenario, ts, headers = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return cls(id=id_, body=body, origin=origin, scenario=scenario, ts=ts, headers=headers)


def source_id(scenario_name: str, gear: str, position: int | str) -> str:
    """Id of a message a source emits at `position`: stable across restarts and reloads."""
    return f"{scenario_name}/{gear}/{position}"


def derived_id(parent_id: str, gear: str, port: str, index: int) -> str:
    """Id of the `index`-th message a gear emits on `port` while handling `parent_id`.

    Deterministic, so re-handling a redelivered message re-emits the same ids. Hashed to keep
    ids short however long the chain of gears is.
    """
    digest = hashlib.blake2b(f"{parent_id}|{gear}|{port}|{index}".encode(), digest_size=12).hexdigest()
    return digest
