"""From files and references to validated scenarios, against a real Store in tmp_path."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxmix.errors import (
    BadReferenceError,
    CorruptBlobError,
    InvalidNameError,
    NotFoundError,
    ScenarioError,
    TagConflictError,
    ValidationError,
)
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.catalog import Catalog
from fluxmix.loading import (
    MAX_DOCUMENT_BYTES,
    LoadedScenario,
    SpecDocument,
    import_scenario_file,
    import_spec_file,
    parse_scenario,
    parse_spec,
    read_document,
    resolve_scenario,
)
from fluxmix.store import Store, open_store


class Source(Gear):
    type = "source"
    outputs = (Port("out"),)
    config_schema = {"type": "object", "additionalProperties": False, "properties": {"count": {"type": "integer"}}}

    async def run(self) -> None:
        return None


class Sink(Gear):
    type = "sink"
    inputs = (Port("in", required=True),)


CATALOG = Catalog({"source": Source, "sink": Sink})

SCENARIO = """\
name: flow
{version}gears:
  - name: src
    type: source
    config: {{count: {count}}}
  - name: out
    type: sink
wires:
  - {{from: src.out, to: out.in, transport: memory}}
"""

SPEC = b"""\
name: visa
version: 1.0.0
description: card payments
schema:
  type: object
  required: [amount]
  properties:
    amount: {type: number}
"""


def scenario_bytes(count: int = 3, version: str | None = None, extra: str = "") -> bytes:
    text = SCENARIO.format(version=f"version: {version}\n" if version else "", count=count)
    return (text + extra).encode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "home") as s:
        yield s


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- read_document


def test_read_document(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", b"name: x\n")
    assert read_document(path) == b"name: x\n"
    assert read_document(str(path)) == b"name: x\n"


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: no such file"):
        read_document(tmp_path / "nope.yaml")


def test_read_directory(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="is a directory"):
        read_document(tmp_path)


def test_read_huge_file_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB that costs nothing to create
    with pytest.raises(ScenarioError) as info:
        read_document(path)
    assert str(path) in str(info.value) and str(MAX_DOCUMENT_BYTES) in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_read_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.yaml", b"name: x\n")
    path.chmod(0)
    with pytest.raises(ScenarioError, match="permission denied"):
        read_document(path)


# ---------------------------------------------------------------- parse_scenario / parse_spec


def test_parse_scenario() -> None:
    scenario = parse_scenario(scenario_bytes(version="1.0.0"), "flow.yaml", catalog=CATALOG)
    assert scenario.name == "flow" and scenario.version == "1.0.0"
    assert [g.name for g in scenario.gears] == ["src", "out"]
    assert scenario.wires[0].transport == "memory"


def test_parse_scenario_reports_every_problem() -> None:
    data = b"name: Flow\ngears:\n  - {name: src, type: sourc}\n  - {name: out, type: sink}\n"
    with pytest.raises(ValidationError) as info:
        parse_scenario(data, "flow.yaml", catalog=CATALOG)
    lines = info.value.lines()
    assert lines[0].startswith("flow.yaml: name: 'Flow' is not a valid name")
    assert lines[1] == (
        "flow.yaml: gears[0].type: unknown gear type 'sourc'; did you mean 'source'? (known: sink, source)"
    )
    assert lines[2] == "flow.yaml: gears[1]: input out.in is required but no wire delivers to it"
    assert str(info.value.problems[1]) == lines[1].removeprefix("flow.yaml: ")


def test_parse_scenario_bad_yaml_and_empty() -> None:
    with pytest.raises(ScenarioError, match=r"^flow\.yaml:2:1: duplicate key 'name'"):
        parse_scenario(b"name: a\nname: b\n", "flow.yaml", catalog=CATALOG)
    with pytest.raises(ValidationError, match="empty"):
        parse_scenario(b"", "flow.yaml", catalog=CATALOG)


def test_parse_scenario_checks_specs_only_with_a_store(store: Store) -> None:
    data = scenario_bytes(extra="spec: visa:v1.0.0\n")
    assert parse_scenario(data, "flow.yaml", catalog=CATALOG).spec == "visa:v1.0.0"
    with pytest.raises(ValidationError, match="spec 'visa:v1.0.0' is not in the store"):
        parse_scenario(data, "flow.yaml", catalog=CATALOG, store=store)


def test_parse_spec() -> None:
    spec = parse_spec(SPEC, "visa.yaml")
    assert spec == SpecDocument(
        name="visa",
        version="1.0.0",
        description="card payments",
        schema={"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
    )
    with pytest.raises(ValidationError, match="schema.type: not a valid JSON Schema"):
        parse_spec(b"name: visa\nschema: {type: objekt}\n", "visa.yaml")


# ---------------------------------------------------------------- importing


def test_import_defaults_name_and_next_minor(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes())
    first = import_scenario_file(store, path, catalog=CATALOG)
    assert (first.name, first.tag, first.created) == ("flow", "v0.1.0", True)
    assert first.hash == hashlib.sha256(path.read_bytes()).hexdigest()
    again = import_scenario_file(store, path, catalog=CATALOG)
    assert (again.tag, again.created) == ("v0.1.0", False)
    path.write_bytes(scenario_bytes(count=4))
    assert import_scenario_file(store, path, catalog=CATALOG).tag == "v0.2.0"


def test_import_tag_precedence(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes(version="1.2.0"))
    assert import_scenario_file(store, path, catalog=CATALOG).tag == "v1.2.0"
    assert import_scenario_file(store, path, catalog=CATALOG, tag="2.0.0-rc.1").tag == "v2.0.0-rc.1"
    other = import_scenario_file(store, path, catalog=CATALOG, name="flow-copy")
    assert (other.name, other.tag) == ("flow-copy", "v1.2.0")
    path.write_bytes(scenario_bytes(count=9, version="1.2.0"))
    with pytest.raises(TagConflictError, match="bump the version"):
        import_scenario_file(store, path, catalog=CATALOG)


def test_invalid_scenario_writes_nothing(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes(extra="extra: 1\n"))
    with pytest.raises(ValidationError, match="unknown top-level key 'extra'"):
        import_scenario_file(store, path, catalog=CATALOG)
    assert store.entries("scenario") == []
    assert not [p for p in (store.home / "blobs").rglob("*") if p.is_file()], "no blob written"


def test_import_refuses_unresolved_spec_then_accepts_it(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes(extra="spec: visa:v1.0.0\n"))
    with pytest.raises(ValidationError, match="spec: spec 'visa:v1.0.0' is not in the store"):
        import_scenario_file(store, path, catalog=CATALOG)
    spec = import_spec_file(store, write(tmp_path, "visa.yaml", SPEC))
    assert (spec.kind, spec.name, spec.tag) == ("spec", "visa", "v1.0.0")
    assert import_scenario_file(store, path, catalog=CATALOG).created


def test_import_without_validation(tmp_path: Path, store: Store) -> None:
    data = scenario_bytes().replace(b"type: sink", b"type: plugin-only-gear")
    path = write(tmp_path, "flow.yaml", data)
    with pytest.raises(ValidationError):
        import_scenario_file(store, path, catalog=CATALOG)
    assert import_scenario_file(store, path, catalog=CATALOG, validate=False).tag == "v0.1.0"
    # still safe YAML, and the spec reference must still resolve
    with pytest.raises(ScenarioError, match="duplicate key"):
        import_scenario_file(store, write(tmp_path, "dup.yaml", b"name: a\nname: b\n"), validate=False)
    with pytest.raises(ValidationError, match="not in the store"):
        import_scenario_file(store, write(tmp_path, "s.yaml", data + b"spec: visa\n"), validate=False)
    with pytest.raises(ScenarioError, match="--name"):
        import_scenario_file(store, write(tmp_path, "anon.yaml", b"gears: []\n"), validate=False)
    assert import_scenario_file(store, tmp_path / "anon.yaml", validate=False, name="anon").name == "anon"


def test_import_bad_explicit_name(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes())
    with pytest.raises(InvalidNameError):
        import_scenario_file(store, path, catalog=CATALOG, name="../../etc")


def test_import_spec_validates(tmp_path: Path, store: Store) -> None:
    with pytest.raises(ValidationError, match="name: required"):
        import_spec_file(store, write(tmp_path, "bad.yaml", b"schema: {type: object}\n"))
    assert store.entries("spec") == []
    result = import_spec_file(store, write(tmp_path, "visa.yaml", SPEC), name="visa-eu", tag="v2.0.0")
    assert (result.name, result.tag) == ("visa-eu", "v2.0.0")


# ---------------------------------------------------------------- resolving


def test_resolve_path_imports_then_loads(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes(version="1.0.0"))
    loaded = resolve_scenario(store, str(path), catalog=CATALOG)
    assert isinstance(loaded, LoadedScenario)
    assert (loaded.name, loaded.tag, loaded.path) == ("flow", "v1.0.0", path)
    assert loaded.hash == hashlib.sha256(loaded.data).hexdigest() and loaded.data == path.read_bytes()
    assert loaded.ref == "flow:v1.0.0"
    assert store.resolve("flow:v1.0.0").hash == loaded.hash
    assert resolve_scenario(store, f"file://{path}", catalog=CATALOG).hash == loaded.hash


def test_resolve_edited_path_without_version_bump_runs_untagged(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes(version="1.0.0"))
    first = resolve_scenario(store, str(path), catalog=CATALOG)
    path.write_bytes(scenario_bytes(count=7, version="1.0.0"))
    edited = resolve_scenario(store, str(path), catalog=CATALOG)
    assert edited.tag is None and edited.hash != first.hash
    assert edited.ref == f"sha256:{edited.hash}"
    assert store.get_blob(edited.hash) == path.read_bytes()
    assert store.resolve("flow:latest").hash == first.hash, "the immutable tag did not move"


def test_resolve_store_references(tmp_path: Path, store: Store) -> None:
    old = import_scenario_file(store, write(tmp_path, "a.yaml", scenario_bytes(version="1.0.0")), catalog=CATALOG)
    new = import_scenario_file(store, write(tmp_path, "b.yaml", scenario_bytes(4, version="1.1.0")), catalog=CATALOG)
    assert resolve_scenario(store, "flow:v1.0.0", catalog=CATALOG).hash == old.hash
    assert resolve_scenario(store, "flow:1.0.0", catalog=CATALOG).hash == old.hash
    latest = resolve_scenario(store, "flow", catalog=CATALOG)
    assert (latest.hash, latest.tag, latest.path) == (new.hash, "v1.1.0", None)
    assert latest.scenario.gear("src").config == {"count": 4}
    assert resolve_scenario(store, "flow:latest", catalog=CATALOG).hash == new.hash
    assert resolve_scenario(store, f"sha256:{old.hash}", catalog=CATALOG).tag == "v1.0.0"
    assert resolve_scenario(store, f"sha256:{old.hash[:12]}", catalog=CATALOG).hash == old.hash


def test_resolve_untagged_hash(store: Store) -> None:
    digest = store.put_blob(scenario_bytes(count=11))
    loaded = resolve_scenario(store, f"sha256:{digest}", catalog=CATALOG)
    assert (loaded.name, loaded.tag, loaded.hash) == ("flow", None, digest)


def test_resolve_hash_of_a_spec_is_refused_clearly(tmp_path: Path, store: Store) -> None:
    spec = import_spec_file(store, write(tmp_path, "visa.yaml", SPEC))
    with pytest.raises(ScenarioError, match=r"is the spec visa:v1\.0\.0, not a scenario") as info:
        resolve_scenario(store, f"sha256:{spec.hash}", catalog=CATALOG)
    assert not isinstance(info.value, ValidationError)
    untagged = store.put_blob(b"name: mc\nschema: {type: object}\n")
    with pytest.raises(ScenarioError, match="is a spec document, not a scenario"):
        resolve_scenario(store, f"sha256:{untagged}", catalog=CATALOG)


def test_resolve_revalidates_stored_scenarios(tmp_path: Path, store: Store) -> None:
    path = write(tmp_path, "flow.yaml", scenario_bytes())
    imported = import_scenario_file(store, path, catalog=CATALOG)
    with pytest.raises(ValidationError, match=r"^flow:v0\.1\.0: .*unknown gear type 'source'"):
        resolve_scenario(store, "flow:v0.1.0", catalog=Catalog({"sink": Sink}))
    assert imported.created


def test_resolve_errors(tmp_path: Path, store: Store) -> None:
    with pytest.raises(BadReferenceError, match="empty reference"):
        resolve_scenario(store, "", catalog=CATALOG)
    with pytest.raises(BadReferenceError):
        resolve_scenario(store, "   ", catalog=CATALOG)
    with pytest.raises(NotFoundError):
        resolve_scenario(store, "nothing:v1.0.0", catalog=CATALOG)
    with pytest.raises(ScenarioError, match="no such file"):
        resolve_scenario(store, str(tmp_path / "missing.yaml"), catalog=CATALOG)
    bad = write(tmp_path, "bad.yaml", b"name: bad\ngears: []\n")
    with pytest.raises(ValidationError, match="at least one gear"):
        resolve_scenario(store, str(bad), catalog=CATALOG)
    assert store.entries("scenario") == []


def test_resolve_corrupt_blob(tmp_path: Path, store: Store) -> None:
    imported = import_scenario_file(store, write(tmp_path, "flow.yaml", scenario_bytes()), catalog=CATALOG)
    blob = store.blob_path(imported.hash)
    blob.chmod(0o644)
    blob.write_bytes(scenario_bytes(count=666))
    with pytest.raises(CorruptBlobError):
        resolve_scenario(store, "flow", catalog=CATALOG)
