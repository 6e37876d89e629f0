"""The member's own NATS connection and the fleet's buckets (created by the first member).

The fleet talks to NATS on a connection of its own, separate from the standard transport's:
lease renewals and heartbeats must not queue behind a wire's publishes, and the fleet needs
NATS before any scenario (and so any broker) exists.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from fluxmix.errors import FleetError
from fluxmix.fleet import naming
from fluxmix.transports.nats.connection import connect_kwargs

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Buckets:
    members: KeyValue
    leases: KeyValue
    checkpoints: KeyValue
    claims: KeyValue
    desired: KeyValue
    scenarios: ObjectStore


async def connect(servers: list[str], options: dict[str, Any], *, name: str, timeout: float = 10.0) -> Client:
    """Connect, retrying until `timeout` (a cluster may still be electing); FleetError after."""
    kwargs = {"error_cb": _client_error, **connect_kwargs(options)}
    try:
        return await asyncio.wait_for(
            nats.connect(servers=servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                         connect_timeout=2, allow_reconnect=True, **kwargs),
            timeout,
        )
    except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise FleetError(f"fleet: cannot reach NATS at {', '.join(servers)}: {why}") from None


async def _client_error(exc: Exception) -> None:
    """nats-py's default prints a traceback to stderr for every failed attempt: a CLI command
    (fleet release) must print one line, and the member's heartbeat already logs what failed."""
    log.debug("fleet NATS client: %s: %s", type(exc).__name__, exc)


async def _kv(js: JetStreamContext, bucket: str, *, ttl: float | None, history: int, replicas: int) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(bucket=bucket, ttl=ttl, history=history, replicas=replicas)
    except nats.js.errors.BadRequestError:
        return await js.key_value(bucket)  # another member created it meanwhile


async def _objects(js: JetStreamContext, bucket: str, *, replicas: int) -> ObjectStore:
    try:
        return await js.object_store(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_object_store(bucket=bucket, replicas=replicas)
    except nats.js.errors.BadRequestError:
        return await js.object_store(bucket)


async def open_buckets(js: JetStreamContext, fleet: str, *, member_ttl: float, lease_ttl: float,
                       claim_ttl: float, replicas: int, timeout: float = 30.0) -> Buckets:
    """Every bucket of `fleet`, created when missing. Retries while the cluster cannot place
    them yet (no meta leader right after start-up); FleetError after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return Buckets(
                members=await _kv(js, naming.members_bucket(fleet), ttl=member_ttl, history=1, replicas=replicas),
                leases=await _kv(js, naming.leases_bucket(fleet), ttl=lease_ttl, history=1, replicas=replicas),
                checkpoints=await _kv(js, naming.checkpoints_bucket(fleet), ttl=None, history=1, replicas=replicas),
                claims=await _kv(js, naming.claims_bucket(fleet), ttl=claim_ttl, history=1, replicas=replicas),
                desired=await _kv(js, naming.desired_bucket(fleet), ttl=None, history=5, replicas=replicas),
                scenarios=await _objects(js, naming.scenarios_bucket(fleet), replicas=replicas),
            )
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            if asyncio.get_running_loop().time() >= deadline:
                raise FleetError(f"fleet {fleet}: cannot open its KV buckets: {type(exc).__name__}: {exc}") from None
            log.info("fleet %s: buckets not ready yet (%s); retrying", fleet, exc)
            await asyncio.sleep(0.5)
