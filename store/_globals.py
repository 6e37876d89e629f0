"""Global state per scenario name (key -> JSON value), and the journal of its changes.

Gears of one scenario share a threshold, a block list or a feature flag through these rows
instead of a new scenario version. Every write is one serialised transaction (BEGIN IMMEDIATE)
that reads the old value, writes the new one and appends a change row: atomic per key, no
update lost between distinct keys, last writer wins per key. Sizes are bounded so the mixer's
in-memory snapshot (and the expressions reading it) stay small.

The tables are created on first use, so stores made by an older fluxmix gain them lazily
without a schema migration.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Index as SqlIndex, Integer, String, Text, delete, func, select
from sqlalchemy import JSON
from sqlalchemy.orm import Mapped, Session, mapped_column

from fluxmix.errors import GlobalsError

from ._index import Base, UTCDateTime
from ._state import now

KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_VALUE_BYTES = 64 * 1024  # one value, as compact JSON
MAX_KEYS = 1000  # per scenario name
MAX_WHO_CHARS = 120


class GlobalValueRow(Base):
    """(scenario name, key) -> its current JSON value."""

    __tablename__ = "global_values"
    scenario: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(Text)


class GlobalChangeRow(Base):
    """One change: who, when, old and new value (None: the key was absent / deleted)."""

    __tablename__ = "global_changes"
    __table_args__ = (SqlIndex("ix_global_changes_scenario", "scenario", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scenario: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    op: Mapped[str] = mapped_column(String(16))  # set | delete | clear | initial
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    who: Mapped[str] = mapped_column(Text)
    old_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    new_value: Mapped[Any] = mapped_column(JSON, nullable=True)


TABLES = (GlobalValueRow.__table__, GlobalChangeRow.__table__)


@dataclass(frozen=True, slots=True)
class GlobalChange:
    id: int
    scenario: str
    key: str
    op: str
    ts: datetime
    who: str
    old_value: Any
    new_value: Any

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "scenario": self.scenario, "key": self.key, "op": self.op,
                "ts": self.ts.isoformat(), "who": self.who, "old_value": self.old_value, "new_value": self.new_value}


def ensure_tables(engine: Engine) -> None:
    """Create the two tables if an older store lacks them (idempotent, serialised by the caller)."""
    with engine.begin() as conn:
        Base.metadata.create_all(conn, tables=list(TABLES), checkfirst=True)


def check_key(key: object) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        shown = repr(key)[:40] if isinstance(key, str) else type(key).__name__
        raise GlobalsError(
            f"global key {shown}: must be 1-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return key


def check_value(key: str, value: Any) -> Any:
    """The value, if it is JSON (no NaN/inf) of at most MAX_VALUE_BYTES; else GlobalsError."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise GlobalsError(f"global {key}: not a JSON value ({error})") from None
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise GlobalsError(f"global {key}: value is {len(text.encode())} bytes as JSON; at most {MAX_VALUE_BYTES}")
    return json.loads(text)  # a plain, unshared copy


def _who(who: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in str(who))
    return cleaned[:MAX_WHO_CHARS] or "unknown"


def version(session: Session, scenario: str) -> int:
    """The id of the scenario's newest change (0 if none): a cheap "did anything change?"."""
    return int(session.scalar(select(func.max(GlobalChangeRow.id)).where(GlobalChangeRow.scenario == scenario)) or 0)


def read_all(session: Session, scenario: str) -> dict[str, Any]:
    rows = session.execute(select(GlobalValueRow.key, GlobalValueRow.value).where(GlobalValueRow.scenario == scenario))
    return {key: value for key, value in rows}


def write(session: Session, scenario: str, key: str, value: Any, *, who: str, op: str = "set",
          only_if_absent: bool = False) -> tuple[Any, int | None]:
    """Set one key (already checked); returns (old value, the change's id or None if unchanged)."""
    row = session.get(GlobalValueRow, (scenario, key))
    if row is None:
        count = session.scalar(select(func.count()).select_from(GlobalValueRow).where(GlobalValueRow.scenario == scenario))
        if int(count or 0) >= MAX_KEYS:
            raise GlobalsError(f"global {key}: scenario {scenario} already has {MAX_KEYS} keys (the limit); delete some first")
        session.add(GlobalValueRow(scenario=scenario, key=key, value=value, updated_at=now(), updated_by=_who(who)))
        old = None
    else:
        if only_if_absent:
            return row.value, None
        old = row.value
        row.value = value
        row.updated_at = now()
        row.updated_by = _who(who)
    return old, _change(session, scenario, key, op, who, old, value)


def _change(session: Session, scenario: str, key: str, op: str, who: str, old: Any, new: Any) -> int:
    row = GlobalChangeRow(scenario=scenario, key=key, op=op, ts=now(), who=_who(who), old_value=old, new_value=new)
    session.add(row)
    session.flush()
    return row.id


def remove(session: Session, scenario: str, key: str, *, who: str) -> tuple[Any, int | None]:
    """Delete one key; returns (old value, the change's id or None if the key was absent)."""
    row = session.get(GlobalValueRow, (scenario, key))
    if row is None:
        return None, None
    old = row.value
    session.delete(row)
    return old, _change(session, scenario, key, "delete", who, old, None)


def clear(session: Session, scenario: str, *, who: str) -> int:
    """Delete every key of a scenario (one change row each, so the old values are journaled)."""
    rows = list(session.scalars(select(GlobalValueRow).where(GlobalValueRow.scenario == scenario)))
    for row in rows:
        session.add(GlobalChangeRow(scenario=scenario, key=row.key, op="clear", ts=now(), who=_who(who),
                                    old_value=row.value, new_value=None))
        session.delete(row)
    return len(rows)


def read_changes(session: Session, scenario: str | None, limit: int) -> list[GlobalChange]:
    query = select(GlobalChangeRow).order_by(GlobalChangeRow.id.desc()).limit(max(0, limit))
    if scenario is not None:
        query = query.where(GlobalChangeRow.scenario == scenario)
    return [GlobalChange(r.id, r.scenario, r.key, r.op, r.ts, r.who, r.old_value, r.new_value)
            for r in session.scalars(query)]


def prune_changes(session: Session, *, keep_last: int, older_than: datetime) -> int:
    """Drop change rows beyond the newest `keep_last` that are also older than `older_than`.

    The newest change of each current key is never dropped: a value always has its who/when.
    """
    newest = select(GlobalChangeRow.id).order_by(GlobalChangeRow.id.desc()).limit(max(0, keep_last))
    latest_per_key = select(func.max(GlobalChangeRow.id)).group_by(GlobalChangeRow.scenario, GlobalChangeRow.key)
    result = session.execute(
        delete(GlobalChangeRow)
        .where(GlobalChangeRow.ts < older_than)
        .where(GlobalChangeRow.id.not_in(newest))
        .where(GlobalChangeRow.id.not_in(latest_per_key))
    )
    return int(result.rowcount or 0)


class GlobalsTable:
    """The store's global state backend (fluxmix.globals_state.GlobalsBackend): SQL rows.

    A NATS KV bucket can implement the same few methods once mixers form a fleet.
    """

    def __init__(self, index: Any) -> None:
        self._index = index
        self._ready = False

    def _prepare(self) -> None:
        if not self._ready:
            with self._index._translated():
                ensure_tables(self._index._writer)
            self._ready = True

    def version(self, scenario: str) -> int:
        self._prepare()
        with self._index.read() as session:
            return version(session, scenario)

    def snapshot(self, scenario: str) -> tuple[int, dict[str, Any]]:
        """(version, every key's value), read in one transaction so the pair is consistent."""
        self._prepare()
        with self._index.read() as session:
            return version(session, scenario), read_all(session, scenario)

    def set(self, scenario: str, key: str, value: Any, *, who: str, only_if_absent: bool = False,
            op: str = "set") -> tuple[Any, int | None]:
        check_key(key)
        value = check_value(key, value)
        self._prepare()
        with self._index.write() as session:
            return write(session, scenario, key, value, who=who, op=op, only_if_absent=only_if_absent)

    def delete(self, scenario: str, key: str, *, who: str) -> tuple[Any, int | None]:
        check_key(key)
        self._prepare()
        with self._index.write() as session:
            return remove(session, scenario, key, who=who)

    def clear(self, scenario: str, *, who: str) -> int:
        self._prepare()
        with self._index.write() as session:
            return clear(session, scenario, who=who)

    def changes(self, scenario: str | None = None, limit: int = 50) -> list[GlobalChange]:
        """Newest first."""
        self._prepare()
        with self._index.read() as session:
            return read_changes(session, scenario, limit)

    def prune(self, *, keep_last: int, older_than: datetime) -> int:
        self._prepare()
        with self._index.write() as session:
            return prune_changes(session, keep_last=keep_last, older_than=older_than)
