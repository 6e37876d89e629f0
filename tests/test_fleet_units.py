"""The fleet's building blocks against a real nats-server: leases (with fencing), KV
checkpoints, fleet-wide sink claims, the desired scenario, member ids."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import nats
import pytest

from fluxmix.errors import FleetError, LeaseLostError, UserError
from fluxmix.fleet import kvconn
from fluxmix.fleet.checkpoints import KvCheckpoints
from fluxmix.fleet.claims import SinkClaims
from fluxmix.fleet.desired import DesiredScenario
from fluxmix.fleet.leases import SourceLeases
from fluxmix.fleet.member import member_id
from fluxmix.fleet.membership import Membership
from fluxmix.fleet.naming import check_fleet_name, claim_key

pytestmark = pytest.mark.nats

TTL = 2.0


async def buckets(url: str, fleet: str):  # type: ignore[no-untyped-def]
    nc = await nats.connect(url)
    found = await kvconn.open_buckets(nc.jetstream(), fleet, member_ttl=TTL, lease_ttl=TTL, claim_ttl=600, replicas=1)
    return nc, found


async def test_one_holder_at_a_time_and_a_paused_holder_is_fenced_before_anyone_else_acquires(
    nats_url: str, unique_name: str
) -> None:
    nc, b = await buckets(nats_url, unique_name)
    a = SourceLeases(b.leases, "a", "a1", ttl=TTL)
    other = SourceLeases(b.leases, "b", "b1", ttl=TTL)
    never = asyncio.Event()
    try:
        assert await a.acquire("sc", "src", never)
        assert a.valid("sc", "src")
        waiting = asyncio.create_task(other.acquire("sc", "src", never))
        await asyncio.sleep(TTL * 1.5)  # A renews: B keeps waiting
        assert not waiting.done() and a.valid("sc", "src")
        # A is "paused": no more renewals (as under SIGSTOP). Its local deadline ends first...
        await a.close()
        paused_at = time.monotonic()
        while a.valid("sc", "src"):
            await asyncio.sleep(0.02)
        fenced_after = time.monotonic() - paused_at
        assert not waiting.done(), "B acquired while A could still emit"
        # ... and only then, after the key aged out, does B get it.
        assert await asyncio.wait_for(waiting, TTL * 4)
        assert fenced_after < time.monotonic() - paused_at
        # A wakes up and renews with its old revision: the compare-and-set fails, A lost it for good.
        lease = a._leases["sc.src"]
        lease.deadline = time.monotonic() + 5  # pretend its clock had not noticed
        await a._renew(lease)
        assert lease.lost.is_set() and not a.valid("sc", "src")
        assert other.valid("sc", "src")
    finally:
        await other.close()
        await nc.close()


async def test_a_released_lease_is_taken_at_once_and_checkpoints_follow_it(nats_url: str, unique_name: str) -> None:
    nc, b = await buckets(nats_url, unique_name)
    loop = asyncio.get_running_loop()
    a = SourceLeases(b.leases, "a", "a1", ttl=TTL)
    other = SourceLeases(b.leases, "b", "b1", ttl=TTL)
    a_points, b_points = KvCheckpoints(b.checkpoints, loop, a), KvCheckpoints(b.checkpoints, loop, other)
    never = asyncio.Event()
    try:
        assert await a.acquire("sc", "src", never)
        await asyncio.to_thread(a_points.save_checkpoint, "sc", "src", 42)
        with pytest.raises(LeaseLostError):  # B does not hold it: its save is refused
            await asyncio.to_thread(b_points.save_checkpoint, "sc", "src", 1)
        await a.release("sc", "src")
        started = time.monotonic()
        assert await other.acquire("sc", "src", never)
        assert time.monotonic() - started < TTL / 2  # no wait for the TTL after a release
        assert await asyncio.to_thread(b_points.load_checkpoint, "sc", "src") == 42
        with pytest.raises(LeaseLostError):
            await asyncio.to_thread(a_points.save_checkpoint, "sc", "src", 43)
    finally:
        await a.close()
        await other.close()
        await nc.close()


async def test_a_restarted_member_takes_back_its_own_lease_without_waiting(nats_url: str, unique_name: str) -> None:
    nc, b = await buckets(nats_url, unique_name)
    old, new = SourceLeases(b.leases, "a", "old", ttl=30), SourceLeases(b.leases, "a", "new", ttl=30)
    never = asyncio.Event()
    try:
        assert await old.acquire("sc", "src", never)
        await old.close()  # killed: its key lives on for 30 s
        assert await asyncio.wait_for(new.acquire("sc", "src", never), 5)
    finally:
        await new.close()
        await nc.close()


async def test_claims_one_writer_per_message_across_members(nats_url: str, unique_name: str) -> None:
    nc, b = await buckets(nats_url, unique_name)
    ma = Membership(b.members, "a", "a1", ttl=TTL, describe=dict)
    mb = Membership(b.members, "b", "b1", ttl=TTL, describe=dict)
    await ma.register()
    await mb.register()
    ca = SinkClaims(b.claims, "a", "a1", mb.alive, live_wait=10).for_gear("sc", "sink")
    cb = SinkClaims(b.claims, "b", "b1", mb.alive, live_wait=10).for_gear("sc", "sink")
    try:
        assert await ca.claim(["m1", "m2", "m3"]) == {"m1", "m2", "m3"}
        # B gets m1 redelivered while A (alive) has not committed: B waits for A's commit, then skips.
        waiting = asyncio.create_task(cb.claim(["m1"]))
        await asyncio.sleep(0.6)
        assert not waiting.done()
        assert await ca.commit(["m1"]) == set()
        assert await asyncio.wait_for(waiting, 5) == set()
        # A dies (its registration is gone) with m2 written but not committed: B takes it over.
        await ma.leave()
        assert await cb.claim(["m2"]) == {"m2"}
        assert await cb.commit(["m2"]) == set()
        # A was only paused: its commit of m2 fails, so A removes its line; m3 is still A's.
        assert await ca.commit(["m2", "m3"]) == {"m2"}
        assert await ca.committed_here(["m1", "m2", "m3"]) == {"m1", "m3"}
        assert await cb.committed_here(["m1", "m2", "m3"]) == {"m2"}
        entry = await b.claims.get(claim_key("sc", "sink", "m2"))
        assert json.loads(entry.value)["m"] == "b"
    finally:
        await nc.close()


async def test_the_desired_scenario_is_verified_on_arrival(nats_url: str, unique_name: str) -> None:
    nc, b = await buckets(nats_url, unique_name)
    desired = DesiredScenario(b.desired, b.scenarios, "a")
    data = b"name: x\ngears: []\nwires: []\n"
    digest = hashlib.sha256(data).hexdigest()
    try:
        assert await desired.current() is None
        await desired.publish(digest, data, "x")
        current = await desired.current()
        assert current is not None and current.hash == digest and current.by == "a"
        assert await desired.fetch(digest) == data
        # Bytes that do not match their name are never used.
        await b.scenarios.put("0" * 64, data)
        with pytest.raises(FleetError, match="do not match"):
            await desired.fetch("0" * 64)
        with pytest.raises(FleetError, match="not in the fleet"):
            await desired.fetch("1" * 64)
        with pytest.raises(FleetError):
            await desired.publish("2" * 64, data, "x")
    finally:
        await nc.close()


def test_member_id_is_kept_in_the_store_and_names_are_checked(tmp_path: Path) -> None:
    first = member_id(tmp_path, None)
    assert member_id(tmp_path, None) == first
    assert member_id(tmp_path, "pod-0") == "pod-0"
    for bad in ("", "a b", "../x", "x" * 70):
        with pytest.raises(UserError):
            member_id(tmp_path, bad) if bad else check_fleet_name(bad)
    with pytest.raises(UserError):
        check_fleet_name("Bad.Name")


class _SinkContext:
    """What file-out reads from its context, with a fleet's claims."""

    def __init__(self, claims: SinkClaims) -> None:
        import logging

        self.scenario_name = "sc"
        self.scenario_hash = "h"
        self.gear_name = "sink"
        self.log = logging.getLogger("test.sink")
        self.stopping = asyncio.Event()
        self.claims = claims


async def test_file_out_in_a_fleet_keeps_what_it_committed_before_a_crash_and_cuts_the_rest(
    nats_url: str, unique_name: str, tmp_path: Path
) -> None:
    from fluxmix.gears.file_out import FileOut
    from fluxmix.message import Message

    nc, b = await buckets(nats_url, unique_name)
    members = Membership(b.members, "a", "a1", ttl=TTL, describe=dict)
    path = tmp_path / "out.jsonl"
    config = {"path": str(path), "envelope": True}
    msgs = [Message(f"sc/source/{i}", {"seq": i}) for i in range(1, 5)]
    try:
        first = FileOut("sink", config, _SinkContext(SinkClaims(b.claims, "a", "a1", members.alive, live_wait=5)))
        await first.start()
        await first.handle_batch("in", msgs[:2])
        await first.flush()  # m1, m2: committed fleet-wide, then recorded locally
        await first.handle_batch("in", msgs[2:])
        assert first._claims is not None
        await first._write_claimed()  # m3, m4 claimed and written (flush's first half) ...
        await first._claims.commit([msgs[2].id])  # ... m3 committed, then "kill -9" before the local record
        first._close()
        assert [json.loads(line)["body"]["seq"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]

        # The member comes back (same member id, new process): m3 is kept, m4 (never committed) cut.
        again = FileOut("sink", config, _SinkContext(SinkClaims(b.claims, "a", "a2", members.alive, live_wait=5)))
        await again.start()
        assert [json.loads(line)["body"]["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]
        await again.handle_batch("in", msgs)  # everything redelivered: only m4 is written again
        await again.flush()
        await again.stop()
        assert [json.loads(line)["body"]["seq"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]

        # Without envelopes a fleet sink cannot tell its lines apart: refused at start.
        bare = FileOut("sink", {"path": str(tmp_path / "bare.jsonl")},
                       _SinkContext(SinkClaims(b.claims, "a", "a3", members.alive, live_wait=5)))
        with pytest.raises(Exception, match="envelope: true"):
            await bare.start()
    finally:
        await nc.close()


def test_fleet_flags_are_checked_before_anything_starts(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    mixerd = Path(sys.executable).parent / "fluxmix-mixer"
    env = {**os.environ, "FLUXMIX_HOME": str(tmp_path)}
    env.pop("FLUXMIX_NATS_URL", None)
    for args, says in (
        (["--fleet", "demo"], "--fleet needs --nats-url"),
        (["--fleet", "Bad.Name", "--nats-url", "nats://127.0.0.1:1"], "a fleet name is"),
        (["--fleet", "demo", "--fleet-member", "../x", "--nats-url", "nats://127.0.0.1:1"], "a member id is"),
        (["--fleet-member", "m1"], "--fleet-member needs --fleet"),
    ):
        done = subprocess.run([str(mixerd), "--no-http", *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr, (args, done.stderr)


def test_status_fleet_says_pending_for_a_member_that_has_not_answered_the_desired_scenario() -> None:
    """A member's record older than the desired scenario shows its earlier answer as `last:`, not
    as if it were the answer to the desired one (it has not acted on it yet, or its record has not
    reached this member's view)."""
    from fluxmix.cli.mixer import render_fleet

    new, old = "e7" * 32, "7a" * 32
    text = render_fleet({
        "name": "demo", "member": "m1", "as_of": None,
        "desired": {"hash": new, "name": "flow", "by": "m1"},
        "members": [
            {"member": "m1", "state": "running", "ready": True, "active_hash": new, "in_sync": True, "handled": 5,
             "fleet_sync": {"hash": new, "outcome": "activated", "reason": "published by this member"}},
            {"member": "m2", "state": "running", "ready": True, "active_hash": old, "in_sync": False, "handled": 5,
             "fleet_sync": {"hash": new, "outcome": "rolled-back", "reason": "gear sink: start failed: blocked"}},
            {"member": "m3", "state": "running", "ready": True, "active_hash": old, "in_sync": False, "handled": 5,
             "fleet_sync": {"hash": old, "outcome": "activated", "reason": "published by this member"}},
            {"member": "m4", "state": "running", "ready": True, "active_hash": old, "in_sync": False, "handled": 0},
        ],
    })
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("m")}
    assert rows["m1"].endswith(f"activated sha256:{new[:12]}")
    assert rows["m2"].endswith(f"rolled-back sha256:{new[:12]}: gear sink: start failed: blocked")
    assert rows["m3"].endswith(f"pending sha256:{new[:12]} (last: activated sha256:{old[:12]})")
    assert rows["m4"].endswith(f"pending sha256:{new[:12]}")
    assert "pending" not in render_fleet({"name": "demo", "member": "m1", "desired": None, "members": [
        {"member": "m1", "fleet_sync": {"hash": old, "outcome": "activated"}}]})


async def test_leave_ends_the_heartbeat_even_when_a_kv_call_swallows_its_cancel(tmp_path: Path) -> None:
    """A cancel that lands inside a KV call can be swallowed (Python 3.11's wait_for); the heartbeat
    loop then ran on and leave() waited for it forever: the member never exited after SIGTERM."""
    from fluxmix.fleet.member import FleetMember, FleetSettings

    class SwallowingMembership:
        beat_every = 0.01

        async def beat(self) -> None:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass  # what wait_for does when its inner future finished as the cancel arrived

        async def refresh(self) -> dict[str, object]:
            return {}

        async def leave(self) -> None:
            pass

    member = FleetMember(FleetSettings("demo", member="m1"), ["nats://127.0.0.1:1"], {}, replicas=1,
                         home=tmp_path, store=None)
    member.membership = SwallowingMembership()  # type: ignore[assignment]

    async def no_leases() -> list[dict[str, object]]:
        return []

    member._read_leases = no_leases  # type: ignore[method-assign]
    member._tasks = [asyncio.create_task(member._beat_loop())]
    await asyncio.sleep(0.02)
    await asyncio.wait_for(member.leave(), 10)
    assert all(task.done() for task in member._tasks)
