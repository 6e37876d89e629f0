"""The store against a real directory and a real SQLite file: blobs, tags, resolve, verify, gc, state."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fluxmix.errors import (
    AmbiguousReferenceError,
    BadReferenceError,
    CorruptBlobError,
    InvalidNameError,
    NotFoundError,
    StoreError,
    TagConflictError,
)
from fluxmix.store import (
    KINDS,
    HashRef,
    JournalEntry,
    MixerState,
    NameRef,
    PathRef,
    Store,
    VerifyReport,
    open_store,
)

FLOW_V1 = b"name: payment-flow\nversion: 1.0.0\ngears: []\n"
FLOW_V2 = b"name: payment-flow\nversion: 1.1.0\ngears: []\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "home")
    try:
        yield s
    finally:
        s.close()


def age(path: Path, seconds: float) -> None:
    """Pretend a file was written `seconds` ago (gc's grace period looks at mtime)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def flip_byte(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


# -- opening ----------------------------------------------------------------------------------


def test_home_from_argument_env_and_platform_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXMIX_HOME", str(tmp_path / "env-home"))
    with open_store() as s:
        assert s.home == tmp_path / "env-home"
        assert (s.home / "index.sqlite3").is_file()
        assert (s.home / "blobs").is_dir()
        assert (s.home.stat().st_mode & 0o777) == 0o700
    with open_store(tmp_path / "arg-home") as s:
        assert s.home == tmp_path / "arg-home"
    monkeypatch.delenv("FLUXMIX_HOME")
    monkeypatch.setattr("platformdirs.user_data_dir", lambda app: str(tmp_path / "platform" / app))
    with open_store() as s:
        assert s.home == tmp_path / "platform" / "fluxmix"


def test_index_url_from_argument_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "elsewhere.db"
    monkeypatch.setenv("FLUXMIX_STORE_URL", f"sqlite:///{db}")
    with open_store(tmp_path / "home") as s:
        s.import_bytes("scenario", FLOW_V1, name="payment-flow")
    assert db.is_file()
    assert not (tmp_path / "home" / "index.sqlite3").exists()
    other = tmp_path / "arg.db"
    with open_store(tmp_path / "home", url=f"sqlite:///{other}") as s:
        assert s.entries("scenario") == []
    assert other.is_file()


def test_index_is_wal_and_records_its_schema_version(store: Store) -> None:
    with sqlite3.connect(store.home / "index.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)


def test_reopening_keeps_data_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_store(home) as s:
        s.import_bytes("scenario", FLOW_V1, name="payment-flow")
    with open_store(home) as s:
        assert [e.ref for e in s.entries("scenario")] == ["payment-flow:v0.1.0"]
    conn = sqlite3.connect(home / "index.sqlite3")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(home)


# -- blobs ------------------------------------------------------------------------------------


def test_blob_hash_equals_sha256sum(store: Store, tmp_path: Path) -> None:
    data = os.urandom(100_000) + b"\x00\r\n tail"
    sample = tmp_path / "sample.bin"
    sample.write_bytes(data)
    expected = subprocess.run(["sha256sum", str(sample)], check=True, capture_output=True, text=True).stdout.split()[0]
    assert store.put_blob(data) == expected
    assert store.import_bytes("scenario", data, name="binary").hash == expected
    path = store.home / "blobs" / expected[:2] / expected
    assert path.read_bytes() == data
    assert store.get_blob(expected) == data
    assert store.get_blob("sha256:" + expected.upper()) == data


def test_put_blob_is_idempotent_atomic_and_read_only(store: Store) -> None:
    digest = store.put_blob(b"abc")
    assert store.put_blob(b"abc") == digest
    shard = store.home / "blobs" / digest[:2]
    assert sorted(p.name for p in shard.iterdir()) == [digest]  # no temp files left behind
    assert ((shard / digest).stat().st_mode & 0o777) == 0o444
    assert store.has_blob(digest)
    assert not store.has_blob(hashlib.sha256(b"other").hexdigest())


def test_missing_blob_and_bad_hex(store: Store) -> None:
    with pytest.raises(NotFoundError, match="not in the store"):
        store.get_blob(hashlib.sha256(b"nothing").hexdigest())
    for bad in ["../../../etc/passwd", "ab", "z" * 64, "/" + "a" * 63]:
        with pytest.raises(BadReferenceError):
            store.get_blob(bad)
        with pytest.raises(BadReferenceError):
            store.has_blob(bad)


def test_corrupted_blob_is_detected_on_read_and_by_verify(store: Store) -> None:
    result = store.import_bytes("scenario", FLOW_V1, name="payment-flow")
    path = store.blob_path(result.hash)
    flip_byte(path)
    with pytest.raises(CorruptBlobError) as caught:
        store.get_blob(result.hash)
    assert result.hash in str(caught.value) and "will not be used" in str(caught.value)
    report = store.verify()
    assert not report.ok
    assert report.corrupt == [result.hash]
    assert report.missing == []
    # Importing the genuine bytes again heals the blob.
    assert store.import_bytes("scenario", FLOW_V1, name="payment-flow").created is False
    assert store.get_blob(result.hash) == FLOW_V1
    assert store.verify().ok


def test_verify_reports_missing_blobs_and_orphans(store: Store) -> None:
    tagged = store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="1.0.0")
    store.put_blob(b"orphan")
    assert store.verify() == VerifyReport(True, 2, [], [], 1)
    store.blob_path(tagged.hash).unlink()
    report = store.verify()
    assert not report.ok
    assert [e.ref for e in report.missing] == ["payment-flow:v1.0.0"]
    assert report.blobs_checked == 1 and report.orphans == 1


# -- import and tags --------------------------------------------------------------------------


def test_tag_priority_explicit_then_declared_then_next_minor(store: Store) -> None:
    assert store.import_bytes("scenario", b"a", name="flow").tag == "v0.1.0"
    assert store.import_bytes("scenario", b"b", name="flow").tag == "v0.2.0"
    assert store.import_bytes("scenario", b"c", name="flow", version="1.4.2").tag == "v1.4.2"
    assert store.import_bytes("scenario", b"d", name="flow").tag == "v1.5.0"
    assert store.import_bytes("scenario", b"e", name="flow", tag="V3.0.0", version="2.0.0").tag == "v3.0.0"
    assert store.import_bytes("scenario", b"f", name="flow", tag="4.0.0-rc.1").tag == "v4.0.0-rc.1"
    assert store.import_bytes("scenario", b"g", name="flow").tag == "v4.1.0"


def test_auto_tag_is_a_noop_when_any_tag_holds_the_same_bytes(store: Store) -> None:
    first = store.import_bytes("scenario", b"a", name="flow")
    again = store.import_bytes("scenario", b"a", name="flow")
    assert (again.tag, again.created, again.imported_at) == ("v0.1.0", False, first.imported_at)
    store.import_bytes("scenario", b"b", name="flow")
    # Re-importing older content reports its tag (issue 8: the README promises a no-op), rather
    # than minting v0.3.0 with v0.1.0's hash.
    revert = store.import_bytes("scenario", b"a", name="flow")
    assert (revert.tag, revert.created) == ("v0.1.0", False)
    assert [e.tag for e in store.entries("scenario", "flow")] == ["v0.2.0", "v0.1.0"]


def test_duplicate_import_is_a_noop_that_keeps_the_first_time(store: Store) -> None:
    first = store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="v1.0.0")
    time.sleep(0.01)
    second = store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="1.0.0")
    assert first.created and not second.created
    assert second.imported_at == first.imported_at
    assert second.hash == first.hash and second.size == len(FLOW_V1)
    assert [e.imported_at for e in store.entries("scenario")] == [first.imported_at]


def test_tags_are_immutable_and_the_message_says_what_to_do(store: Store) -> None:
    first = store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="v1.0.0")
    with pytest.raises(TagConflictError) as caught:
        store.import_bytes("scenario", FLOW_V2, name="payment-flow", tag="v1.0.0")
    expected = f"tag v1.0.0 of payment-flow already holds sha256:{first.hash[:12]}; bump the version"
    assert str(caught.value) == expected
    # Nothing was written: no index row, not even the blob.
    assert [(e.tag, e.hash) for e in store.entries("scenario")] == [("v1.0.0", first.hash)]
    assert not store.has_blob(hashlib.sha256(FLOW_V2).hexdigest())
    with pytest.raises(TagConflictError, match="of spec visa already holds"):
        store.import_bytes("spec", b"x", name="visa", tag="1.0.0")
        store.import_bytes("spec", b"y", name="visa", tag="1.0.0")


def test_conflict_found_inside_the_transaction_writes_no_row(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent import can take the tag between the pre-check and the write transaction."""
    original = store.blobs.put

    def put_and_race(data: bytes) -> str:
        digest = original(data)
        if data == FLOW_V2:
            other = open_store(store.home)
            try:
                other.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="v1.0.0")
            finally:
                other.close()
        return digest

    monkeypatch.setattr(store.blobs, "put", put_and_race)
    with pytest.raises(TagConflictError):
        store.import_bytes("scenario", FLOW_V2, name="payment-flow", tag="v1.0.0")
    assert [e.hash for e in store.entries("scenario")] == [hashlib.sha256(FLOW_V1).hexdigest()]


def test_build_metadata_and_bad_versions_are_refused_on_import(store: Store) -> None:
    with pytest.raises(InvalidNameError, match="build metadata"):
        store.import_bytes("scenario", b"a", name="flow", tag="1.0.0+20260101")
    with pytest.raises(InvalidNameError, match="declared version of flow"):
        store.import_bytes("scenario", b"a", name="flow", version="1.0")
    assert store.entries("scenario") == []


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "..", "/etc/passwd", "a\x00b", "ｐayment", "payment-flоw", "x" * 65, "", "A"]
)
def test_import_refuses_names_that_could_escape(store: Store, name: str) -> None:
    def files() -> list[Path]:
        return sorted(p.relative_to(store.home) for p in store.home.rglob("*") if not p.name.endswith(("-wal", "-shm")))

    before = files()
    with pytest.raises(InvalidNameError):
        store.import_bytes("scenario", b"data", name=name)
    assert store.entries("scenario") == []
    assert files() == before


@pytest.mark.parametrize("tag", ["../1.0.0", "1.0.0/../../x", "1.0.0\x00", "١.2.3", "latest", "/1.0.0", "1" * 300])
def test_import_refuses_tags_that_could_escape(store: Store, tag: str) -> None:
    with pytest.raises(InvalidNameError):
        store.import_bytes("scenario", b"data", name="flow", tag=tag)
    assert store.entries("scenario") == []


def test_unknown_kind_is_refused(store: Store) -> None:
    with pytest.raises(InvalidNameError, match="unknown kind"):
        store.import_bytes("../scenario", b"x", name="flow")
    assert KINDS == ("scenario", "spec")


def test_kinds_are_separate_namespaces(store: Store) -> None:
    scenario = store.import_bytes("scenario", b"scenario bytes", name="visa", tag="1.0.0")
    spec = store.import_bytes("spec", b"spec bytes", name="visa", tag="1.0.0")
    assert scenario.hash != spec.hash
    assert store.resolve("visa:v1.0.0").hash == scenario.hash
    assert store.resolve("visa:v1.0.0", kind="spec").hash == spec.hash
    assert [e.kind for e in store.entries("spec")] == ["spec"]
    assert store.names("scenario") == store.names("spec") == ["visa"]
    store.untag("spec", "visa", "v1.0.0")
    assert store.resolve("visa").hash == scenario.hash
    with pytest.raises(NotFoundError, match="no spec named 'visa'"):
        store.resolve("visa", kind="spec")


# -- resolving --------------------------------------------------------------------------------


def test_round_trip_by_every_reference_form(store: Store) -> None:
    store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="v1.0.0")
    result = store.import_bytes("scenario", FLOW_V2, name="payment-flow", tag="v1.1.0")
    forms = [
        "payment-flow:v1.1.0",
        "payment-flow:1.1.0",
        "payment-flow:latest",
        "payment-flow",
        f"sha256:{result.hash}",
        f"sha256:{result.hash[:12]}",
        NameRef("payment-flow", "v1.1.0"),
        HashRef(result.hash[:20]),
    ]
    for form in forms:
        resolved = store.resolve(form)
        assert (resolved.kind, resolved.name, resolved.tag, resolved.hash) == (
            "scenario", "payment-flow", "v1.1.0", result.hash,
        ), form
        assert store.get_blob(resolved.hash) == FLOW_V2


def test_hash_reference_to_an_untagged_blob_has_no_name(store: Store) -> None:
    digest = store.put_blob(b"loose")
    resolved = store.resolve(f"sha256:{digest}")
    assert (resolved.name, resolved.tag, resolved.hash) == (None, None, digest)
    assert resolved.ref == f"sha256:{digest}"


def test_latest_ordering_and_prerelease_only(store: Store) -> None:
    for tag in ["v1.9.0-rc.1", "v1.10.0", "v1.9.0"]:
        store.import_bytes("scenario", tag.encode(), name="flow", tag=tag)
    assert store.resolve("flow:latest").tag == "v1.10.0"
    assert [e.tag for e in store.entries("scenario", "flow")] == ["v1.10.0", "v1.9.0", "v1.9.0-rc.1"]
    store.import_bytes("scenario", b"rc", name="flow", tag="v2.0.0-rc.1")
    assert store.resolve("flow").tag == "v1.10.0"  # a pre-release never beats a release
    for tag in ["v0.2.0-beta.1", "v0.2.0-rc.2", "v0.2.0-rc.10"]:
        store.import_bytes("scenario", tag.encode(), name="only-pre", tag=tag)
    assert store.resolve("only-pre").tag == "v0.2.0-rc.10"


def test_entries_sorted_by_name_then_semver_desc(store: Store) -> None:
    store.import_bytes("scenario", b"1", name="zeta", tag="1.0.0")
    store.import_bytes("scenario", b"2", name="alpha", tag="1.9.0")
    store.import_bytes("scenario", b"3", name="alpha", tag="1.10.0")
    assert [e.ref for e in store.entries("scenario")] == ["alpha:v1.10.0", "alpha:v1.9.0", "zeta:v1.0.0"]
    assert store.names("scenario") == ["alpha", "zeta"]


def test_not_found_messages_say_what_exists(store: Store) -> None:
    with pytest.raises(NotFoundError, match="the store has no scenarios yet"):
        store.resolve("payment-flow")
    store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="1.0.0")
    with pytest.raises(NotFoundError, match="no scenario named 'payment' in the store; known: payment-flow"):
        store.resolve("payment")
    with pytest.raises(NotFoundError, match="payment-flow has no tag v9.0.0; available: v1.0.0"):
        store.resolve("payment-flow:9.0.0")
    with pytest.raises(NotFoundError, match="no blob in the store starts with sha256:000000000000"):
        store.resolve("sha256:000000000000")
    with pytest.raises(NotFoundError):
        store.resolve("sha256:" + "0" * 64)


def test_ambiguous_hash_prefix(store: Store) -> None:
    # Two blobs sharing a 12-digit prefix would take ~2^24 tries to find; plant them directly
    # (a blob that fails its hash never matters for prefix matching, which only lists names).
    shard = store.home / "blobs" / "ab"
    shard.mkdir()
    (shard / ("ab12cd34ef56" + "1" * 52)).write_bytes(b"x")
    (shard / ("ab12cd34ef56" + "2" * 52)).write_bytes(b"y")
    with pytest.raises(AmbiguousReferenceError) as caught:
        store.resolve("sha256:ab12cd34ef56")
    assert "matches 2 blobs" in str(caught.value) and "more hex digits" in str(caught.value)
    assert store.resolve("sha256:ab12cd34ef561").hash == "ab12cd34ef56" + "1" * 52


def test_resolve_refuses_paths_but_prefers_names_over_same_named_files(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BadReferenceError, match="is a file path"):
        store.resolve("./flow.yaml")
    with pytest.raises(BadReferenceError, match="is a file path"):
        store.resolve(PathRef(Path("flow.yaml")))
    store.import_bytes("scenario", FLOW_V1, name="flow.yaml", tag="1.0.0")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flow.yaml").write_text("name: other\n")
    assert store.resolve("flow.yaml").tag == "v1.0.0"


def test_untag_removes_the_row_but_keeps_the_blob(store: Store) -> None:
    result = store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="1.0.0")
    entry = store.untag("scenario", "payment-flow", "1.0.0").entry
    assert (entry.tag, entry.hash) == ("v1.0.0", result.hash)
    assert store.entries("scenario") == []
    assert store.get_blob(result.hash) == FLOW_V1
    with pytest.raises(NotFoundError, match="has no tag v1.0.0"):
        store.untag("scenario", "payment-flow", "v1.0.0")
    # The tag is free again after an explicit untag.
    assert store.import_bytes("scenario", FLOW_V2, name="payment-flow", tag="1.0.0").created


# -- gc ---------------------------------------------------------------------------------------


def test_gc_removes_only_unreferenced_blobs_past_the_grace_period(store: Store) -> None:
    tagged = store.import_bytes("scenario", b"tagged", name="flow").hash
    active = store.put_blob(b"active")
    good = store.put_blob(b"last known good")
    journal_from = store.put_blob(b"journal from")
    journal_to = store.put_blob(b"journal to")
    untagged = store.import_bytes("scenario", b"untagged", name="gone").hash
    store.untag("scenario", "gone", "v0.1.0")
    orphan = store.put_blob(b"orphan")
    fresh_orphan = store.put_blob(b"fresh orphan")
    store.set_active(good, "good:v1.0.0", known_good=True)
    store.set_active(active, "active:v2.0.0", known_good=False)
    store.record_activation(
        JournalEntry(datetime.now(timezone.utc), "api", "x", journal_from, journal_to, "rejected", "bad")
    )
    for digest in [tagged, active, good, journal_from, journal_to, untagged, orphan]:
        age(store.blob_path(digest), 2 * 3600)
    stale_temp = store.home / "blobs" / tagged[:2] / ".tmp-123-stale"
    stale_temp.write_bytes(b"half")
    age(stale_temp, 2 * 3600)
    fresh_temp = store.home / "blobs" / tagged[:2] / ".tmp-456-fresh"
    fresh_temp.write_bytes(b"in progress")

    assert store.verify().orphans == 3

    dry = store.gc(dry_run=True)
    assert sorted(dry.removed) == sorted([untagged, orphan])
    assert dry.bytes_freed == len(b"untagged") + len(b"orphan")
    assert dry.kept == 6 and dry.temp_files_removed == 1 and dry.dry_run
    assert store.has_blob(untagged) and store.has_blob(orphan) and stale_temp.exists()

    report = store.gc()
    assert sorted(report.removed) == sorted([untagged, orphan])
    assert not store.has_blob(untagged) and not store.has_blob(orphan)
    assert not stale_temp.exists() and fresh_temp.exists()
    for digest in [tagged, active, good, journal_from, journal_to, fresh_orphan]:
        assert store.has_blob(digest)
    assert store.verify().ok

    # The fresh orphan goes once the grace period is waived.
    assert store.gc(grace_seconds=0).removed == [fresh_orphan]


def test_reimporting_an_old_orphan_freshens_it_so_gc_keeps_it(store: Store) -> None:
    digest = store.put_blob(FLOW_V1)
    age(store.blob_path(digest), 2 * 3600)
    store.put_blob(FLOW_V1)  # e.g. an import that will write its index row in a moment
    assert store.gc().removed == []


# -- mixer state ------------------------------------------------------------------------------


def test_mixer_state_round_trip(store: Store) -> None:
    assert store.mixer_state() == MixerState(None, None, None, None)
    one = store.put_blob(b"one")
    two = store.put_blob(b"two")
    store.set_active(one, "flow:v1.0.0", known_good=True)
    state = store.mixer_state()
    assert (state.active_hash, state.active_ref, state.last_known_good_hash) == (one, "flow:v1.0.0", one)
    assert state.updated_at is not None and state.updated_at.tzinfo is not None
    store.set_active("sha256:" + two, "flow:v2.0.0", known_good=False)
    state = store.mixer_state()
    assert (state.active_hash, state.last_known_good_hash) == (two, one)
    store.set_active(None, None, known_good=False)
    assert store.mixer_state().active_hash is None and store.mixer_state().last_known_good_hash == one
    with pytest.raises(BadReferenceError):
        store.set_active("not-a-hash", None, known_good=True)


def test_journal_round_trip_newest_first(store: Store) -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    one = store.put_blob(b"one")
    ids = []
    for i, outcome in enumerate(["activated", "rejected", "rolled-back"]):
        ids.append(
            store.record_activation(
                JournalEntry(
                    ts=start + timedelta(seconds=i),
                    trigger="file-change",
                    ref="./flow.yaml",
                    from_hash=one if i else None,
                    to_hash=one,
                    outcome=outcome,  # type: ignore[arg-type]
                    reason=f"reason {i}",
                    problems=[f"wires[{i}].to: gear 'snk' is not defined"],
                    phases={"validate": 0.01 * i, "build": 0.5},
                    drained=i * 10,
                    gap_seconds=0.25 if i else None,
                )
            )
        )
    assert ids == sorted(ids) and len(set(ids)) == 3
    entries = store.journal()
    assert [e.id for e in entries] == ids[::-1]
    newest = entries[0]
    assert newest.ts == start + timedelta(seconds=2)
    assert newest.outcome == "rolled-back" and newest.from_hash == one
    assert newest.problems == ["wires[2].to: gear 'snk' is not defined"]
    assert newest.phases == {"validate": 0.02, "build": 0.5}
    assert (newest.drained, newest.gap_seconds) == (20, 0.25)
    assert newest.as_dict()["ts"] == "2026-01-02T03:04:07.678901+00:00"
    assert store.journal(limit=1) == [newest]
    with pytest.raises(ValueError, match="outcome"):
        store.record_activation(JournalEntry(start, "api", None, None, None, "exploded", "?"))  # type: ignore[arg-type]


def test_checkpoints_round_trip(store: Store) -> None:
    assert store.load_checkpoint("flow", "source") is None
    store.save_checkpoint("flow", "source", {"offset": 42, "files": ["a", "b"], "done": False})
    store.save_checkpoint("flow", "sink", 7)
    store.save_checkpoint("other", "source", "x")
    assert store.load_checkpoint("flow", "source") == {"offset": 42, "files": ["a", "b"], "done": False}
    store.save_checkpoint("flow", "source", {"offset": 43})
    assert store.load_checkpoint("flow", "source") == {"offset": 43}
    assert store.load_checkpoint("flow", "sink") == 7
    assert store.load_checkpoint("other", "source") == "x"
    store.save_checkpoint("flow", "sink", None)
    assert store.load_checkpoint("flow", "sink") is None
    with pytest.raises(TypeError):
        store.save_checkpoint("flow", "source", {"not": object()})
    assert store.load_checkpoint("flow", "source") == {"offset": 43}


def test_unusable_home_or_index_is_a_store_error_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the store directory"):
        open_store(blocker / "home")
    home = tmp_path / "home"
    home.mkdir()
    (home / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="index.sqlite3"):
        open_store(home)


def test_gc_keeps_a_blob_freshened_after_it_was_listed(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race gc guards against: an import reuses an old orphan while gc is deciding."""
    digest = store.put_blob(FLOW_V1)
    age(store.blob_path(digest), 2 * 3600)
    listed = list(store.blobs.iter_blobs())  # gc's view: old and unreferenced
    store.put_blob(FLOW_V1)  # a concurrent import freshens it before gc unlinks
    monkeypatch.setattr(store.blobs, "iter_blobs", lambda: iter(listed))
    report = store.gc()
    assert report.removed == [] and report.kept == 1
    assert store.get_blob(digest) == FLOW_V1


def test_failed_blob_write_leaves_no_temp_file_and_no_row(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StoreError, match="No space left on device"):
        store.import_bytes("scenario", FLOW_V1, name="payment-flow")
    monkeypatch.undo()
    assert store.entries("scenario") == []
    assert [p for p in (store.home / "blobs").rglob("*") if p.is_file()] == []


def test_reads_do_not_wait_for_another_process_holding_the_write_lock(store: Store) -> None:
    """WAL + deferred reads: `fluxmix scenario list` works while the mixer is mid-write."""
    store.import_bytes("scenario", FLOW_V1, name="payment-flow", tag="1.0.0")
    writer = sqlite3.connect(store.home / "index.sqlite3", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM tags")
        # The uncommitted delete is invisible and does not block the reader.
        assert [e.ref for e in store.entries("scenario")] == ["payment-flow:v1.0.0"]
        assert store.resolve("payment-flow").tag == "v1.0.0"
        writer.execute("ROLLBACK")
    finally:
        writer.close()


def test_a_late_reload_gap_is_written_into_its_journal_row(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from fluxmix.store import JournalEntry, open_store

    with open_store(tmp_path / "gap") as store:
        entry_id = store.record_activation(JournalEntry(
            ts=datetime.now(timezone.utc), trigger="api", ref="x", from_hash=None, to_hash=None,
            outcome="activated", reason="", problems=[], phases={}, drained=0, gap_seconds=None))
        store.update_activation_gap(entry_id, 0.25)
        assert store.journal(1)[0].gap_seconds == 0.25
        with pytest.raises(KeyError):
            store.update_activation_gap(entry_id + 1, 0.1)
