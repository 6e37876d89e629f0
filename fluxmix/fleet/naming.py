"""Names of a fleet's NATS buckets and the keys inside them.

Derived from the fleet name only, so every member (and every version of fluxmix) finds the same
buckets. KV keys allow `[-/_=.a-zA-Z0-9]`; message ids and gear names are hashed or checked.
"""

from __future__ import annotations

import hashlib
import re

from fluxmix.errors import UserError

FLEET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MEMBER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def check_fleet_name(name: str) -> str:
    if not FLEET_NAME.match(name or ""):
        raise UserError(f"--fleet {name[:40]!r}: a fleet name is [a-z0-9][a-z0-9_-]{{0,31}}")
    return name


def check_member_id(member: str, what: str = "--fleet-member") -> str:
    """`what` names where the id came from in the error (an option, or the MEMBER argument)."""
    if not MEMBER_ID.match(member or ""):
        raise UserError(f"{what} {member[:40]!r}: a member id is [A-Za-z0-9][A-Za-z0-9_-]{{0,62}}")
    return member


def _bucket(fleet: str, what: str) -> str:
    return f"fluxmix_fleet_{fleet.replace('-', '_')}_{what}"


def members_bucket(fleet: str) -> str:
    return _bucket(fleet, "members")


def leases_bucket(fleet: str) -> str:
    return _bucket(fleet, "leases")


def checkpoints_bucket(fleet: str) -> str:
    return _bucket(fleet, "checkpoints")


def claims_bucket(fleet: str) -> str:
    return _bucket(fleet, "claims")


def desired_bucket(fleet: str) -> str:
    return _bucket(fleet, "desired")


def scenarios_bucket(fleet: str) -> str:
    """The Object Store holding the bytes of desired scenarios, one object per hash."""
    return _bucket(fleet, "scenarios")


DESIRED_KEY = "scenario"


def gear_key(scenario: str, gear: str) -> str:
    """Key of a source's lease or checkpoint: scenario and gear names are [a-z0-9_.-]."""
    return f"{scenario}.{gear}"


def claim_key(scenario: str, gear: str, message_id: str) -> str:
    """Key of a sink's claim on one message id (any characters: hashed)."""
    digest = hashlib.blake2b(message_id.encode(), digest_size=16).hexdigest()
    return f"{scenario}.{gear}.{digest}"
