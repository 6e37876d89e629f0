"""`generate`: sequence, body, count across restarts, checkpoints, pacing, stopping."""

from __future__ import annotations

import asyncio

import pytest

from fluxmix.errors import ReadOnlyBodyError, ValidationError
from fluxmix.gears.generate import CHECKPOINT_EVERY, Generate
from fluxmix.gears.testing import GearHarness, config_problems


async def test_emits_count_messages_with_seq_and_body() -> None:
    h = GearHarness("generate", {"count": 3, "body": {"kind": "demo", "amount": 5}}, name="src")
    bodies = await h.run_source()
    assert bodies == [{"kind": "demo", "amount": 5, "seq": n} for n in (1, 2, 3)]
    ids = [m.id for m in h.ctx.emitted["out"]]
    assert ids == ["test/src/1", "test/src/2", "test/src/3"]  # deterministic: position = seq
    assert h.ctx.checkpoint == 4  # the next seq


async def test_nested_body_values_are_copied_per_message() -> None:
    h = GearHarness("generate", {"count": 2, "body": {"tags": ["a"], "meta": {"x": 1}}})
    bodies = await h.run_source()
    with pytest.raises(ReadOnlyBodyError):
        bodies[0]["tags"].append("mutated")
    assert bodies[1]["tags"] == ["a"] and bodies[0]["tags"] is not bodies[1]["tags"]


async def test_seq_wins_over_a_seq_in_body() -> None:
    bodies = await GearHarness("generate", {"count": 1, "body": {"seq": "mine"}}).run_source()
    assert bodies == [{"seq": 1}]


async def test_count_is_the_total_across_restarts() -> None:
    first = GearHarness("generate", {"count": 10}, stop_after=4)
    assert [b["seq"] for b in await first.run_source()] == [1, 2, 3, 4]
    assert first.ctx.checkpoint == 5

    second = GearHarness("generate", {"count": 10}, checkpoint=first.ctx.checkpoint)
    assert [b["seq"] for b in await second.run_source()] == [5, 6, 7, 8, 9, 10]

    third = GearHarness("generate", {"count": 10}, checkpoint=second.ctx.checkpoint)
    assert await third.run_source() == []  # already done: returns at once


async def test_count_zero_emits_nothing() -> None:
    assert await GearHarness("generate", {"count": 0}).run_source() == []


async def test_without_count_runs_until_stopping() -> None:
    h = GearHarness("generate", {}, stop_after=2500)
    bodies = await h.run_source()
    assert [b["seq"] for b in bodies] == list(range(1, 2501))
    assert h.ctx.checkpoint == 2501


async def test_checkpoints_periodically_while_running() -> None:
    h = GearHarness("generate", {"count": 2 * CHECKPOINT_EVERY + 5})
    await h.run_source()
    saved = h.ctx.saved_checkpoints
    assert saved[-1] == 2 * CHECKPOINT_EVERY + 6
    assert len(saved) >= 3  # not only at the end
    assert saved == sorted(saved)


async def test_an_unreadable_checkpoint_restarts_at_one() -> None:
    h = GearHarness("generate", {"count": 2}, checkpoint="garbage")
    assert [b["seq"] for b in await h.run_source()] == [1, 2]


class FakeClock:
    """A clock the test drives: sleeping advances it, so pacing is checked without real time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_rate_schedules_against_the_start_time() -> None:
    h = GearHarness("generate", {"count": 5, "rate": 10})
    clock = FakeClock()
    gen = h.gear
    assert isinstance(gen, Generate)
    gen.clock, gen.sleep = clock, clock.sleep
    await h.run_source()
    # message k is due at start + (k-1)/rate: the first at once, then one every 0.1 s
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert clock.now == pytest.approx(100.4)


async def test_rate_does_not_drift_when_emitting_takes_time() -> None:
    h = GearHarness("generate", {"count": 4, "rate": 10})
    clock = FakeClock()
    gen = h.gear
    gen.clock, gen.sleep = clock, clock.sleep
    real_emit = h.ctx.emit

    async def slow_emit(*args, **kwargs):  # each emit costs 0.03 s of (fake) time
        clock.now += 0.03
        await real_emit(*args, **kwargs)

    h.ctx.emit = slow_emit  # type: ignore[method-assign]
    await h.run_source()
    # sleeps shrink by the time spent emitting: the schedule, not the gaps, is fixed
    assert clock.sleeps == pytest.approx([0.07, 0.07, 0.07])
    assert clock.now == pytest.approx(100.3 + 0.03)


async def test_rate_falling_far_behind_resets_the_schedule_instead_of_bursting() -> None:
    h = GearHarness("generate", {"count": 3, "rate": 10})
    clock = FakeClock()
    gen = h.gear
    gen.clock, gen.sleep = clock, clock.sleep
    real_emit = h.ctx.emit

    async def stall_once(*args, **kwargs):
        if not h.ctx.total_emitted:
            clock.now += 5.0  # the wires blocked for 5 s
        await real_emit(*args, **kwargs)

    h.ctx.emit = stall_once  # type: ignore[method-assign]
    await h.run_source()
    assert clock.sleeps == pytest.approx([0.1])  # seq 2 right away (new schedule), seq 3 0.1 s later


async def test_a_paced_generator_stops_promptly_when_asked() -> None:
    h = GearHarness("generate", {"rate": 0.001})  # one message every 1000 s
    await h.start()
    task = asyncio.create_task(h.gear.run())
    while h.ctx.total_emitted < 1:
        await asyncio.sleep(0.001)
    h.ctx.stopping.set()
    await asyncio.wait_for(task, 10)  # returns on the event, not after the 1000 s sleep
    await h.stop()
    assert h.ctx.bodies() == [{"seq": 1}]
    assert h.ctx.checkpoint == 2


async def test_a_real_rate_terminates_and_emits_all() -> None:
    assert len(await GearHarness("generate", {"count": 20, "rate": 2000}).run_source()) == 20


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"count": -1}, "config.count"),
        ({"count": 1.5}, "config.count"),
        ({"rate": 0}, "config.rate"),
        ({"rate": -2}, "config.rate"),
        ({"body": [1]}, "config.body"),
        ({"colour": "red"}, "config"),
    ],
)
def test_config_validation(config: dict, where: str) -> None:
    problems = config_problems(Generate, config)
    assert [p.location for p in problems] == [where]
    with pytest.raises(ValidationError):
        GearHarness("generate", config)


def test_declarations() -> None:
    assert Generate.is_source()
    assert [p.name for p in Generate.input_ports({})] == []
    assert [p.name for p in Generate.output_ports({})] == ["out"]


async def test_unpaced_batches_stop_exactly_where_the_harness_stops_them() -> None:
    """Unpaced generate emits 256 at a time (emit_many): a stop after 300 still emits 1..300,
    ids from seq, and checkpoints 301; a subclass reading next_seq in _copy sees each seq."""

    class PerSeq(Generate):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            self._copy = lambda _template: {"twice": 2 * self.next_seq}

    h = GearHarness(PerSeq, {}, name="src", stop_after=300)
    bodies = await h.run_source()
    assert bodies == [{"twice": 2 * n, "seq": n} for n in range(1, 301)]
    assert [m.id for m in h.ctx.emitted["out"]][-1] == "test/src/300"
    assert h.ctx.checkpoint == 301 and h.gear.next_seq == 301


async def test_unpaced_bodies_are_frozen_at_once_with_seq_in_its_place() -> None:
    """A flat template is frozen once; each body is a read-only copy with its seq (in the
    template's `seq` position when it has one), like the bodies emit froze before."""
    from fluxmix.message import FrozenDict

    h = GearHarness("generate", {"count": 300, "body": {"seq": "mine", "kind": "demo"}})
    bodies = await h.run_source()
    assert [type(b) for b in bodies] == [FrozenDict] * 300
    assert list(bodies[0].items()) == [("seq", 1), ("kind", "demo")]
    assert [b["seq"] for b in bodies] == list(range(1, 301))
    with pytest.raises(ReadOnlyBodyError):
        bodies[0]["kind"] = "changed"

