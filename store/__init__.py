"""The content-addressed store of scenarios and specs (imported as fluxmix.store).

Blobs are files named by the SHA-256 of their bytes; an index database maps (kind, name, tag)
to a blob; tags are immutable SemVer. The mixer's state (active scenario, last known good,
journal, checkpoints) lives in the same database so gc knows what the mixer still needs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import platformdirs
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError

from fluxmix.errors import (
    InvalidNameError,
    NotFoundError,
    SpecInUseError,
    StoreError,
    TagConflictError,
)
from fluxmix.refs import (
    KINDS,
    HashRef,
    NameRef,
    PathRef,
    Ref,
    canonical_tag,
    check_hex,
    check_kind,
    check_name,
    highest_tag,
    latest_tag,
    next_tag,
    parse_ref,
    parse_store_ref,
    short_hash,
    tag_key,
)

from . import _gc, _pins, _state
from ._blobs import BlobStore, sha256_hex
from ._gc import GcReport
from ._globals import GlobalsTable
from ._index import Index, TagRow
from ._pins import SpecPin
from ._resolve import Resolved, resolve_in
from ._state import JournalEntry, MixerState

DEFAULT_GC_GRACE_SECONDS = 3600  # as git's gc.pruneExpire: never race a concurrent import
_WRITE_RETRIES = 5


@dataclass(frozen=True, slots=True)
class Entry:
    """One tag in the index."""

    kind: str
    name: str
    tag: str
    hash: str
    size: int
    imported_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did; created False means the tag already held these exact bytes."""

    kind: str
    name: str
    tag: str
    hash: str
    size: int
    created: bool
    imported_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True, slots=True)
class UntagResult:
    """The tag removed, and the stored scenarios whose `spec:` no longer resolves (only with force)."""

    entry: Entry
    breaks: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """ok is False when any blob is corrupt, a tag points at a missing blob, or a stored scenario's
    pinned spec blob is missing (missing_specs: `payments:v1.0.0 -> sha256:…`)."""

    ok: bool
    blobs_checked: int
    corrupt: list[str] = field(default_factory=list)
    missing: list[Entry] = field(default_factory=list)
    orphans: int = 0
    missing_specs: list[str] = field(default_factory=list)


def default_home() -> Path:
    """$FLUXMIX_HOME, else the platform's user data directory."""
    env = os.environ.get("FLUXMIX_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("fluxmix"))


def open_store(home: str | os.PathLike[str] | None = None, *, url: str | None = None) -> Store:
    """Open (creating if needed) the store at home: arg > $FLUXMIX_HOME > user data dir.

    The index URL is: arg > $FLUXMIX_STORE_URL > sqlite:///<home>/index.sqlite3.
    """
    return Store(Path(home) if home is not None else default_home(), url=url)


class Store:
    """Blobs + index + mixer state. Safe to use from several processes at once."""

    def __init__(self, home: Path, *, url: str | None = None) -> None:
        self.home = Path(home).expanduser().absolute()
        try:
            if not self.home.exists():
                self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the store directory {self.home}: {error.strerror or error}") from error
        self.read_only = _read_only_reason(self.home)
        self.blobs = BlobStore(self.home / "blobs", create=self.read_only is None)
        self.url = url or os.environ.get("FLUXMIX_STORE_URL") or f"sqlite:///{self.home / 'index.sqlite3'}"
        self._index = Index(
            self.url, read_only=self.read_only, backfill_spec_pins=lambda session: _pins.backfill(session, self.blobs)
        )
        self.globals = GlobalsTable(self._index)  # global state per scenario name (store/_globals.py)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Dispose the engine (closes pooled connections; the next process sees no stale locks)."""
        self._index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store(home={str(self.home)!r}, url={self._index.display_url!r})"

    # -- blobs ---------------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Store bytes, return their hex sha256 (equals `sha256sum`); atomic and idempotent."""
        self._require_writable()
        return self.blobs.put(bytes(data))

    def _require_writable(self) -> None:
        if self.read_only is not None:
            raise StoreError(
                f"the store at {self.home} is read-only ({self.read_only}); reading commands work, "
                "changing it needs write access"
            )

    def get_blob(self, hex: str) -> bytes:  # noqa: A002 - the brief's name
        """The blob's bytes, re-hashed: CorruptBlobError if they changed, NotFoundError if absent."""
        return self.blobs.get(hex)

    def has_blob(self, hex: str) -> bool:  # noqa: A002
        return self.blobs.has(hex)

    def blob_path(self, hex: str) -> Path:  # noqa: A002
        """Where the blob lives (for diagnostics; read it with get_blob, which verifies)."""
        return self.blobs.path_for(hex)

    # -- import --------------------------------------------------------------------------------

    def import_bytes(
        self,
        kind: str,
        data: bytes,
        *,
        name: str,
        tag: str | None = None,
        version: str | None = None,
        spec: str | None = None,
    ) -> ImportResult:
        """Store `data` under kind/name/tag; the tag is tag > declared version > next minor.

        Nothing is validated beyond names and tags: callers (fluxmix.loading) validate content.
        The tag is checked before the blob is written and again inside the write transaction,
        so a refused import leaves no index row (at most an unreferenced blob, which gc removes).
        `spec` is a scenario's `spec:` reference: it is resolved in the same transaction and the
        spec blob it names is pinned to the scenario's bytes (NotFoundError when it does not resolve).
        """
        check_kind(kind)
        check_name(name)
        if spec is not None and kind != "scenario":
            raise ValueError("only a scenario pins a spec")
        self._require_writable()
        data = bytes(data)
        if tag is not None:
            wanted: str | None = canonical_tag(tag)
        elif version is not None:
            try:
                wanted = canonical_tag(version)
            except InvalidNameError as error:
                raise InvalidNameError(f"declared version of {name}: {error}") from None
        else:
            wanted = None
        digest = sha256_hex(data)

        # Cheap pre-check so that a refused tag writes nothing at all.
        with self._index.read() as session:
            early = self._decide(session, kind, name, wanted, digest, explicit=tag is not None)
            if spec is not None:
                resolve_in(session, self.blobs, parse_store_ref(spec), "spec")  # refuse before writing a blob
                unpinned = self._index.has_spec_pins and _pins.get_pin(session, digest) is None
            else:
                unpinned = False
        if isinstance(early, ImportResult) and not unpinned:
            if self.blobs.has(digest):
                self.blobs.put(data)  # freshen (and heal a damaged copy)
                return early
        self.blobs.put(data)

        for attempt in range(_WRITE_RETRIES):
            try:
                with self._index.write() as session:
                    decision = self._decide(session, kind, name, wanted, digest, explicit=tag is not None)
                    if spec is not None:
                        _pins.pin(session, self.blobs, digest, spec)
                    if isinstance(decision, ImportResult):
                        return decision
                    row = TagRow(
                        kind=kind, name=name, tag=decision, hash=digest, size=len(data), imported_at=_state.now()
                    )
                    session.add(row)
                    session.flush()
                    return ImportResult(kind, name, decision, digest, len(data), True, row.imported_at)
            except IntegrityError as error:
                # Only reachable on servers without BEGIN IMMEDIATE (a concurrent insert won); decide again.
                if attempt == _WRITE_RETRIES - 1:
                    raise StoreError(f"could not record {kind} {name}: {error.orig}") from error
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _decide(
        self, session: Any, kind: str, name: str, wanted: str | None, digest: str, *, explicit: bool
    ) -> ImportResult | str:
        """An ImportResult when nothing is to be written (no-op), else the tag to create.

        Without an explicit tag, bytes that already hold a tag under this name are a no-op that
        reports that tag (the highest, if several), whatever the declared version or the next
        minor would be. An explicit tag may add a second tag to the same bytes, as registries allow.
        """
        rows: dict[str, TagRow] = {
            r.tag: r for r in session.scalars(select(TagRow).where(TagRow.kind == kind, TagRow.name == name))
        }
        if wanted is not None and wanted in rows and rows[wanted].hash == digest:
            return _import_result(rows[wanted], created=False)
        if not explicit:
            holding = [tag for tag, row in rows.items() if row.hash == digest]
            if holding:
                return _import_result(rows[highest_tag(holding) or holding[0]], created=False)
        if wanted is None:
            return next_tag(list(rows))
        if wanted in rows:
            raise TagConflictError(
                f"tag {wanted} of {_label(kind, name)} already holds {short_hash(rows[wanted].hash)}; bump the version"
            )
        return wanted

    # -- spec pins -----------------------------------------------------------------------------

    def pin_spec(self, scenario_hash: str, spec: str) -> SpecPin:
        """Pin the spec blob `spec` resolves to now to the scenario blob (kept if already pinned).

        For scenario bytes stored without a tag (a followed file edited without a version bump);
        import_bytes pins tagged imports itself.
        """
        self._require_writable()
        with self._index.write() as session:
            return _pins.pin(session, self.blobs, check_hex(scenario_hash), spec)

    def spec_pin(self, scenario_hash: str) -> SpecPin | None:
        """The spec blob this scenario blob was stored with, if it names a spec."""
        if not self._index.has_spec_pins:
            return None
        with self._index.read() as session:
            return _pins.get_pin(session, check_hex(scenario_hash))

    # -- reading -------------------------------------------------------------------------------

    def resolve(self, ref: str | Ref, kind: str = "scenario") -> Resolved:
        """A NameRef or HashRef (or its text) -> Resolved; paths are fluxmix.loading's job."""
        check_kind(kind)
        parsed = parse_store_ref(ref) if isinstance(ref, str) else ref
        with self._index.read() as session:
            return resolve_in(session, self.blobs, parsed, kind)

    def entries(self, kind: str, name: str | None = None) -> list[Entry]:
        """Tags of a kind (optionally one name): name ascending, tag SemVer descending."""
        check_kind(kind)
        query = _select_entries().where(TagRow.kind == kind)
        if name is not None:
            query = query.where(TagRow.name == check_name(name))
        with self._index.read() as session:
            rows = [Entry(*r) for r in session.execute(query)]
        rows.sort(key=lambda e: tag_key(e.tag), reverse=True)
        rows.sort(key=lambda e: e.name)  # stable: versions stay descending within a name
        return rows

    def names(self, kind: str) -> list[str]:
        check_kind(kind)
        with self._index.read() as session:
            return sorted(set(session.scalars(select(TagRow.name).where(TagRow.kind == kind))))

    def untag(self, kind: str, name: str, tag: str, *, force: bool = False) -> UntagResult:
        """Remove one tag from the index; the blob stays until gc finds nothing else uses it.

        A spec tag that a stored scenario's `spec:` resolves through is refused (SpecInUseError,
        naming the scenarios) unless `force`; forced, the result lists the scenarios it breaks.
        """
        check_kind(kind)
        check_name(name)
        canonical = canonical_tag(tag)
        self._require_writable()
        with self._index.write() as session:
            row = session.get(TagRow, (kind, name, canonical))
            if row is None:
                raise NotFoundError(f"{kind} {name} has no tag {canonical}")
            entry = _entry(row)
            session.delete(row)
            breaks: list[str] = []
            if kind == "spec" and self._index.has_spec_pins:
                session.flush()
                breaks = _pins.broken_by_untag(session, self.blobs, name)
                if breaks and not force:
                    shown = "; ".join(breaks[:5]) + (f"; and {len(breaks) - 5} more" if len(breaks) > 5 else "")
                    raise SpecInUseError(
                        f"spec {name}:{canonical} is needed by {len(breaks)} stored scenario"
                        f"{'s' if len(breaks) != 1 else ''} whose spec: would no longer resolve: {shown}; "
                        "use --force to untag it anyway"
                    )
        return UntagResult(entry, breaks)

    # -- maintenance ---------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Re-hash every blob and check every tag points at an intact blob; orphans are info only."""
        with self._index.read() as session:
            tags = [Entry(*r) for r in session.execute(_select_entries())]
            referenced = _gc.referenced(session, has_spec_pins=self._index.has_spec_pins)
            stored = _pins.stored_scenarios(session) if self._index.has_spec_pins else {}
            pins = _pins.pinned_specs(session) if stored else {}
        corrupt: list[str] = []
        intact: set[str] = set()
        checked = 0
        for blob in self.blobs.iter_blobs():
            checked += 1
            if self.blobs.check(blob):
                intact.add(blob.hash)
            elif blob.path.exists():
                corrupt.append(blob.hash)
        corrupt_set = set(corrupt)
        missing = [e for e in tags if e.hash not in intact and e.hash not in corrupt_set]
        orphans = len(intact - referenced)
        # A stored scenario whose pinned spec is gone (e.g. collected by a fluxmix without pins).
        missing_specs = sorted(
            f"{stored[scenario]} -> sha256:{spec}"
            for scenario, spec in pins.items()
            if scenario in stored and spec not in intact and spec not in corrupt_set
        )
        ok = not corrupt and not missing and not missing_specs
        return VerifyReport(ok, checked, corrupt, missing, orphans, missing_specs)

    def gc(self, *, dry_run: bool = False, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> GcReport:
        """Delete blobs nothing references (tags, active, last known good, journal, a kept scenario's
        pinned spec) once older than the grace.

        The grace period protects a concurrent import that wrote its blob but not yet its index
        row; put_blob freshens an existing blob's mtime for the same reason.
        """
        if not dry_run:
            self._require_writable()
        return _gc.collect(self._index, self.blobs, dry_run=dry_run, grace_seconds=grace_seconds)

    # -- mixer state ---------------------------------------------------------------------------

    def mixer_state(self) -> MixerState:
        with self._index.read() as session:
            return _state.read_state(session)

    def set_active(self, hash: str | None, ref: str | None, *, known_good: bool) -> None:  # noqa: A002
        """Record what runs now; known_good also makes it the rollback target."""
        with self._index.write() as session:
            _state.write_active(session, hash, ref, known_good=known_good)

    def set_paused(self, paused: bool) -> None:
        """Remember whether the mixer's sources are paused, so a restart comes back paused."""
        with self._index.write() as session:
            _state.write_paused(session, paused)

    def record_activation(self, entry: JournalEntry, *, active: tuple[str, str] | None = None) -> int:
        """Append an activation attempt to the journal; returns its id. `active` (hash, ref)
        also records what runs now, as set_active(known_good=True) would, in the same
        transaction: one write where a reload would otherwise wait for two."""
        with self._index.write() as session:
            if active is not None:
                _state.write_active(session, active[0], active[1], known_good=True)
            return _state.add_journal(session, entry)

    def update_activation_gap(self, entry_id: int, gap_seconds: float) -> None:
        """Fill in a reload's processing gap, known only once the new scenario's first message
        arrives, which may be after its journal row was written."""
        with self._index.write() as session:
            _state.set_journal_gap(session, entry_id, gap_seconds)

    def journal(self, limit: int = 50) -> list[JournalEntry]:
        """Newest first."""
        with self._index.read() as session:
            return _state.read_journal(session, limit)

    def prune_journal(self, *, keep_last: int, keep_seconds: float) -> int:
        """Journal retention (activations and global-state changes): see _state.prune_journal."""
        older_than = _state.now() - timedelta(seconds=max(0.0, keep_seconds))
        with self._index.write() as session:
            removed = _state.prune_journal(session, keep_last=keep_last, older_than=older_than)
        return removed + self.globals.prune(keep_last=keep_last, older_than=older_than)

    def load_checkpoint(self, scenario_name: str, gear: str) -> Any | None:
        with self._index.read() as session:
            return _state.read_checkpoint(session, scenario_name, gear)

    def save_checkpoint(self, scenario_name: str, gear: str, value: Any) -> None:
        """Store a JSON value (None deletes it)."""
        with self._index.write() as session:
            _state.write_checkpoint(session, scenario_name, gear, value)


def _read_only_reason(home: Path) -> str | None:
    """Why this process cannot change the store at `home`, or None when it can."""
    if not os.access(home, os.W_OK):
        return "its directory is not writable by this user"
    index = home / "index.sqlite3"
    if index.exists() and not os.access(index, os.W_OK):
        return f"{index.name} is not writable by this user"
    return None


def _select_entries() -> Select[str, str, str, str, int, datetime]:
    """Entry's fields as plain columns: no ORM object (identity map, state) is built per row."""
    return select(TagRow.kind, TagRow.name, TagRow.tag, TagRow.hash, TagRow.size, TagRow.imported_at)


def _entry(row: TagRow) -> Entry:
    return Entry(row.kind, row.name, row.tag, row.hash, row.size, row.imported_at)


def _import_result(row: TagRow, *, created: bool) -> ImportResult:
    return ImportResult(row.kind, row.name, row.tag, row.hash, row.size, created, row.imported_at)


def _label(kind: str, name: str) -> str:
    return name if kind == "scenario" else f"{kind} {name}"


__all__ = [
    "KINDS",
    "DEFAULT_GC_GRACE_SECONDS",
    "Store",
    "open_store",
    "default_home",
    "Entry",
    "ImportResult",
    "SpecPin",
    "UntagResult",
    "Resolved",
    "Ref",
    "NameRef",
    "HashRef",
    "PathRef",
    "parse_ref",
    "canonical_tag",
    "check_hex",
    "latest_tag",
    "JournalEntry",
    "MixerState",
    "VerifyReport",
    "GcReport",
]
