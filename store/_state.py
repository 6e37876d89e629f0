"""The mixer's own state, kept in the index database: active/last-known-good, journal, checkpoints.

It lives next to the tags so that gc can see which blobs the mixer still needs, and so that one
transaction model (and one file to back up) covers everything fluxmix remembers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from fluxmix.refs import check_hex

from ._index import CheckpointRow, JournalRow, MetaRow, MixerStateRow

# paused / resumed: POST /pause and /resume, journaled beside activations so the journal tells
# the whole story of what the mixer ran and when its sources held still.
Outcome = Literal["activated", "rejected", "rolled-back", "unchanged", "failed", "paused", "resumed"]
OUTCOMES: tuple[str, ...] = ("activated", "rejected", "rolled-back", "unchanged", "failed", "paused", "resumed")
_STATE_ID = 1
# Kept in the meta key/value table (no schema change): whether the sources are paused.
PAUSED_KEY = "mixer_paused"


@dataclass(frozen=True, slots=True)
class MixerState:
    """What the mixer runs now (to resume after a restart) and what last ran well (to roll back to)."""

    active_hash: str | None = None
    active_ref: str | None = None
    last_known_good_hash: str | None = None
    updated_at: datetime | None = None
    paused: bool = False  # sources held still (POST /pause); survives a restart


@dataclass(slots=True)
class JournalEntry:
    """One activation attempt: what was asked, what happened, why, and how long each phase took."""

    ts: datetime
    trigger: str
    ref: str | None
    from_hash: str | None
    to_hash: str | None
    outcome: Outcome
    reason: str
    problems: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    drained: int = 0
    gap_seconds: float | None = None
    id: int | None = None
    # Why an attempt did not succeed: "user" (bad input the operator can fix: exit 2 in the CLI)
    # or "failure" (something broke); None for activated/unchanged.
    error_kind: str | None = None
    # A reload: mode (partial/full), gears restarted/added/removed/kept of gears_total, wires
    # added/removed/changed/reconsumed/kept, and why more than the change restarted. None otherwise.
    reload: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (timestamps as ISO 8601 UTC)."""
        data = asdict(self)
        data["ts"] = self.ts.isoformat()
        return data


def now() -> datetime:
    return datetime.now(timezone.utc)


def _optional_hex(value: str | None) -> str | None:
    return None if value is None else check_hex(value)


def read_state(session: Session) -> MixerState:
    row = session.get(MixerStateRow, _STATE_ID)
    flag = session.get(MetaRow, PAUSED_KEY)
    paused = flag is not None and flag.value == "1"
    if row is None:
        return MixerState(paused=paused)
    return MixerState(row.active_hash, row.active_ref, row.last_known_good_hash, row.updated_at, paused=paused)


def write_paused(session: Session, paused: bool) -> None:
    flag = session.get(MetaRow, PAUSED_KEY)
    if flag is None:
        session.add(MetaRow(key=PAUSED_KEY, value="1" if paused else "0"))
    else:
        flag.value = "1" if paused else "0"


def write_active(session: Session, hash_: str | None, ref: str | None, *, known_good: bool) -> None:
    digest = _optional_hex(hash_)
    row = session.get(MixerStateRow, _STATE_ID)
    if row is None:
        row = MixerStateRow(id=_STATE_ID)
        session.add(row)
    row.active_hash = digest
    row.active_ref = ref
    if known_good and digest is not None:
        row.last_known_good_hash = digest
    row.updated_at = now()


def add_journal(session: Session, entry: JournalEntry) -> int:
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"journal outcome {entry.outcome!r} is not one of {', '.join(OUTCOMES)}")
    if entry.ts.tzinfo is None:
        raise ValueError("journal timestamps must be timezone-aware")
    row = JournalRow(
        ts=entry.ts,
        trigger=entry.trigger,
        ref=entry.ref,
        from_hash=_optional_hex(entry.from_hash),
        to_hash=_optional_hex(entry.to_hash),
        outcome=entry.outcome,
        reason=entry.reason,
        problems=[str(p) for p in entry.problems],
        phases={str(k): float(v) for k, v in entry.phases.items()},
        drained=int(entry.drained),
        gap_seconds=None if entry.gap_seconds is None else float(entry.gap_seconds),
        error_kind=entry.error_kind,
        reload=entry.reload,
    )
    session.add(row)
    session.flush()
    return row.id


def set_journal_gap(session: Session, entry_id: int, gap_seconds: float) -> None:
    row = session.get(JournalRow, entry_id)
    if row is None:
        raise KeyError(f"no journal entry {entry_id}")
    row.gap_seconds = float(gap_seconds)


def read_journal(session: Session, limit: int) -> list[JournalEntry]:
    rows = session.scalars(select(JournalRow).order_by(JournalRow.id.desc()).limit(max(0, limit)))
    return [
        JournalEntry(
            ts=r.ts,
            trigger=r.trigger,
            ref=r.ref,
            from_hash=r.from_hash,
            to_hash=r.to_hash,
            outcome=r.outcome,  # type: ignore[arg-type]
            reason=r.reason,
            problems=list(r.problems or []),
            phases=dict(r.phases or {}),
            drained=r.drained,
            gap_seconds=r.gap_seconds,
            id=r.id,
            error_kind=r.error_kind,
            reload=r.reload,
        )
        for r in rows
    ]


def prune_journal(session: Session, *, keep_last: int, older_than: datetime) -> int:
    """Delete journal entries that are neither among the newest `keep_last` nor younger than
    `older_than`, except those that activated the active or last-known-good scenario.

    The blobs only those entries referenced are then unreferenced, so `store gc` reclaims them.
    """
    state = read_state(session)
    protected = [h for h in (state.active_hash, state.last_known_good_hash) if h]
    newest = select(JournalRow.id).order_by(JournalRow.id.desc()).limit(max(0, keep_last))
    query = delete(JournalRow).where(JournalRow.ts < older_than).where(JournalRow.id.not_in(newest))
    if protected:
        query = query.where(or_(JournalRow.to_hash.is_(None), JournalRow.to_hash.not_in(protected)))
    return int(session.execute(query).rowcount or 0)


def journal_hashes(session: Session) -> set[str]:
    hashes: set[str] = set()
    for from_hash, to_hash in session.execute(select(JournalRow.from_hash, JournalRow.to_hash)):
        hashes.update(h for h in (from_hash, to_hash) if h)
    return hashes


def read_checkpoint(session: Session, scenario_name: str, gear: str) -> Any | None:
    row = session.get(CheckpointRow, (scenario_name, gear))
    return None if row is None else row.value


def write_checkpoint(session: Session, scenario_name: str, gear: str, value: Any) -> None:
    # Fail here, in the caller's frame, rather than at flush with a driver error.
    json.dumps(value, allow_nan=False)
    row = session.get(CheckpointRow, (scenario_name, gear))
    if value is None:
        if row is not None:
            session.delete(row)
        return
    if row is None:
        session.add(CheckpointRow(scenario_name=scenario_name, gear=gear, value=value, updated_at=now()))
    else:
        row.value = value
        row.updated_at = now()
