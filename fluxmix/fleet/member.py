"""One mixer as a member of a fleet: joins, takes part, reports, leaves.

The daemon creates a FleetMember for `--fleet NAME`, joins before its first activation (so the
first scenario already runs under leases, KV checkpoints and claims), runs `run()` beside the
API (heartbeat, the fleet view, following the desired scenario) and calls `leave()` after its
scenario drained on SIGTERM. Activations the operator makes on this member are published as
the fleet's desired scenario; the desired scenario published by others is fetched, verified,
imported into the local store and activated here with trigger `fleet`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors

from fluxmix.errors import FleetError, FluxmixError, UserError
from fluxmix.fleet import kvconn
from fluxmix.fleet.checkpoints import KvCheckpoints
from fluxmix.fleet.claims import SinkClaims
from fluxmix.fleet.desired import Desired, DesiredScenario
from fluxmix.fleet.leases import SourceLeases
from fluxmix.fleet.membership import Membership
from fluxmix.fleet.naming import check_fleet_name, check_member_id
from fluxmix.refs import short_hash

log = logging.getLogger(__name__)

MEMBER_FILE = "fleet-member"  # in the store directory: the member id survives restarts
PUBLISHING_TRIGGERS = ("startup", "api", "watch", "signal", "tag")  # not resume, not fleet
LEAVE_WAIT = 5.0  # seconds leave() waits for the heartbeat and sync loops (one KV call's timeout)


@dataclass(frozen=True, slots=True)
class FleetSettings:
    name: str
    member: str | None = None  # None: kept in <store>/fleet-member, generated at the first start
    member_ttl: float = 10.0  # seconds a member's registration outlives its last heartbeat
    lease_ttl: float = 10.0  # seconds a source lease outlives its last renewal
    claim_ttl: float = 3600.0  # seconds a sink claim is kept (must exceed any redelivery)
    sync_interval: float = 1.0  # how often the desired scenario is checked


def member_id(home: Path, given: str | None) -> str:
    """The member id: given, or the one kept in the store (generated once: host name + random)."""
    if given:
        return check_member_id(given)
    path = home / MEMBER_FILE
    try:
        kept = path.read_text().strip()
        if kept:
            return check_member_id(kept)
    except FileNotFoundError:
        pass
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40].strip("-_") or "member"
    generated = f"{host}-{secrets.token_hex(3)}"
    path.write_text(generated + "\n")
    return generated


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


class FleetMember:
    def __init__(self, settings: FleetSettings, servers: list[str], connect_options: dict[str, Any], *,
                 replicas: int, home: Path, store: Any) -> None:
        check_fleet_name(settings.name)
        if not servers:
            raise UserError("--fleet needs --nats-url: the members meet on a NATS cluster, not an embedded server")
        self.settings = settings
        self.servers = servers
        self.connect_options = connect_options
        self.replicas = replicas
        self.store = store
        self.member = member_id(home, settings.member)
        self.incarnation = secrets.token_hex(6)
        self.mixer: Any = None
        self.nc: Any = None
        self.leases: SourceLeases | None = None
        self.checkpoints: KvCheckpoints | None = None
        self.claims: SinkClaims | None = None
        self.membership: Membership | None = None
        self.desired: DesiredScenario | None = None
        self.desired_seen: Desired | None = None
        self.lease_view: list[dict[str, Any]] = []
        self.last_sync: dict[str, Any] | None = None  # the last desired scenario this member acted on
        self._applied: str | None = None  # hash of the desired scenario already acted on
        # Whether the fleet's KV answered the last heartbeat (join proves it the first time):
        # leases, claims and the desired scenario all live there, so /readyz follows it.
        self.kv_reachable = False
        self.kv_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._leaving = False  # leave() began: the loops end (even if a cancel was swallowed)

    # ---- join / leave ----

    async def join(self) -> None:
        s = self.settings
        self.nc = await kvconn.connect(self.servers, self.connect_options, name=f"fluxmix-fleet-{self.member}")
        js = self.nc.jetstream()
        buckets = await kvconn.open_buckets(js, s.name, member_ttl=s.member_ttl, lease_ttl=s.lease_ttl,
                                            claim_ttl=s.claim_ttl, replicas=self.replicas)
        self.leases = SourceLeases(buckets.leases, self.member, self.incarnation, ttl=s.lease_ttl)
        self.checkpoints = KvCheckpoints(buckets.checkpoints, asyncio.get_running_loop(), self.leases)
        self.membership = Membership(buckets.members, self.member, self.incarnation, ttl=s.member_ttl,
                                     describe=self.describe)
        self.claims = SinkClaims(buckets.claims, self.member, self.incarnation, self.membership.alive,
                                 live_wait=2 * s.member_ttl)
        self.desired = DesiredScenario(buckets.desired, buckets.scenarios, self.member)
        self._lease_kv = buckets.leases
        try:
            await self.membership.register()
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise FleetError(f"fleet {s.name}: cannot register member {self.member}: {exc}") from None
        self.kv_reachable = True
        log.info("joined fleet %s as member %s (incarnation %s)", s.name, self.member, self.incarnation,
                 extra={"fleet": s.name, "member": self.member})

    def attach(self, mixer: Any) -> None:
        """Make `mixer`'s activations run as this member: KV checkpoints, leases, claims."""
        self.mixer = mixer
        activator = mixer.activator
        activator.checkpoints = self.checkpoints
        activator.source_guard = self.leases
        activator.claims = self.claims
        mixer.fleet = self

    async def start(self) -> None:
        """Heartbeat, fleet view and desired-scenario sync, until leave()."""
        self._tasks = [asyncio.create_task(self._beat_loop(), name="fluxmix fleet heartbeat"),
                       asyncio.create_task(self._sync_loop(), name="fluxmix fleet sync")]

    async def leave(self) -> None:
        """After the scenario drained: release what is left, deregister, disconnect.

        The loops see `_leaving` as well as being cancelled, and are waited for with a bound: a
        cancel that lands inside a KV call can be swallowed (Python 3.11's wait_for, which nats-py's
        requests use), and the heartbeat loop then ran on forever, so a member did not exit after
        SIGTERM (tests/test_fleet_e2e.py kill -9 test, 2 in 25 loaded runs)."""
        self._leaving = True
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=LEAVE_WAIT)
            for task in stuck:
                log.warning("fleet %s: %s did not stop; leaving without it", self.settings.name, task.get_name())
        if self.leases is not None:
            await self.leases.release_all()
            await self.leases.close()
        if self.membership is not None:
            await self.membership.leave()
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:  # closing must not stop the exit
                pass

    # ---- heartbeat and view ----

    async def _beat_loop(self) -> None:
        assert self.membership is not None
        failures = 0
        while not self._leaving:
            try:
                await self.membership.beat()
                await self.membership.refresh()
                self.lease_view = await self._read_leases()
                self.desired_seen = await self.desired.current() if self.desired else None
                failures = 0
                if not self.kv_reachable:
                    log.info("fleet %s: KV reachable again", self.settings.name)
                self.kv_reachable, self.kv_error = True, None
            except (nats.errors.Error, asyncio.TimeoutError, FleetError) as exc:
                failures += 1
                self.kv_reachable = False
                self.kv_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("fleet %s: heartbeat failed (%d in a row): %s", self.settings.name, failures, exc)
            await asyncio.sleep(self.membership.beat_every)

    async def _read_leases(self) -> list[dict[str, Any]]:
        try:
            keys = await self._lease_kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        view = []
        for key in keys:
            try:
                entry = await self._lease_kv.get(key)
                holder = json.loads(entry.value or b"{}")
            except (nats.js.errors.KeyNotFoundError, ValueError):
                continue
            view.append({"lease": key, "member": holder.get("member"), "incarnation": holder.get("incarnation"),
                         "revision": entry.revision, "renewed": holder.get("renewed")})
        return view

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) of the fleet side: not ready while NATS or the fleet's KV cannot be
        reached (the member cannot renew leases, commit claims or see the desired scenario)."""
        name = self.settings.name
        if self.nc is None or not self.nc.is_connected:
            return False, f"fleet {name}: not connected to NATS"
        if not self.kv_reachable:
            return False, f"fleet {name}: its KV does not answer ({self.kv_error or 'no heartbeat yet'})"
        return True, f"fleet {name}: connected"

    def describe(self) -> dict[str, Any]:
        """What this member says about itself in each heartbeat (and so in everyone's status)."""
        mixer = self.mixer
        record: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
        if mixer is None:
            return record
        loaded = mixer.activator.current_loaded
        ready, reason = mixer.readiness()
        last = mixer.last_entry()
        runtime = mixer.activator.current
        handled = sum(g.handled for g in runtime.status().gears.values()) if runtime is not None else 0
        record.update({
            "api": f"{mixer.settings.http_host}:{mixer.settings.http_port}" if mixer.settings.http_enabled else None,
            "scenario": loaded.name if loaded is not None else None,
            "active_hash": loaded.hash if loaded is not None else None,
            "state": mixer.state(),
            "ready": ready,
            "reason": reason,
            "handled": handled,
            "leases": [lease["lease"] for lease in self.leases.status()] if self.leases else [],
            "last_activation": ({"outcome": last.outcome, "trigger": last.trigger, "to_hash": last.to_hash,
                                 "reason": last.reason} if last is not None else None),
            "fleet_sync": self.last_sync,
            "claims": self.claims.status() if self.claims else None,
        })
        return record

    # ---- the desired scenario ----

    async def after_activation(self, entry: Any) -> None:
        """An activation on this member by the operator becomes the fleet's desired scenario;
        any activation but the fleet's own (sync_once reports those) is in this member's record at once."""
        if entry.trigger == "fleet":
            return
        if entry.trigger in PUBLISHING_TRIGGERS and entry.outcome in ("activated", "unchanged"):
            await self._publish_desired(entry)
        await self._publish_record()

    async def _publish_desired(self, entry: Any) -> None:
        digest = entry.to_hash
        if not digest or self.desired is None:
            return
        try:
            data = await asyncio.to_thread(self.store.get_blob, digest)
            loaded = self.mixer.activator.current_loaded
            await self.desired.publish(digest, data, loaded.name if loaded is not None else None)
        except (FluxmixError, nats.errors.Error, asyncio.TimeoutError) as exc:
            log.error("fleet %s: could not publish %s as the desired scenario: %s", self.settings.name,
                      short_hash(digest), exc)
            return
        self._applied = digest
        self.last_sync = {"hash": digest, "outcome": entry.outcome, "reason": "published by this member",
                          "ts": time.time()}
        log.info("fleet %s: published %s as the desired scenario", self.settings.name, short_hash(digest),
                 extra={"fleet": self.settings.name, "hash": digest})

    async def _sync_loop(self) -> None:
        while not self._leaving:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must survive anything: logged, retried
                log.error("fleet %s: following the desired scenario failed: %s", self.settings.name, exc)
            await asyncio.sleep(self.settings.sync_interval)

    async def sync_once(self) -> None:
        """Activate the desired scenario when it is new to this member (once per hash: a member
        that cannot run it keeps its last known good and says so in `fleet_sync`)."""
        assert self.desired is not None and self.mixer is not None
        desired = await self.desired.current()
        if desired is None or desired.hash == self._applied or self.mixer.phase != "serving":
            return
        loaded = self.mixer.activator.current_loaded
        if loaded is not None and loaded.hash == desired.hash and self.mixer.activator.current is not None:
            self._applied = desired.hash
            self.last_sync = {"hash": desired.hash, "outcome": "unchanged", "reason": "already running", "ts": time.time()}
            return
        data = await self.desired.fetch(desired.hash)
        stored = await asyncio.to_thread(self.store.put_blob, data)
        if stored != desired.hash:
            raise FleetError(f"fleet: stored {short_hash(stored)} for desired {short_hash(desired.hash)}")
        log.info("fleet %s: activating the desired scenario %s (published by %s)", self.settings.name,
                 short_hash(desired.hash), desired.by)
        self._applied = desired.hash
        entry = await self.mixer.activate(f"sha256:{desired.hash}", trigger="fleet")
        self.last_sync = {"hash": desired.hash, "outcome": entry.outcome, "reason": entry.reason, "ts": time.time()}
        await self._publish_record()
        if entry.outcome not in ("activated", "unchanged"):
            log.error("fleet %s: this member cannot run the desired scenario %s (%s); it keeps %s",
                      self.settings.name, short_hash(desired.hash), entry.outcome,
                      short_hash(loaded.hash) if loaded is not None else "nothing running")

    async def _publish_record(self) -> None:
        """Rewrite this member's record now: what it just ran (or refused to) reaches the others'
        views a heartbeat sooner (a heartbeat is member TTL/3), so `status --fleet` on another member
        does not show its previous answer for that long."""
        if self.membership is None:
            return
        try:
            await self.membership.beat()
        except (nats.errors.Error, asyncio.TimeoutError) as exc:  # the heartbeat retries and reports it
            log.debug("fleet %s: publishing this member's record failed: %s", self.settings.name, exc)

    # ---- status ----

    def status(self) -> dict[str, Any]:
        """The fleet as this member last saw it (refreshed every heartbeat)."""
        desired = self.desired_seen
        members = []
        for member_id_, record in sorted((self.membership.members if self.membership else {}).items()):
            members.append({
                "member": member_id_,
                "self": member_id_ == self.member,
                "incarnation": record.get("incarnation"),
                "host": record.get("host"),
                "pid": record.get("pid"),
                "api": record.get("api"),
                "state": record.get("state"),
                "ready": record.get("ready"),
                "reason": record.get("reason"),
                "active_hash": record.get("active_hash"),
                "in_sync": bool(desired) and record.get("active_hash") == desired.hash,
                "handled": record.get("handled"),
                "leases": record.get("leases", []),
                "last_activation": record.get("last_activation"),
                "fleet_sync": record.get("fleet_sync"),
                "heartbeat": record.get("heartbeat"),
            })
        return {
            "name": self.settings.name,
            "member": self.member,
            "incarnation": self.incarnation,
            "desired": desired.as_dict() if desired else None,
            "members": members,
            "leases": self.lease_view,
            "held_here": self.leases.status() if self.leases else [],
            "claims": self.claims.status() if self.claims else None,
            "ttl": {"member": self.settings.member_ttl, "lease": self.settings.lease_ttl,
                    "claim": self.settings.claim_ttl},
            "as_of": _iso(self.membership.viewed_at) if self.membership else None,
            "connection": self._connection(),
        }

    def _connection(self) -> dict[str, Any]:
        ready, reason = self.readiness()
        last = self.membership.last_beat if self.membership else None
        return {"ready": ready, "reason": reason, "last_heartbeat": _iso(last)}
