"""Settle what a fleet member that will not come back left behind (`fluxmix fleet release MEMBER`).

A member killed for good can leave, at the end of each of its `file-out` files, the lines of its
last round that it wrote but never committed fleet-wide (fluxmix.fleet.claims). Another member
takes those messages over and writes them in its own file, so the union would hold them twice.
A restart of the member with its id and volume settles its files: file-out's start cuts the
unacknowledged tail and keeps the lines of it that the member had committed. Release runs that
same start (and a stop) for every file-out of the member's last active scenario, on the member's
store and volume, without running anything else, then releases the source leases still naming it
(its registration is already gone: release refuses a registered member).

It refuses while the member is registered: a live member settles its own files, and a release
racing it would cut lines it is about to commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from fluxmix.errors import FleetError, FluxmixError, UserError
from fluxmix.fleet import kvconn, naming
from fluxmix.fleet.claims import SinkClaims
from fluxmix.refs import short_hash

log = logging.getLogger(__name__)

SINK_TYPE = "file-out"  # the one sink type with fleet-wide claims


@dataclass(slots=True)
class SettledSink:
    gear: str
    path: str
    cut_bytes: int  # the uncommitted lines removed from the end of its file


@dataclass(slots=True)
class ReleaseReport:
    fleet: str
    member: str
    scenario: str | None  # name of the member's last active scenario (None: it had none)
    sinks: list[SettledSink] = field(default_factory=list)
    leases_released: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "member": self.member, "scenario": self.scenario,
                "sinks": [{"gear": s.gear, "path": s.path, "cut_bytes": s.cut_bytes} for s in self.sinks],
                "leases_released": self.leases_released}


class SinkContext:
    """What file-out reads from its context at start and stop: the member's claims, no runtime
    (a sink started outside a mixer: here, and in tests)."""

    def __init__(self, scenario: str, scenario_hash: str, gear: str, claims: SinkClaims) -> None:
        self.scenario_name = scenario
        self.scenario_hash = scenario_hash
        self.gear_name = gear
        self.log = logging.getLogger(f"fluxmix.gear.{gear}")
        self.stopping = asyncio.Event()
        self.claims = claims


async def _bucket(js: JetStreamContext, fleet: str, bucket: str) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        raise UserError(f"fleet {fleet}: no such fleet on this NATS (bucket {bucket} is missing)") from None


async def release_member(fleet: str, member: str, servers: list[str], connect_options: dict[str, Any], *,
                         store: Any, catalog: Any, base_dir: Path) -> ReleaseReport:
    """Settle `member`'s file-out files (paths relative to `base_dir`, its working directory) from
    its store's last active scenario, then release the leases still naming it."""
    naming.check_fleet_name(fleet)
    naming.check_member_id(member, "MEMBER")
    if not base_dir.is_dir():  # else every sink file looks missing and the release reports nothing cut
        raise UserError(f"--dir {str(base_dir)[:80]!r}: no such directory (the member's working directory)")
    if not servers:
        raise UserError("fleet release needs --nats-url: the fleet's buckets are on its NATS cluster")
    nc = await kvconn.connect(servers, connect_options, name=f"fluxmix-fleet-release-{member}")
    try:
        js = nc.jetstream()
        members = await _bucket(js, fleet, naming.members_bucket(fleet))
        leases = await _bucket(js, fleet, naming.leases_bucket(fleet))
        claims_kv = await _bucket(js, fleet, naming.claims_bucket(fleet))
        await _refuse_if_registered(members, fleet, member)
        report = ReleaseReport(fleet, member, None)

        async def alive(_member: str, _incarnation: str) -> bool:
            return False  # only asked when claiming, which a release never does

        claims = SinkClaims(claims_kv, member, f"release-{secrets.token_hex(4)}", alive, live_wait=0)
        await _settle_sinks(report, store, catalog, claims, base_dir)
        report.leases_released = await _release_leases(leases, member)
        return report
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        raise FleetError(f"fleet {fleet}: release of {member} failed: {type(exc).__name__}: {exc}") from None
    finally:
        try:
            await nc.close()
        except Exception:  # closing must not hide the result
            pass


async def _refuse_if_registered(members: KeyValue, fleet: str, member: str) -> None:
    try:
        entry = await members.get(member)
    except nats.js.errors.KeyNotFoundError:
        return
    try:
        record = json.loads(entry.value or b"{}")
    except ValueError:
        record = {}
    where = f" (pid {record.get('pid')} on {record.get('host')})" if record.get("pid") else ""
    raise UserError(f"fleet {fleet}: member {member} is registered{where}: stop it (it settles its own files), "
                    "or wait until its registration ages out (--fleet-member-ttl), then release it")


async def _settle_sinks(report: ReleaseReport, store: Any, catalog: Any, claims: SinkClaims, base_dir: Path) -> None:
    from fluxmix.gears.file_out import FileOut
    from fluxmix.loading import resolve_scenario

    active = store.mixer_state().active_hash
    if not active:
        return
    try:
        loaded = await asyncio.to_thread(resolve_scenario, store, f"sha256:{active}", catalog=catalog)
    except FluxmixError as error:
        raise FleetError(f"the member's active scenario {short_hash(active)} cannot be read: {error}") from None
    report.scenario = loaded.name
    for gear in loaded.scenario.gears:
        if gear.type != SINK_TYPE:
            continue
        path = Path(str(gear.config["path"])).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.exists():
            report.sinks.append(SettledSink(gear.name, str(path), 0))
            continue
        config = {**gear.config, "path": str(path)}
        sink = FileOut(gear.name, config, SinkContext(loaded.name, loaded.hash, gear.name, claims))
        try:
            await sink.start()  # reads the tail, keeps what this member committed, cuts the rest
        finally:
            await sink.stop()  # closes what a start that failed half-way opened
        report.sinks.append(SettledSink(gear.name, str(path), sink.cut_bytes))


async def _release_leases(leases: KeyValue, member: str) -> list[str]:
    try:
        keys = await leases.keys()
    except nats.js.errors.NoKeysError:
        return []
    released = []
    for key in keys:
        try:
            entry = await leases.get(key)
            holder = json.loads(entry.value or b"{}")
        except (nats.js.errors.KeyNotFoundError, ValueError):
            continue
        if holder.get("member") != member:
            continue
        try:
            await leases.delete(key, last=entry.revision)  # only if it still names the member
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        released.append(key)
    return released

