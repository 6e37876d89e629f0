"""Garbage collection: delete blobs nothing references once they are older than a grace period.

Roots are what the index names directly (tags, the mixer's active and last known good scenario,
journal entries); a kept scenario also keeps the spec blob it pins. The grace period protects a
concurrent import that wrote its blob but not yet its index row, as git's prune expiry does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import _pins, _state
from ._blobs import BlobStore
from ._index import Index, MixerStateRow, TagRow


@dataclass(frozen=True, slots=True)
class GcReport:
    """removed: hashes deleted (or that would be, with dry_run); kept: blobs left in place."""

    removed: list[str]
    bytes_freed: int
    kept: int
    temp_files_removed: int = 0
    dry_run: bool = False


def roots(session: Session) -> set[str]:
    """What the index references directly: tags, the mixer's active and last known good, the journal."""
    hashes = set(session.scalars(select(TagRow.hash)))
    state = session.get(MixerStateRow, 1)
    if state is not None:
        hashes.update(h for h in (state.active_hash, state.last_known_good_hash) if h)
    hashes |= _state.journal_hashes(session)
    return hashes


def referenced(session: Session, *, has_spec_pins: bool) -> set[str]:
    """The roots and the spec blobs they pin."""
    hashes = roots(session)
    if has_spec_pins:
        hashes |= {spec for scenario, spec in _pins.pinned_specs(session).items() if scenario in hashes}
    return hashes


def collect(index: Index, blobs: BlobStore, *, dry_run: bool, grace_seconds: float) -> GcReport:
    """Remove (or, with dry_run, list) unreferenced blobs and stale temporary files older than the grace."""
    cutoff = time.time() - max(0.0, grace_seconds)
    with index.read() as session:
        rooted = roots(session)
        pins = _pins.pinned_specs(session) if index.has_spec_pins else {}
    listed = list(blobs.iter_blobs())
    present = {blob.hash for blob in listed}
    candidates = {blob.hash for blob in listed if blob.hash not in rooted and blob.mtime <= cutoff}
    # A kept scenario keeps the spec it pins; repeat, since one blob may be stored as both kinds.
    while True:
        kept_specs = {spec for scenario, spec in pins.items() if scenario in present and scenario not in candidates}
        if not kept_specs & candidates:
            break
        candidates -= kept_specs
    # Pinned specs go last, and only if every scenario pinning them really went.
    pinned_by: dict[str, set[str]] = {}
    for scenario, spec in pins.items():
        pinned_by.setdefault(spec, set()).add(scenario)
    removed: list[str] = []
    freed = 0
    kept = 0
    for blob in sorted(listed, key=lambda b: b.hash in pinned_by):
        if blob.hash not in candidates:
            kept += 1
            continue
        if any(s in present and s not in removed for s in pinned_by.get(blob.hash, ())):
            kept += 1  # a scenario pinning it was freshened meanwhile
            continue
        if not dry_run and not blobs.remove_if_older(blob.path, cutoff):
            kept += 1  # freshened meanwhile by a concurrent import of the same bytes
            continue
        removed.append(blob.hash)
        freed += blob.size
    if not dry_run:
        _drop_dead_pins(index, blobs, set(removed) & set(pins))
    temps = 0
    for path, mtime in blobs.iter_temp_files():
        if mtime <= cutoff:
            temps += 1
            if not dry_run:
                blobs.remove(path)
    return GcReport(sorted(removed), freed, kept, temps, dry_run)


def _drop_dead_pins(index: Index, blobs: BlobStore, scenario_hashes: set[str]) -> None:
    """Forget the pins of scenario blobs gc removed, unless an import stored them again meanwhile."""
    if not scenario_hashes:
        return
    with index.write() as session:
        alive = roots(session)
        _pins.drop_pins(session, (h for h in scenario_hashes if h not in alive and not blobs.has(h)))
