"""The index database: SQLAlchemy 2.x models and an engine that is safe with several processes.

SQLite's default deferred BEGIN makes two read-then-write processes fail with "database is
locked" even with a busy timeout (measured: hundreds of failures). Write transactions therefore
start with BEGIN IMMEDIATE (SQLAlchemy's pysqlite recipe), which takes the write lock up front and
lets the busy timeout queue writers; reads stay deferred so they never wait on a writer in WAL mode.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from fluxmix.errors import StoreError

SCHEMA_VERSION = 1
# Tables added after schema version 1 are created lazily by the first writer that opens the store
# (older fluxmix versions ignore them), each recorded as a meta key once its backfill has run.
SPEC_PINS_FEATURE = "spec_pins"
JOURNAL_ERROR_KIND_FEATURE = "journal_error_kind"  # journal.error_kind exists (added after schema 1)
JOURNAL_RELOAD_FEATURE = "journal_reload"  # journal.reload exists: what a reload restarted and kept
BUSY_TIMEOUT_SECONDS = 30.0
_BEGIN_OPTION = "fluxmix_begin"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    """Key/value facts: schema_version (for future migrations), and small mixer flags
    (mixer_paused) that need no table of their own."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TagRow(Base):
    """(kind, name, tag) -> hash: one immutable tag."""

    __tablename__ = "tags"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SpecPinRow(Base):
    """A scenario blob -> the spec blob its `spec:` resolved to when it was first stored.

    As an OCI manifest pins its layers' digests: gc keeps the spec blob while the scenario is
    kept, and untagging the spec tag the scenario resolved through is refused (unless forced).
    """

    __tablename__ = "spec_pins"
    scenario_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec_ref: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    spec_name: Mapped[str | None] = mapped_column(String(64))
    spec_tag: Mapped[str | None] = mapped_column(String(128))
    pinned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MixerStateRow(Base):
    """The mixer's single state row (id 1): what runs now and what last ran well."""

    __tablename__ = "mixer_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active_hash: Mapped[str | None] = mapped_column(String(64))
    active_ref: Mapped[str | None] = mapped_column(Text)
    last_known_good_hash: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JournalRow(Base):
    """One activation attempt, whatever its outcome."""

    __tablename__ = "journal"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    trigger: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(Text)
    from_hash: Mapped[str | None] = mapped_column(String(64))
    to_hash: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    problems: Mapped[list[str]] = mapped_column(JSON)
    phases: Mapped[dict[str, float]] = mapped_column(JSON)
    drained: Mapped[int] = mapped_column(Integer)
    gap_seconds: Mapped[float | None] = mapped_column(Float)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # added after schema 1
    reload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # added after schema 1


class CheckpointRow(Base):
    """(scenario name, gear) -> a JSON value the gear saved to resume where it left off."""

    __tablename__ = "checkpoints"
    scenario_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    gear: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


Upgrade = Callable[[Session], None]


class Index:
    """Owns the engine; hands out read and write sessions.

    `read_only` (a reason, e.g. "the directory is not writable") opens an SQLite file without
    writing anything, not even WAL's shared-memory file, so listing and verifying work on a
    store this user cannot change; `write()` then refuses with that reason.
    `backfill_spec_pins` fills the spec pin table the first time a writer opens an older store.
    """

    def __init__(self, url: str, *, read_only: str | None = None, backfill_spec_pins: Upgrade | None = None) -> None:
        self.url = url
        self.read_only = read_only
        self.has_spec_pins = False  # False on an older store opened read-only: nothing is pinned there
        try:
            parsed = make_url(url)
        except ArgumentError:  # the URL itself is not echoed: it may hold a password
            raise StoreError(
                "store index URL ($FLUXMIX_STORE_URL) is not a database URL "
                "(expected e.g. sqlite:////path/index.sqlite3 or postgresql+psycopg://user@host/db)"
            ) from None
        self.display_url = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        try:
            self.engine = _create_engine(url, read_only=read_only is not None)
        except (ArgumentError, ImportError) as error:  # unknown dialect, or its driver is not installed
            raise StoreError(f"store index {self.display_url}: cannot use this database: {error}") from None
        self._writer = self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        try:
            self._prepare(parsed.database, backfill_spec_pins)
        except Exception as error:
            self.engine.dispose()
            driver_error = getattr(getattr(self.engine.dialect, "loaded_dbapi", None), "Error", ())
            if isinstance(error, (DBAPIError, driver_error)):  # e.g. the sqlite file's directory is missing
                reason = error.orig if isinstance(error, DBAPIError) else error
                raise StoreError(f"store index {self.display_url} cannot be opened: {reason}") from None
            raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A consistent snapshot for reading (deferred BEGIN: never blocks writers in WAL)."""
        with self._translated():
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A serialised write transaction: BEGIN IMMEDIATE, so read-then-write is race free."""
        if self.read_only is not None:
            raise StoreError(
                f"store index {self.display_url} is read-only ({self.read_only}); reading commands work, "
                "changes need write access"
            )
        with self._translated():
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                yield session

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database failures (locked past the busy timeout, disk full, not a database) as StoreError.

        IntegrityError passes through: callers use it to detect a lost insert race.
        """
        try:
            yield
        except IntegrityError:
            raise
        except DBAPIError as error:
            raise StoreError(f"store index {self.display_url}: {error.orig}") from error

    def close(self) -> None:
        self.engine.dispose()

    def _prepare(self, database: str | None, backfill_spec_pins: Upgrade | None) -> None:
        """Make the database usable; cheap when it already is (one read of the meta table)."""
        if self.is_sqlite and database and database != ":memory:" and self.read_only is None:
            self._ensure_wal()
        meta = self._meta()
        if meta is None:
            if self.read_only is not None:
                raise StoreError(
                    f"store index {self.display_url} holds no fluxmix index yet and is read-only ({self.read_only})"
                )
            with self._translated(), self._writer.begin() as conn:
                Base.metadata.create_all(conn)
                with Session(conn) as session:
                    for key, value in (("schema_version", str(SCHEMA_VERSION)), (SPEC_PINS_FEATURE, "1"),
                                       (JOURNAL_ERROR_KIND_FEATURE, "1"), (JOURNAL_RELOAD_FEATURE, "1")):
                        if session.get(MetaRow, key) is None:
                            session.add(MetaRow(key=key, value=value))
                    session.flush()
            meta = self._meta() or {}
        version = int(meta["schema_version"]) if "schema_version" in meta else None
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(
                f"store index {self.display_url} has schema version {version}, newer than this fluxmix "
                f"understands ({SCHEMA_VERSION}); upgrade fluxmix"
            )
        self.has_spec_pins = SPEC_PINS_FEATURE in meta
        if not self.has_spec_pins and self.read_only is None:
            self._add_spec_pins(backfill_spec_pins)
        for feature, name in ((JOURNAL_ERROR_KIND_FEATURE, "error_kind"), (JOURNAL_RELOAD_FEATURE, "reload")):
            if feature not in meta and self.read_only is None:
                self._add_journal_column(feature, name)

    def _add_journal_column(self, feature: str, name: str) -> None:
        """Add a nullable journal column to a store made by an older fluxmix; once, then a meta key says so."""
        with self._translated(), Session(self._writer, expire_on_commit=False) as session, session.begin():
            if session.get(MetaRow, feature) is not None:  # another process got here first
                return
            conn = session.connection()
            columns = {column["name"] for column in inspect(conn).get_columns(JournalRow.__tablename__)}
            if name not in columns:
                column = JournalRow.__table__.c[name]
                conn.exec_driver_sql(
                    f"ALTER TABLE {JournalRow.__tablename__} ADD COLUMN {name} {column.type.compile(self.engine.dialect)}"
                )
            session.add(MetaRow(key=feature, value="1"))

    def _add_spec_pins(self, backfill: Upgrade | None) -> None:
        """Create the spec pin table in a store made by an older fluxmix, and pin what it already holds."""
        with self._translated(), Session(self._writer, expire_on_commit=False) as session, session.begin():
            if session.get(MetaRow, SPEC_PINS_FEATURE) is not None:  # another process got here first
                self.has_spec_pins = True
                return
            Base.metadata.create_all(session.connection(), tables=[Base.metadata.tables[SpecPinRow.__tablename__]])
            self.has_spec_pins = True
            if backfill is not None:
                backfill(session)
            session.add(MetaRow(key=SPEC_PINS_FEATURE, value="1"))

    def _meta(self) -> dict[str, str] | None:
        """Every meta key, or None when the database has no fluxmix tables yet."""
        try:
            with Session(self.engine) as session, session.begin():
                return {key: value for key, value in session.execute(select(MetaRow.key, MetaRow.value))}
        except OperationalError as error:
            if "no such table" in str(error) or "does not exist" in str(error):
                return None
            raise StoreError(f"store index {self.display_url} cannot be read: {error.orig}") from error
        except DBAPIError as error:
            raise StoreError(f"store index {self.display_url} cannot be read: {error.orig}") from error

    def _ensure_wal(self) -> None:
        """Switch to WAL once; the mode is persistent in the file, so later opens only read it."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()
        except Exception as error:
            raise StoreError(f"store index {self.display_url} cannot be opened: {error}") from error
        finally:
            raw.close()


def _create_engine(url: str, *, read_only: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    in_memory = not parsed.database or parsed.database == ":memory:"
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
    }
    if in_memory:
        kwargs["poolclass"] = StaticPool
    elif read_only:
        uri = read_only_uri(Path(parsed.database or ""))
        kwargs["creator"] = lambda: sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy own BEGIN (pysqlite would emit its own, deferred, and only before DML).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Busy timeout first: everything after it (WAL switch included) may have to wait.
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"unknown BEGIN mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def read_only_uri(path: Path) -> str:
    """An SQLite URI that reads `path` without writing anything next to it.

    `mode=ro` alone still needs WAL's `-shm` file, which a read-only directory cannot hold
    ("attempt to write a readonly database"). When the directory is not writable no process
    without privileges can change the database either, so `immutable=1` is safe there, unless a
    crash left a `-wal` file with committed pages that only `mode=ro` (with its `-shm`) can read.
    """
    uri = path.absolute().as_uri() + "?mode=ro"
    directory_writable = os.access(path.parent, os.W_OK)
    wal = Path(f"{path}-wal")
    if not directory_writable and not (wal.exists() and wal.stat().st_size > 0 and Path(f"{path}-shm").exists()):
        uri += "&immutable=1"
    return uri
