"""The public test harness that plugin authors use: it must behave like the runtime's context."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import pytest

from fluxmix.errors import GearError, TransportError, ValidationError
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.expressions import ExpressionEvalError
from fluxmix.gears.testing import GearHarness, RecordingContext
from fluxmix.message import Message, derived_id, source_id


def test_bad_config_raises_validation_error_with_every_problem() -> None:
    with pytest.raises(ValidationError) as info:
        GearHarness("route", {"routes": {"default": "x >"}}, name="r")
    assert info.value.lines() == [
        "gear 'r': config.routes.default: 'default' is reserved; choose another route name",
        "gear 'r': config.routes.default: invalid expression: invalid syntax at the end",
    ]


def test_unknown_type_name() -> None:
    with pytest.raises(KeyError, match="no gear type 'nope'"):
        GearHarness("nope")


async def test_ids_follow_the_runtime_rules() -> None:
    async with GearHarness("route", {"routes": {"a": "True"}, "mode": "all"}, name="r") as h:
        await h.send({"x": 1}, id="p1")
    (msg,) = h.ctx.emitted["a"]
    assert msg.id == derived_id("p1", "r", "a", 0)
    assert msg.origin == "r.a"
    ctx = RecordingContext("src", scenario_name="s")
    await ctx.emit("out", {"x": 1}, position=7)
    assert ctx.emitted["out"][0].id == source_id("s", "src", 7)


async def test_unwired_ports_drop_and_stop_after_sets_stopping() -> None:
    ctx = RecordingContext(wired=["out"], stop_after=2)
    await ctx.emit("other", {"x": 0})
    await ctx.emit("out", {"x": 1})
    assert not ctx.stopping.is_set()
    await ctx.emit("out", {"x": 2})
    assert ctx.stopping.is_set()
    assert ctx.bodies() == [{"x": 1}, {"x": 2}] and ctx.bodies("other") == []
    assert ctx.is_wired("out") and not ctx.is_wired("other")


async def test_emitted_bodies_are_copies_as_a_wire_carries_them() -> None:
    ctx = RecordingContext()
    body = {"x": 1, "nested": {"l": [1, (2, 3)]}}
    await ctx.emit("out", body)
    body["nested"]["l"].append(4)
    assert ctx.bodies() == [{"x": 1, "nested": {"l": [1, [2, 3]]}}]  # tuples arrive as lists
    with pytest.raises(TransportError, match="cannot be encoded"):
        await ctx.emit("out", {"x": object()})


async def test_checkpoints_are_kept_in_memory() -> None:
    ctx = RecordingContext(checkpoint=5)
    assert await ctx.load_checkpoint() == 5
    await ctx.save_checkpoint(9)
    assert await ctx.load_checkpoint() == 9 and ctx.saved_checkpoints == [9]


async def test_harness_send_batch_drives_handle_batch_with_per_message_ids() -> None:
    async with GearHarness("filter", {"where": "amount > 100"}, name="large", wired=["out"]) as h:
        out = await h.send_batch([{"amount": 50}, {"amount": 150}, {"amount": 300}])
        assert out == {"out": [{"amount": 150}, {"amount": 300}]}
        ids = [m.id for m in h.ctx.emitted["out"]]
        assert len(set(ids)) == 2  # each derived from its own input message
        with pytest.raises(ExpressionEvalError):
            await h.send_batch([{"amount": 500}, {"nope": 1}, {"amount": 700}])
        assert h.failed_at == 1  # the message in hand when it raised; the first went out
        assert h.ctx.bodies()[-1] == {"amount": 500}


class _EmitThenEach(Gear):
    """Per message: emit() one body while in hand; after the loop, emit_each() one more per
    message (its second emit on `out`). `early` makes it pair a message not yet handed over."""

    type = "t-emit-each"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        for message in messages:
            if self.config.get("early"):
                await self.ctx.emit_each("out", [(messages[len(messages) - 1], {"early": True})])
            await self.ctx.emit("out", {"n": message.body["n"], "k": 0})
        await self.ctx.emit_each("out", [(m, {"n": m.body["n"], "k": 1}) for m in messages])


async def test_harness_emit_each_derives_ids_from_each_paired_message() -> None:
    async with GearHarness(_EmitThenEach, {}, name="g") as h:
        out = await h.send_batch([{"n": 1}, {"n": 2}], ids=["a", "b"])
    assert out == {"out": [{"n": 1, "k": 0}, {"n": 2, "k": 0}, {"n": 1, "k": 1}, {"n": 2, "k": 1}]}
    ids = [m.id for m in h.ctx.emitted["out"]]
    assert ids == [derived_id("a", "g", "out", 0), derived_id("b", "g", "out", 0),
                   derived_id("a", "g", "out", 1), derived_id("b", "g", "out", 1)]


async def test_harness_emit_each_refuses_a_message_not_yet_handed_over() -> None:
    async with GearHarness(_EmitThenEach, {"early": True}, name="g") as h:
        with pytest.raises(GearError, match="not one of the batch handled so far"):
            await h.send_batch([{"n": 1}, {"n": 2}])
        assert h.failed_at == 0 and not h.ctx.emitted.get("out")


async def test_map_batch_emits_those_before_a_failing_expression() -> None:
    async with GearHarness("map", {"set": {"half": {"expr": "n / d"}}}, name="m") as h:
        with pytest.raises(ExpressionEvalError):
            await h.send_batch([{"n": 4, "d": 2}, {"n": 1, "d": 0}, {"n": 9, "d": 3}], ids=["a", "b", "c"])
        assert h.failed_at == 1
        assert h.ctx.bodies() == [{"n": 4, "d": 2, "half": 2.0}]
        assert h.ctx.emitted["out"][0].id == derived_id("a", "m", "out", 0)
