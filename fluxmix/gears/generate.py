"""`generate`: a source of numbered messages, for demos, load tests and smoke checks."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any, Awaitable, Callable, ClassVar, Mapping

from fluxmix.errors import TransportError
from fluxmix.gears.base import Gear, Port
from fluxmix.message import FrozenDict, freeze_body

# Save the position at least this often (seconds) and every this many messages, so a crash
# replays at most that much (and de-duplication on durable wires absorbs the replay).
CHECKPOINT_INTERVAL = 0.5
CHECKPOINT_EVERY = 1000
# When the wires are slower than `rate`, the schedule may fall behind; after this many seconds
# behind it restarts from now instead of bursting to catch up.
MAX_CATCH_UP = 1.0
# Unpaced, this many messages are emitted at once (the most a memory wire hands over at once).
BATCH = 256


class Generate(Gear):
    """Emits `{**body, "seq": n}` for n = 1, 2, ... on `out`, optionally paced and bounded.

    The next `seq` is checkpointed, so a reload or restart continues the sequence and `count`
    is the total across restarts. Each message's id derives from its seq (`position=seq`), so a
    replay after a crash is recognised by de-duplication.
    """

    type = "generate"
    description = "Emit numbered messages ({...body, seq: 1, 2, ...}), optionally bounded by count and paced by rate."
    outputs = (Port("out", "the generated messages"),)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "count": {
                "type": "integer",
                "minimum": 0,
                "description": "Total messages to emit across restarts (the position is checkpointed); omitted: no end.",
            },
            "rate": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Messages per second, scheduled against a start time so it does not drift; omitted: as fast as the wires take.",
            },
            "body": {
                "type": "object",
                "description": "Fields copied into every message body; a 1-based `seq` field is added (and wins over a `seq` given here).",
            },
        },
    }

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.count: int | None = self.config.get("count")
        self.rate: float | None = self.config.get("rate")
        self.template: dict[str, Any] = dict(self.config.get("body") or {})
        # Scalars only: a shallow copy is enough and ~20x cheaper than deepcopy per message.
        flat = all(isinstance(v, (str, int, float, bool, type(None))) for v in self.template.values())
        self._copy: Callable[[dict[str, Any]], dict[str, Any]] = dict if flat else copy.deepcopy
        # A flat template a wire can carry, frozen once: unpaced bodies are then made read-only
        # at once (FrozenDict(template, seq=n)) and emit passes them on instead of copying and
        # checking each again. None: bodies are made and checked as they are emitted.
        self._frozen_template: FrozenDict | None = None
        if flat:
            try:
                self._frozen_template = freeze_body(self.template)
            except TransportError:
                pass  # reported when the first body is emitted, as before
        self.next_seq = 1
        # Injectable for tests: a monotonic clock and "sleep until woken or timeout".
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = self.wait_for_stop

    async def start(self) -> None:
        saved = await self.ctx.load_checkpoint()
        if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 1:
            self.next_seq = saved
        elif saved is not None:
            self.ctx.log.warning("gear %s: ignoring unreadable checkpoint %r; starting at seq 1", self.name, saved)

    def _done(self) -> bool:
        return self.count is not None and self.next_seq > self.count

    def _bodies(self, first: int, count: int) -> list[dict[str, Any]]:
        """The bodies of seq `first` .. `first + count - 1`. `next_seq` is each one's seq while
        it is made (what a subclass overriding `_copy` reads), and `first` again afterwards."""
        template = self._frozen_template
        if template is not None and self._copy is dict:  # no subclass making its own bodies
            return [FrozenDict(template, seq=seq) for seq in range(first, first + count)]
        bodies = []
        try:
            for seq in range(first, first + count):
                self.next_seq = seq
                body = self._copy(self.template)
                body["seq"] = seq
                bodies.append(body)
        finally:
            self.next_seq = first
        return bodies

    async def run(self) -> None:
        stopping = self.ctx.stopping
        interval = 1.0 / self.rate if self.rate else 0.0
        # Unpaced, messages go out BATCH at a time (one hand-over per wire instead of one per
        # message); paced, one at a time, each at its due time.
        emit_many = None if interval else getattr(self.ctx, "emit_many", None)
        started = self.clock()
        first = self.next_seq  # the schedule counts from here: message k is due at started + k*interval
        saved_seq, saved_at = self.next_seq, started
        unyielded = 0
        try:
            while not stopping.is_set() and not self._done():
                if interval:
                    due = started + (self.next_seq - first) * interval
                    now = self.clock()
                    if due > now:
                        await self.sleep(due - now)
                        if stopping.is_set():
                            break
                    elif now - due > MAX_CATCH_UP:
                        started, first = now, self.next_seq
                # a batch never crosses a checkpoint: they stay every CHECKPOINT_EVERY messages
                size = min(BATCH, CHECKPOINT_EVERY - (self.next_seq - saved_seq)) if emit_many is not None else 1
                if self.count is not None:
                    size = min(size, self.count - self.next_seq + 1)
                if size > 1:
                    seq = self.next_seq
                    assert emit_many is not None
                    self.next_seq += await emit_many("out", self._bodies(seq, size), positions=range(seq, seq + size))
                    unyielded += size
                else:
                    body = self._copy(self.template)
                    body["seq"] = self.next_seq
                    await self.ctx.emit("out", body, position=self.next_seq)
                    self.next_seq += 1
                    unyielded += 1
                if self.next_seq - saved_seq >= CHECKPOINT_EVERY or self.clock() - saved_at >= CHECKPOINT_INTERVAL:
                    await self.ctx.save_checkpoint(self.next_seq)
                    saved_seq, saved_at = self.next_seq, self.clock()
                elif not interval and unyielded >= BATCH:
                    await asyncio.sleep(0)  # unpaced and never blocked by the wires: let others run
                    unyielded = 0
        finally:
            if self.next_seq != saved_seq:
                await self.ctx.save_checkpoint(self.next_seq)
        if self._done() and not stopping.is_set():
            self.ctx.log.info("gear %s: emitted all %d messages", self.name, self.count)

    async def stop(self) -> None:
        """Nothing to release: the position was saved when run() returned."""
