"""Spec pins: the spec blob each stored scenario's `spec:` resolved to when it was stored.

A scenario names its spec by reference (`visa:v1.0.0`, `visa`, `sha256:…`); the pin records the
digest that reference meant at import, as an OCI manifest records its layers' digests. gc keeps a
pinned spec blob while its scenario blob is kept, and `untag` refuses to remove a spec tag that a
stored scenario's reference would then no longer resolve through. These functions work inside the
caller's transaction, so a pin is written atomically with the tag it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fluxmix.errors import FluxmixError, NotFoundError
from fluxmix.refs import parse_store_ref, short_hash

from ._blobs import BlobStore
from ._index import MixerStateRow, SpecPinRow, TagRow
from ._resolve import resolve_in
from ._state import now


@dataclass(frozen=True, slots=True)
class SpecPin:
    """Scenario blob `scenario_hash` was stored with `spec: spec_ref`, which meant blob `spec_hash`."""

    scenario_hash: str
    spec_ref: str
    spec_hash: str
    spec_name: str | None
    spec_tag: str | None

    @property
    def resolved(self) -> str:
        """`visa:v1.0.0` when the spec was tagged, else its hash."""
        return f"{self.spec_name}:{self.spec_tag}" if self.spec_name and self.spec_tag else f"sha256:{self.spec_hash}"


def pin(session: Session, blobs: BlobStore, scenario_hash: str, spec_ref: str) -> SpecPin:
    """Resolve `spec_ref` now and pin what it names to the scenario blob (NotFoundError if nothing)."""
    resolved = resolve_in(session, blobs, parse_store_ref(spec_ref), "spec")
    return add_pin(session, SpecPin(scenario_hash, spec_ref, resolved.hash, resolved.name, resolved.tag))


def add_pin(session: Session, pin: SpecPin) -> SpecPin:
    """Record `pin` unless the scenario blob already has one: the first resolution stays, as a tag does."""
    existing = session.get(SpecPinRow, pin.scenario_hash)
    if existing is not None:
        return _from_row(existing)
    session.add(
        SpecPinRow(
            scenario_hash=pin.scenario_hash,
            spec_ref=pin.spec_ref,
            spec_hash=pin.spec_hash,
            spec_name=pin.spec_name,
            spec_tag=pin.spec_tag,
            pinned_at=now(),
        )
    )
    session.flush()
    return pin


def get_pin(session: Session, scenario_hash: str) -> SpecPin | None:
    row = session.get(SpecPinRow, scenario_hash)
    return None if row is None else _from_row(row)


def pinned_specs(session: Session) -> dict[str, str]:
    """scenario hash -> pinned spec hash, for every pin."""
    return {scenario: spec for scenario, spec in session.execute(select(SpecPinRow.scenario_hash, SpecPinRow.spec_hash))}


def pins_of_spec(session: Session, name: str) -> list[SpecPin]:
    """Pins whose reference resolved to a tag of the spec `name` (whichever tag: `visa` follows latest)."""
    rows = session.scalars(select(SpecPinRow).where(SpecPinRow.spec_name == name))
    return [_from_row(row) for row in rows]


def drop_pins(session: Session, scenario_hashes: Iterable[str]) -> None:
    hashes = list(scenario_hashes)
    if hashes:
        session.execute(delete(SpecPinRow).where(SpecPinRow.scenario_hash.in_(hashes)))


def backfill(session: Session, blobs: BlobStore) -> None:
    """Pin the specs of scenarios a store made before pins existed (once, when first opened for writing).

    Each stored scenario's `spec:` is read from its blob and resolved as it resolves now; a blob
    that is unreadable, not YAML, or whose spec no longer resolves gets no pin.
    """
    from fluxmix.scenario_yaml import load_yaml

    for digest in sorted(stored_scenarios(session)):
        try:
            raw = load_yaml(blobs.get(digest), short_hash(digest))
            spec = raw.get("spec") if isinstance(raw, dict) else None
            if isinstance(spec, str):
                pin(session, blobs, digest, spec)
        except FluxmixError:
            continue


def broken_by_untag(session: Session, blobs: BlobStore, name: str) -> list[str]:
    """Stored scenarios whose `spec:` stops resolving once a tag of spec `name`, already deleted in
    this transaction, is gone: `payments:v1.0.0 (spec: visa:v1.0.0)`, sorted."""
    stored = stored_scenarios(session)
    broken: list[str] = []
    for pinned in pins_of_spec(session, name):
        if pinned.scenario_hash not in stored:
            continue
        try:
            resolve_in(session, blobs, parse_store_ref(pinned.spec_ref), "spec")
        except NotFoundError:
            broken.append(f"{stored[pinned.scenario_hash]} (spec: {pinned.spec_ref})")
    return sorted(broken)


def stored_scenarios(session: Session) -> dict[str, str]:
    """The scenarios the store keeps (tagged, or the mixer's active or rollback target): hash -> label."""
    labels: dict[str, list[str]] = {}
    for scenario_name, scenario_tag, digest in session.execute(
        select(TagRow.name, TagRow.tag, TagRow.hash).where(TagRow.kind == "scenario")
    ):
        labels.setdefault(digest, []).append(f"{scenario_name}:{scenario_tag}")
    state = session.get(MixerStateRow, 1)
    if state is not None:
        roles = ((state.active_hash, "the mixer's active scenario"), (state.last_known_good_hash, "the mixer's rollback target"))
        for role_hash, role in roles:
            if role_hash and role_hash not in labels:
                labels[role_hash] = [f"{short_hash(role_hash)} ({role})"]
    return {digest: ", ".join(sorted(names)) for digest, names in labels.items()}


def _from_row(row: SpecPinRow) -> SpecPin:
    return SpecPin(row.scenario_hash, row.spec_ref, row.spec_hash, row.spec_name, row.spec_tag)
