"""Partial reload in process: only the gears a change touches restart; the rest keep running."""

from __future__ import annotations

from pathlib import Path

from tests.support import runtime as h
from fluxmix.mixer.activation import Activator
from fluxmix.runtime.reload import plan_reload
from fluxmix.store import Store
from fluxmix.transports.registry import Brokers
from tests.support.activation import _reset_test_gears, activator, reload_mode, store  # noqa: F401
from tests.support.polling import wait_until

TWO = """\
name: two
# {comment}
gears:
  - {{name: src, type: t-counter, config: {{checkpoint_every: 5}}}}
  - {{name: a, type: t-pass}}
  - {{name: sink_a, type: t-collect}}
  - {{name: b, type: t-pass, config: {{tag: {tag}}}}}
  - {{name: sink_b, type: t-collect{sink_b}}}
wires:
  - {{from: src.out, to: a.in, transport: memory, queue_size: 8}}
  - {{from: a.out, to: sink_a.in, transport: memory, queue_size: 8}}
  - {{from: src.out, to: b.in, transport: memory, queue_size: 8}}
  - {{from: b.out, to: sink_b.in, transport: memory, queue_size: 8}}
"""


def two(tag: int = 1, comment: str = "v", sink_b: str = "") -> str:
    return TWO.format(tag=tag, comment=comment, sink_b=sink_b)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "two.yaml"
    path.write_text(text)
    return str(path)


def seqs(sink: str) -> list[int]:
    return [b["seq"] for b in h.SEEN.get(sink, [])]


async def flowing(sink: str, n: int) -> None:
    start = len(h.SEEN.get(sink, []))
    await wait_until(lambda: len(h.SEEN.get(sink, [])) >= start + n)


def instances(act: Activator) -> dict[str, int]:
    assert act.current is not None
    return {name: id(r.gear) for name, r in act.current.runners.items()}


async def stop_and_check_exactly_once(act: Activator) -> None:
    await act.shutdown()
    for sink in ("sink_a", "sink_b"):
        got = [b["seq"] for b in h.SEEN.get(sink, []) if b["_port"] == "in"]
        assert got == list(range(1, len(got) + 1)), f"{sink}: not every seq exactly once, in order"


async def test_a_config_change_restarts_only_that_gear_and_both_ends_of_nothing_else(
        tmp_path: Path, activator: Activator) -> None:
    path = write(tmp_path, two(tag=1))
    assert (await activator.activate(path, trigger="startup")).outcome == "activated"
    await flowing("sink_a", 50)
    await flowing("sink_b", 50)
    before = instances(activator)
    runtime = activator.current
    handled_a = runtime.runners["sink_a"].counters.handled
    write(tmp_path, two(tag=2))
    entry = await activator.activate(path, trigger="reload")
    assert entry.outcome == "activated", entry.reason
    assert activator.current is runtime
    after = instances(activator)
    assert {n for n in before if before[n] != after[n]} == {"b"}
    assert entry.reload["gears_restarted"] == ["b"] and entry.reload["gears_total"] == 5
    assert "restarted 1 of 5 gears (b)" in entry.reason
    assert runtime.runners["sink_a"].counters.handled >= handled_a  # never reset
    b = runtime.runners["b"]
    assert b.generation == 2 and b.carried.handled > 0
    status = runtime.status().gears["b"]
    assert status.handled >= status.since_start["handled"] and status.up_since is not None
    assert status.instance == 2 and status.restarted_at == status.up_since
    await flowing("sink_b", 50)
    await stop_and_check_exactly_once(activator)


async def test_a_comment_only_edit_restarts_nothing(tmp_path: Path, activator: Activator) -> None:
    path = write(tmp_path, two(comment="one"))
    await activator.activate(path, trigger="startup")
    await flowing("sink_b", 20)
    before = instances(activator)
    write(tmp_path, two(comment="two"))
    entry = await activator.activate(path, trigger="reload")
    assert entry.outcome == "activated", entry.reason
    assert entry.gap_seconds == 0.0 and "0 of 5 gears restarted" in entry.reason
    assert instances(activator) == before
    assert activator.current.scenario_hash == entry.to_hash
    await flowing("sink_b", 20)
    await stop_and_check_exactly_once(activator)


async def test_a_failing_new_gear_rolls_back_to_the_previous_gears(tmp_path: Path, activator: Activator) -> None:
    path = write(tmp_path, two())
    await activator.activate(path, trigger="startup")
    await flowing("sink_b", 30)
    before = instances(activator)
    write(tmp_path, two(sink_b=", config: {fail_start: true}"))
    entry = await activator.activate(path, trigger="reload")
    assert entry.outcome == "rolled-back", entry.reason
    assert "cannot open the thing" in entry.reason
    after = instances(activator)
    assert {n for n in before if before[n] != after[n]} == {"sink_b"}  # fresh instances of the old specs
    assert activator.current.runners["sink_b"].spec.config == {}
    await flowing("sink_b", 30)
    await flowing("sink_a", 30)
    await stop_and_check_exactly_once(activator)


async def test_wires_added_and_removed_at_runtime_lose_nothing(tmp_path: Path, activator: Activator) -> None:
    path = write(tmp_path, two())
    await activator.activate(path, trigger="startup")
    await flowing("sink_b", 30)
    rewired = two() + "  - {from: a.out, to: sink_b.other, transport: memory, queue_size: 4}\n"
    write(tmp_path, rewired)
    entry = await activator.activate(path, trigger="reload")
    assert entry.outcome == "activated", entry.reason
    assert sorted(entry.reload["gears_restarted"]) == ["a", "sink_b"]
    await wait_until(lambda: any(b["_port"] == "other" for b in h.SEEN["sink_b"]))
    write(tmp_path, two())
    assert (await activator.activate(path, trigger="reload")).outcome == "activated"
    await flowing("sink_b", 30)
    await stop_and_check_exactly_once(activator)
    other = [b["seq"] for b in h.SEEN["sink_b"] if b["_port"] == "other"]
    assert other == list(range(other[0], other[0] + len(other)))  # the added wire lost nothing either


def test_a_rename_restarts_everything_and_says_why() -> None:
    old = h.scenario("x", [("s", "t-counter", {}), ("k", "t-collect", {})], [("s.out", "k.in")])
    new = h.scenario("y", [("s", "t-counter", {}), ("k", "t-collect", {})], [("s.out", "k.in")])
    plan = plan_reload(old, new)
    assert plan.full and "renamed" in plan.reasons[0]


def test_a_wire_moving_transport_restarts_its_two_ends() -> None:
    gears = [("s", "t-counter", {}), ("p", "t-pass", {}), ("k", "t-collect", {})]
    old = h.scenario("x", gears, [("s.out", "p.in"), ("p.out", "k.in")])
    new = h.scenario("x", gears, [("s.out", "p.in"), ("p.out", "k.in", {"transport": "standard"})])
    plan = plan_reload(old, new)
    assert plan.affected == {"p", "k"} and plan.gears_kept == ("s",)
    assert "moved from memory to standard" in plan.reasons[0]


async def test_a_partial_reload_that_fails_verification_is_undone(tmp_path: Path, store: Store) -> None:
    act = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10, verify_within=3.0, expect_interval=0.05)
    try:
        path = write(tmp_path, two())
        first = await act.activate(path, trigger="startup")
        assert first.outcome == "activated", first.reason
        await flowing("sink_b", 20)
        before = instances(act)
        never = two(tag=2) + "expect:\n  - sink_b.handled >= 100000000 within 60s\n"  # cannot pass in 3s
        entry = await act.activate(write(tmp_path, never), trigger="reload")
        assert entry.outcome == "rolled-back", entry.reason
        assert "expectations did not pass" in entry.reason and entry.reload["gears_restarted"] == ["b"]
        after = instances(act)
        assert {n for n in before if before[n] != after[n]} == {"b"}
        assert act.current.runners["b"].spec.config == {"tag": 1} and act.current.runners["b"].generation == 3
        assert act.current.scenario.expect == () or not act.current.scenario.expect
        assert act.current_loaded.hash == first.to_hash
        await flowing("sink_b", 20)
    finally:
        await act.shutdown()


async def test_counters_of_what_a_reload_removes_are_retired_not_lost(tmp_path: Path, activator: Activator) -> None:
    path = write(tmp_path, two())
    await activator.activate(path, trigger="startup")
    await flowing("sink_b", 20)
    runtime = activator.current
    runtime.take_retired()
    without_b = "\n".join(line for line in two().splitlines() if "b" not in line.split("name:")[-1][:8]
                          and "b.in" not in line and "b.out" not in line) + "\n"
    entry = await activator.activate(write(tmp_path, without_b), trigger="reload")
    assert entry.outcome == "activated", entry.reason
    assert sorted(entry.reload["gears_removed"]) == ["b", "sink_b"]
    retired = runtime.take_retired()
    assert set(retired.gears) == {"b", "sink_b"} and retired.gears["sink_b"].handled >= 20
    assert set(retired.wires) == {"src.out->b.in", "b.out->sink_b.in"}
    await stop_and_check_exactly_once(activator)


async def test_the_gap_of_a_restarted_sink_is_measured(tmp_path: Path, activator: Activator) -> None:
    path = write(tmp_path, two())
    await activator.activate(path, trigger="startup")
    await flowing("sink_b", 20)
    entry = await activator.activate(write(tmp_path, two(sink_b=", config: {note: x}")), trigger="reload")
    assert entry.outcome == "activated" and entry.reload["gears_restarted"] == ["sink_b"], entry.reason
    assert entry.gap_seconds is not None and entry.gap_seconds >= 0
    await stop_and_check_exactly_once(activator)


async def test_a_stuck_stop_is_bounded_by_the_stop_timeout(tmp_path: Path, store: Store) -> None:
    """A restarted gear that never finishes the message in hand (here: blocked; in life: NATS away)
    costs --stop-timeout, not the activation lock forever; the rest keeps flowing."""
    act = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=1.0)
    try:
        path = write(tmp_path, two())
        await act.activate(path, trigger="startup")
        await flowing("sink_b", 20)
        import asyncio

        h.GATES["sink_b"] = asyncio.Event()  # the old sink_b blocks on its next message
        await wait_until(lambda: act.current.runners["sink_b"].gear.active > 0)
        entry = await asyncio.wait_for(act.activate(write(tmp_path, two(sink_b=", config: {note: x}")),
                                                    trigger="reload"), 30)
        assert entry.outcome == "activated", entry.reason
        assert "timed out after 1s" in entry.reason and entry.reload["gears_restarted"] == ["sink_b"]
        h.GATES["sink_b"].set()
        await flowing("sink_a", 20)
        await flowing("sink_b", 20)
    finally:
        h.GATES.clear()
        await act.shutdown()
