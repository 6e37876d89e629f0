"""The store's source checkpoints, with what this mixer last wrote kept in memory.

A reload stops a source (its position is written to the store) and starts its new instance,
which reads the position straight back: a thread hop and an index read on the path from the
old source's last message to the new one's first. The mixer is the only writer of its
scenarios' checkpoints in its store (a fleet member keeps them in KV instead, and a second mixer
on one store would already fight over the active scenario), so what it wrote last is what the
store holds: a read of a key this process wrote is answered from memory. Every write still goes
to the store first, so a restart resumes from the same position.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from fluxmix.runtime import CheckpointStore

_UNKNOWN = object()


class CachedCheckpoints:
    """A CheckpointStore over another one, answering reads of what it wrote itself."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        # (scenario, gear) -> the JSON text last written (None: deleted); JSON so a reader never
        # shares a mutable value with the writer, and sees what the store would give back
        self._written: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()  # writes come from worker threads (asyncio.to_thread)
        self.hits = 0

    def load_checkpoint(self, scenario_name: str, gear: str) -> Any | None:
        text = self._written.get((scenario_name, gear), _UNKNOWN)  # one dict read: atomic, no lock to wait for
        if text is _UNKNOWN:
            return self.store.load_checkpoint(scenario_name, gear)
        self.hits += 1
        return None if text is None else json.loads(text)  # type: ignore[arg-type]

    def save_checkpoint(self, scenario_name: str, gear: str, value: Any) -> None:
        text = None if value is None else json.dumps(value, allow_nan=False)
        # under the lock, so two writes of one key land in the store and here in the same order
        with self._lock:
            self.store.save_checkpoint(scenario_name, gear, value)
            self._written[(scenario_name, gear)] = text
