"""Source positions of a fleet member, kept in a KV bucket instead of the local store.

Whichever member holds a source's lease loads the position the previous holder saved, so the
source continues instead of starting over. A save is refused once this member's lease is not
valid (fencing: a paused old holder cannot move the position back under the new holder).

The runtime calls a CheckpointStore from a worker thread (asyncio.to_thread); the KV client
lives on the mixer's loop, so each call is handed to that loop and awaited from the thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from fluxmix.errors import FleetError, LeaseLostError
from fluxmix.fleet.leases import SourceLeases
from fluxmix.fleet.naming import gear_key

CALL_TIMEOUT = 10.0


class KvCheckpoints:
    """fluxmix.runtime.CheckpointStore over NATS KV, fenced by the member's source leases."""

    def __init__(self, kv: KeyValue, loop: asyncio.AbstractEventLoop, leases: SourceLeases) -> None:
        self.kv = kv
        self.loop = loop
        self.leases = leases
        self.saves = 0

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    def load_checkpoint(self, scenario_name: str, gear: str) -> Any | None:
        try:
            entry = self._call(self.kv.get(gear_key(scenario_name, gear)))
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise FleetError(f"checkpoint of {scenario_name}/{gear}: cannot read it from the fleet's KV: {exc}") from None
        return json.loads(entry.value) if entry.value else None

    def save_checkpoint(self, scenario_name: str, gear: str, value: Any) -> None:
        if not self.leases.valid(scenario_name, gear):
            raise LeaseLostError(f"checkpoint of {scenario_name}/{gear} refused: this member no longer holds its lease")
        try:
            self._call(self.kv.put(gear_key(scenario_name, gear), json.dumps(value).encode()))
        except (nats.errors.Error, TimeoutError) as exc:
            raise FleetError(f"checkpoint of {scenario_name}/{gear}: cannot save it in the fleet's KV: {exc}") from None
        self.saves += 1
