"""From files and store references to validated scenarios: the one path every command and the mixer use.

`read_document` reads a bounded file, `parse_scenario`/`parse_spec` turn bytes into validated
models, `import_*_file` validate and then store, and `resolve_scenario` turns any startup or CLI
reference (path, `name:tag`, `sha256:...`) into a `LoadedScenario` whose bytes came from (and
were verified by) the store. Validation always happens before anything is written.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxmix.errors import (
    BadReferenceError,
    NotFoundError,
    Problem,
    ScenarioError,
    TagConflictError,
    UserError,
    ValidationError,
)
from fluxmix.gears.catalog import Catalog
from fluxmix.refs import short_hash
from fluxmix.scenario import Scenario, build_scenario
from fluxmix.scenario_yaml import MAX_DOCUMENT_BYTES, load_yaml
from fluxmix.spec_validation import validate_spec
from fluxmix.validation import SpecResolver, spec_problem, validate_scenario

if TYPE_CHECKING:  # the store imports nothing from here; keep import time low for the CLI
    from fluxmix.store import ImportResult, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedScenario:
    """A validated scenario together with the exact stored bytes it came from."""

    scenario: Scenario
    hash: str
    name: str
    tag: str | None
    data: bytes
    path: Path | None = None

    @property
    def ref(self) -> str:
        """`name:tag` when tagged, else `sha256:<hex>`: what journals and logs print."""
        return f"{self.name}:{self.tag}" if self.tag else f"sha256:{self.hash}"


@dataclass(frozen=True, slots=True)
class SpecDocument:
    """A validated spec file: a named, versioned JSON Schema for message bodies."""

    name: str
    version: str | None = None
    description: str | None = None
    schema: Mapping[str, Any] | bool | None = None


# ---------------------------------------------------------------- reading


def read_document(path: str | os.PathLike[str], *, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of a scenario/spec file: a regular file of at most `max_bytes`.

    Opened non-blocking and checked on the open descriptor (no race with a swapped path): a FIFO,
    a device or a socket is refused instead of blocking the CLI or the mixer's activation lock
    forever, and the read is bounded whatever stat said. Every failure is a one-line
    ScenarioError that names the path.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such file") from None
    except NotADirectoryError:
        raise ScenarioError(f"{p}: no such file (a parent is not a directory)") from None
    except IsADirectoryError:
        raise ScenarioError(f"{p}: is a directory, not a scenario or spec file") from None
    except PermissionError:
        raise ScenarioError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ScenarioError(f"{p}: is a directory, not a scenario or spec file")
        if not stat.S_ISREG(info.st_mode):
            raise ScenarioError(f"{p}: not a regular file ({_file_kind(info.st_mode)}); a scenario or spec must be a file")
        if info.st_size > max_bytes:
            raise ScenarioError(f"{p}: {info.st_size} bytes is larger than the {max_bytes}-byte limit for a scenario or spec file")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:  # a growing file can exceed what fstat said
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except PermissionError:
        raise ScenarioError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise ScenarioError(f"{p}: larger than the {max_bytes}-byte limit for a scenario or spec file")
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


# ---------------------------------------------------------------- parsing


def spec_resolver(store: "Store") -> SpecResolver:
    """`ref -> hash | None` over the store's spec namespace, for `validate_scenario(spec_resolves=...)`."""

    def resolves(ref: str) -> str | None:
        try:
            return store.resolve(ref, kind="spec").hash
        except NotFoundError:
            return None

    return resolves


def parse_scenario(
    data: bytes,
    source: str,
    *,
    catalog: Catalog | None = None,
    store: "Store | None" = None,
) -> Scenario:
    """Bytes -> validated Scenario. ScenarioError for unreadable YAML, ValidationError with every problem.

    `catalog` None means `Catalog.default()`; `store` None means spec references are not checked.
    """
    raw = load_yaml(data, source)
    return _validated(raw, source, catalog=catalog, store=store)


def _validated(raw: Any, source: str, *, catalog: Catalog | None, store: "Store | None") -> Scenario:
    if raw is None:
        raise ValidationError(source, [Problem("", "the file is empty; a scenario needs at least name and gears")])
    problems = validate_scenario(
        raw,
        catalog=catalog if catalog is not None else Catalog.default(),
        spec_resolves=spec_resolver(store) if store is not None else None,
    )
    if problems:
        raise ValidationError(source, problems)
    return build_scenario(raw)


def parse_spec(data: bytes, source: str) -> SpecDocument:
    """Bytes -> validated SpecDocument (its `schema` is a valid JSON Schema)."""
    raw = load_yaml(data, source)
    if raw is None:
        raise ValidationError(source, [Problem("", "the file is empty; a spec needs at least a name")])
    problems = validate_spec(raw)
    if problems:
        raise ValidationError(source, problems)
    return SpecDocument(
        name=raw["name"], version=raw.get("version"), description=raw.get("description"), schema=raw.get("schema")
    )


# ---------------------------------------------------------------- importing


def import_scenario_file(
    store: "Store",
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    tag: str | None = None,
    validate: bool = True,
    catalog: Catalog | None = None,
) -> "ImportResult":
    """Validate a scenario file, then store it under name (default: the file's `name:`) and tag.

    Tag: `tag` > the file's `version:` > the next minor after the name's highest tag.
    `validate=False` (the CLI's --no-validate) skips gear/wire validation, for scenarios meant for
    a mixer with other plugins; the YAML must still be safe, and a `spec:` must still resolve.
    """
    source = str(path)
    data = read_document(path)
    spec: str | None
    if validate:
        scenario = parse_scenario(data, source, catalog=catalog, store=store)
        declared_name, version, spec = scenario.name, scenario.version, scenario.spec
    else:
        raw = load_yaml(data, source)
        declared_name, version = _declared(raw, "name"), _declared(raw, "version")
        raw_spec = raw.get("spec") if isinstance(raw, Mapping) else None
        if raw_spec is not None:
            _require_spec(store, raw_spec, source)
        spec = raw_spec if isinstance(raw_spec, str) else None
    final_name = name if name is not None else declared_name
    if final_name is None:
        raise ScenarioError(f"{source}: the file declares no valid name; give one with --name")
    # The spec blob `spec:` resolves to is pinned with the tag, so gc and untag keep it.
    return _imported(store, "scenario", data, source, name=final_name, tag=tag, version=version, spec=spec)


def import_spec_file(
    store: "Store",
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    tag: str | None = None,
) -> "ImportResult":
    """Validate a spec file, then store it (kind "spec"); name and tag default as for scenarios."""
    source = str(path)
    data = read_document(path)
    spec = parse_spec(data, source)
    return _imported(
        store, "spec", data, source, name=name if name is not None else spec.name, tag=tag, version=spec.version
    )


def _imported(store: "Store", kind: str, data: bytes, source: str, **where: Any) -> "ImportResult":
    """store.import_bytes, with a tag conflict naming the file that was refused."""
    try:
        return store.import_bytes(kind, data, **where)
    except TagConflictError as exc:
        raise TagConflictError(f"{source}: {exc}") from None


def _declared(raw: Any, key: str) -> str | None:
    value = raw.get(key) if isinstance(raw, Mapping) else None
    return value if isinstance(value, str) else None


def _require_spec(store: "Store", spec: object, source: str) -> None:
    problem = spec_problem(spec, spec_resolver(store))
    if problem is not None:
        raise ValidationError(source, [problem])


# ---------------------------------------------------------------- resolving


def resolve_scenario(store: "Store", ref: str, *, catalog: Catalog | None = None) -> LoadedScenario:
    """Any reference -> a validated scenario and the stored bytes it came from.

    A path is read, validated and imported (tag: the file's `version:`, else the next minor), so
    the mixer always runs bytes that are in the store. `name[:tag]` and `sha256:` come from the
    store, whose blobs are re-hashed on read; they are validated again, because the catalog of
    this process (plugins) may differ from the one that imported them.
    """
    from fluxmix.store import PathRef, parse_ref

    if not isinstance(ref, str) or not ref.strip():
        raise BadReferenceError("empty reference: expected a file path, name, name:tag, or sha256:<hex>")
    parsed = parse_ref(ref.strip())
    catalog = catalog if catalog is not None else Catalog.default()
    if isinstance(parsed, PathRef):
        return _load_path(store, parsed.path, catalog)

    try:
        resolved = store.resolve(parsed, kind="scenario")
    except NotFoundError:
        _refuse_file_lookalike(ref.strip())
        raise
    data = store.get_blob(resolved.hash)
    label = f"{resolved.name}:{resolved.tag}" if resolved.name and resolved.tag else short_hash(resolved.hash)
    raw = load_yaml(data, label)
    if resolved.name is None:
        _refuse_spec_blob(store, resolved.hash, raw, label)
    scenario = _validated(raw, label, catalog=catalog, store=store)
    return LoadedScenario(
        scenario=scenario,
        hash=resolved.hash,
        name=resolved.name or scenario.name,
        tag=resolved.tag,
        data=data,
        path=None,
    )


def _refuse_file_lookalike(ref: str) -> None:
    """`-s flow.yaml` with a typo, or a directory, reads as a store name: say what was meant."""
    path = Path(ref)
    if path.is_dir():
        raise ScenarioError(f"{path}: is a directory, not a scenario or spec file")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        raise ScenarioError(f"{path}: no such file (and no scenario of that name in the store)")


def _load_path(store: "Store", path: Path, catalog: Catalog) -> LoadedScenario:
    source = str(path)
    data = read_document(path)
    scenario = parse_scenario(data, source, catalog=catalog, store=store)
    try:
        result = store.import_bytes(
            "scenario", data, name=scenario.name, version=scenario.version, spec=scenario.spec
        )
        tag: str | None = result.tag
        digest = result.hash
    except TagConflictError as exc:
        # The file was edited without bumping its `version:`. Tags are immutable, so the edit
        # cannot take that tag; it still runs (edit-and-reload is the point of a path), stored
        # untagged and addressed by its hash, as the journal records it.
        digest = store.put_blob(data)
        if scenario.spec is not None:
            store.pin_spec(digest, scenario.spec)
        tag = None
        log.warning("%s: %s; running it untagged as %s", source, exc, short_hash(digest))
    return LoadedScenario(scenario=scenario, hash=digest, name=scenario.name, tag=tag, data=data, path=path)


def _refuse_spec_blob(store: "Store", digest: str, raw: Any, label: str) -> None:
    """A `sha256:` reference to a spec blob must say so, not list a dozen scenario problems."""
    refuse_other_kind(store, digest, "scenario", label, raw=raw)


def refuse_other_kind(store: "Store", digest: str, kind: str, label: str, *, raw: Any = None) -> None:
    """Refuse a `sha256:` blob tagged only as the other kind (or, given `raw`, shaped like it).

    Blobs are shared by both kinds, so `scenario validate sha256:<a spec>` would otherwise list
    every scenario key the spec lacks instead of saying what the blob is. Call it only when the
    hash resolved to no `name:tag` of `kind`.
    """
    other = "spec" if kind == "scenario" else "scenario"
    try:
        as_other = store.resolve(f"sha256:{digest}", kind=other)
    except UserError:
        as_other = None
    if as_other is not None and as_other.name is not None:
        raise ScenarioError(f"{label}: this blob is the {other} {as_other.name}:{as_other.tag}, not a {kind}")
    if not isinstance(raw, Mapping):
        return
    if kind == "scenario" and "gears" not in raw and "schema" in raw and not validate_spec(raw):
        raise ScenarioError(f"{label}: this blob is a spec document, not a scenario")
    if kind == "spec" and "gears" in raw and "schema" not in raw:
        raise ScenarioError(f"{label}: this blob is a scenario document, not a spec")


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "LoadedScenario",
    "SpecDocument",
    "import_scenario_file",
    "import_spec_file",
    "parse_scenario",
    "parse_spec",
    "read_document",
    "refuse_other_kind",
    "resolve_scenario",
    "spec_resolver",
]
