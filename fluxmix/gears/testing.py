"""Test helpers for gears: a recording GearContext and a harness that drives one gear.

Public on purpose: plugin authors test their gears with the same tools the built-ins use.

    async with GearHarness(MyGear, {"factor": 2}) as h:
        out = await h.send({"x": 1})          # {"out": [{"x": 2}]}
        out = await h.send_batch([{"x": 1}, {"x": 2}])   # through handle_batch
    h = GearHarness("generate", {"count": 3})
    bodies = await h.run_source()            # start, run() to completion, stop

No transport is involved: emits are recorded per port, checkpoints live in memory. Bodies are
frozen read-only as on a real wire, so a gear that mutates its input fails here too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jsonschema

from fluxmix.errors import GearError, Problem, ValidationError
from fluxmix.gears.base import Gear
from fluxmix.gears.catalog import Catalog
from fluxmix.message import Message, derived_id, freeze_body, freeze_headers, source_id
from fluxmix.schema_errors import describe as describe_schema_error

_message_ids = itertools.count(1)


def config_problems(gear_cls: type[Gear], config: Mapping[str, Any]) -> list[Problem]:
    """What pre-flight validation would say about `config` for `gear_cls` (schema, then check_config)."""
    validator_cls = jsonschema.validators.validator_for(gear_cls.config_schema)
    validator = validator_cls(gear_cls.config_schema)
    problems = [
        Problem(".".join(["config", *(str(p) for p in err.absolute_path)]), describe_schema_error(err))
        for err in sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        return problems
    return [Problem(f"config.{path}" if path else "config", reason) for path, reason in gear_cls.check_config(config)]


class RecordingContext:
    """A GearContext that records what a gear emits, per port, and keeps checkpoints in memory.

    `wired` names the output ports that count as wired (None: every port); emits on other ports
    are dropped, as the runtime does. `stop_after` sets `stopping` once that many messages were
    emitted in total, which is how a test runs an endless source for N messages.
    """

    def __init__(
        self,
        gear_name: str = "gear",
        *,
        scenario_name: str = "test",
        scenario_hash: str = "0" * 64,
        wired: Iterable[str] | None = None,
        checkpoint: Any = None,
        stop_after: int | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.scenario_name = scenario_name
        self.scenario_hash = scenario_hash
        self.gear_name = gear_name
        self.log = log or logging.getLogger(f"fluxmix.gear.{gear_name}")
        self.stopping = asyncio.Event()
        self.wired: set[str] | None = set(wired) if wired is not None else None
        self.checkpoint = checkpoint
        self.saved_checkpoints: list[Any] = []
        from fluxmix.globals_state import MemoryBackend, ScenarioGlobals

        self.globals = ScenarioGlobals(scenario_name, MemoryBackend())  # in memory; nothing lasts
        self.emitted: dict[str, list[Message]] = defaultdict(list)
        self.stop_after = stop_after
        self.total_emitted = 0
        self.parent: Message | None = None  # the message being handled, for derived ids
        self._index: dict[str, int] = defaultdict(int)
        self._batch: _HarnessBatch | None = None  # the batch being handled, for emit_each

    async def emit(
        self,
        port: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        position: int | str | None = None,
    ) -> None:
        if not self.is_wired(port):
            return
        if self.parent is not None:
            msg_id = derived_id(self.parent.id, self.gear_name, port, self._index[port])
            self._index[port] += 1
        elif position is not None:
            msg_id = source_id(self.scenario_name, self.gear_name, position)
        else:
            msg_id = source_id(self.scenario_name, self.gear_name, f"n{self.total_emitted}")
        # what a wire carries: the body frozen read-only, as the runtime does once per emit
        frozen = freeze_body(body, self.gear_name, port)
        self.emitted[port].append(
            Message(
                id=msg_id,
                body=frozen,
                origin=f"{self.gear_name}.{port}",
                scenario=self.scenario_hash,
                headers=freeze_headers(headers),
            )
        )
        self.total_emitted += 1
        if self.stop_after is not None and self.total_emitted >= self.stop_after:
            self.stopping.set()
        await asyncio.sleep(0)  # a real wire may suspend here: let other tasks run

    async def emit_many(
        self,
        port: str,
        bodies: Sequence[Mapping[str, Any]],
        *,
        headers: Mapping[str, str] | None = None,
        positions: Sequence[int | str] | None = None,
    ) -> int:
        """`emit` for each body, in order; stops early once `stop_after` messages were emitted
        (returns how many it emitted), as a source stopped between messages would."""
        if positions is not None and len(positions) != len(bodies):
            raise ValueError(f"emit_many: {len(positions)} positions for {len(bodies)} bodies")
        for body in bodies:  # all checked first, as the runtime does: nothing emitted on a bad one
            freeze_body(body, self.gear_name, port)
        count = 0
        for i, body in enumerate(bodies):
            if self.stop_after is not None and self.total_emitted >= self.stop_after:
                break
            await self.emit(port, body, headers=headers, position=None if positions is None else positions[i])
            count += 1
        return count

    async def emit_each(self, port: str, outputs: Sequence[tuple[Message, Mapping[str, Any]]]) -> None:
        """`emit` of each body as its message would while in hand (id derived from it, its
        headers); the messages are checked first, as the runtime does."""
        if self.parent is None:
            raise GearError(self.gear_name, "emit_each() pairs bodies with the messages being handled: "
                                            "call it from handle() or handle_batch()")
        counts = []
        for message, body in outputs:
            if self._batch is None:
                if message is not self.parent:
                    raise GearError(self.gear_name, "emit_each() got a message other than the one being handled")
                counts.append(self._index)
            else:
                counts.append(self._batch.counts_of(message, self.gear_name))
            freeze_body(body, self.gear_name, port)
        in_hand = (self.parent, self._index)
        try:
            for (message, body), index in zip(outputs, counts):
                self.parent, self._index = message, index
                await self.emit(port, body, headers=message.headers)
        finally:
            self.parent, self._index = in_hand

    def is_wired(self, port: str) -> bool:
        return self.wired is None or port in self.wired

    async def load_checkpoint(self) -> Any | None:
        return self.checkpoint

    async def save_checkpoint(self, value: Any) -> None:
        self.checkpoint = value
        self.saved_checkpoints.append(value)

    def bodies(self, port: str = "out") -> list[dict[str, Any]]:
        return [m.body for m in self.emitted.get(port, [])]

    def clear(self) -> None:
        self.emitted.clear()
        self.total_emitted = 0


class _HarnessBatch(Sequence[Message]):
    """Like the runtime's batch: iterating it makes each message in turn the parent of emits."""

    def __init__(self, messages: list[Message], ctx: RecordingContext) -> None:
        self._messages, self._ctx, self.pos = messages, ctx, 0
        self.counts: dict[int, dict[str, int]] = {}  # per message index: its emits per port

    def counts_of(self, message: Message, gear: str) -> dict[str, int]:
        """The emit counts of `message`, which must be one of the batch up to the one in hand."""
        for j in range(min(self.pos, len(self._messages) - 1) + 1):
            if self._messages[j] is message:
                return self.counts.setdefault(j, defaultdict(int))
        raise GearError(gear, "emit_each() got a message that is not one of the batch handled so far")

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: Any) -> Any:
        return self._messages[index]

    def __iter__(self) -> Iterator[Message]:
        for i, message in enumerate(self._messages):
            self.pos = i
            self._ctx.parent, self._ctx._index = message, self.counts.setdefault(i, defaultdict(int))
            yield message
        self.pos = len(self._messages)


class GearHarness:
    """Builds one gear with a RecordingContext and drives its lifecycle like the runtime does.

    `gear` is a Gear class or a catalog type name. The config is validated first (schema and
    check_config); problems raise ValidationError, so a test sees what an operator would.
    """

    def __init__(
        self,
        gear: type[Gear] | str,
        config: Mapping[str, Any] | None = None,
        *,
        name: str = "gear",
        catalog: Catalog | None = None,
        wired: Iterable[str] | None = None,
        checkpoint: Any = None,
        stop_after: int | None = None,
        ctx: RecordingContext | None = None,
        validate: bool = True,
    ) -> None:
        if isinstance(gear, str):
            found = (catalog or Catalog.default()).get(gear)
            if found is None:
                raise KeyError(f"no gear type {gear!r}")
            gear = found
        self.gear_cls = gear
        self.config = dict(config or {})
        if validate:
            problems = config_problems(gear, self.config)
            if problems:
                raise ValidationError(f"gear {name!r}", problems)
        self.ctx = ctx or RecordingContext(name, wired=wired, checkpoint=checkpoint, stop_after=stop_after)
        self.gear: Gear = gear(name, self.config, self.ctx)
        self.started = False
        self.failed_at: int | None = None  # set by send_batch when the gear raised

    async def start(self) -> None:
        await self.gear.start()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            self.started = False
            await self.gear.stop()

    async def __aenter__(self) -> "GearHarness":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(
        self,
        body: Mapping[str, Any],
        port: str = "in",
        *,
        id: str | None = None,
        headers: Mapping[str, str] | None = None,
        flush: bool = True,
    ) -> dict[str, list[dict[str, Any]]]:
        """Hand one message to `handle()` (then `flush()`); returns the bodies it emitted, per port."""
        return await self.send_message(self._message(body, id=id, headers=headers), port, flush=flush)

    def _message(self, body: Mapping[str, Any], *, id: str | None = None,
                 headers: Mapping[str, str] | None = None) -> Message:
        """A message as a wire would deliver it: read-only body and headers."""
        return Message(
            id=id or f"test/{next(_message_ids)}",
            body=freeze_body(body, "test", "out", strict=False),  # any value a gear may be fed
            origin="test.out",
            scenario=self.ctx.scenario_hash,
            headers=freeze_headers(headers),
        )

    async def send_batch(
        self, bodies: Iterable[Mapping[str, Any]], port: str = "in", *, flush: bool = True,
        ids: Sequence[str] | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Hand several messages to `handle_batch()` at once, as a wire does (then `flush()`);
        returns the bodies emitted, per port. `ids`: the messages' ids (a redelivery repeats
        them), one per body. If the gear raises, `failed_at` is the index of the message it was
        handling (the runtime retries that one alone) and the exception propagates."""
        listed = list(bodies)
        if ids is not None and len(ids) != len(listed):
            raise ValueError(f"send_batch: {len(ids)} ids for {len(listed)} bodies")
        messages = [self._message(b, id=None if ids is None else ids[i]) for i, b in enumerate(listed)]
        batch = _HarnessBatch(messages, self.ctx)
        before = {p: len(ms) for p, ms in self.ctx.emitted.items()}
        self.failed_at = None
        self.ctx._batch = batch
        try:
            await self.gear.handle_batch(port, batch)
        except Exception:
            self.failed_at = min(batch.pos, len(batch) - 1)
            raise
        finally:
            self.ctx.parent, self.ctx._batch = None, None
        if flush:
            await self.gear.flush()
        return self._emitted_since(before)

    def _emitted_since(self, before: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        """The bodies emitted per port since `before` (each port's count then)."""
        return {
            p: [m.body for m in ms[before.get(p, 0) :]]
            for p, ms in self.ctx.emitted.items()
            if len(ms) > before.get(p, 0)
        }

    async def send_message(self, message: Message, port: str = "in", *, flush: bool = True) -> dict[str, list[dict[str, Any]]]:
        """Handle one message, then (unless `flush=False`) flush the gear as the runtime does
        before it acknowledges the message."""
        before = {p: len(ms) for p, ms in self.ctx.emitted.items()}
        self.ctx.parent, self.ctx._index = message, defaultdict(int)
        try:
            await self.gear.handle(port, message)
        finally:
            self.ctx.parent = None
        if flush:
            await self.gear.flush()
        return self._emitted_since(before)

    async def run(self, *, timeout: float | None = None) -> None:
        """Call run() until it returns (a bounded source, or `stopping` set by stop_after)."""
        if timeout is None:
            await self.gear.run()
        else:
            await asyncio.wait_for(self.gear.run(), timeout)

    async def run_source(self, *, timeout: float | None = 30.0, port: str = "out") -> list[dict[str, Any]]:
        """start(), run() to its end, stop(); returns the bodies emitted on `port`."""
        await self.start()
        try:
            await self.run(timeout=timeout)
        finally:
            await self.stop()
        return self.ctx.bodies(port)


__all__ = ["GearHarness", "RecordingContext", "config_problems"]
