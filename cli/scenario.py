"""`fluxmix scenario ...` and `fluxmix spec ...`: the same verbs over the two kinds of the store.

Both groups come from one factory, `kind_group(kind)`, so the two kinds can never drift apart;
the differences (how a file is parsed and validated, `--no-validate`, what the summary says) are
kept in a small `_Kind` description instead of in copies of the commands.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fluxmix.cli._app import FluxmixCommand, FluxmixGroup
from fluxmix.cli.main import (
    App,
    echo_json,
    echo_table,
    human_size,
    human_time,
    iso_utc,
    pass_app,
    short_hash,
)
from fluxmix.errors import BadReferenceError, NotFoundError

if TYPE_CHECKING:
    from fluxmix.store import Entry, ImportResult, Resolved


@dataclass(frozen=True)
class Document:
    """The bytes of a scenario or spec and where they came from (a file or a store reference)."""

    data: bytes
    source: str  # what error messages and diff headers call it
    hash: str | None = None  # known when it came from the store
    name: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class _Kind:
    name: str  # "scenario" | "spec"
    plural: str
    summary: str  # one line for --help


_KINDS = {
    "scenario": _Kind("scenario", "scenarios", "Import, inspect, validate and compare scenarios."),
    "spec": _Kind("spec", "specs", "Import, inspect, validate and compare specs (message schemas)."),
}


def kind_group(kind: str) -> click.Group:
    """Build the command group for one kind of the store."""
    meta = _KINDS[kind]

    @click.group(name=kind, cls=FluxmixGroup, help=meta.summary)
    def group() -> None:
        pass

    # ---------------------------------------------------------------- import
    def import_cmd(app: App, file: Path, name: str | None, tag: str | None, as_json: bool, validate: bool = True) -> None:
        from fluxmix import loading

        if kind == "scenario":
            result = loading.import_scenario_file(app.store, file, name=name, tag=tag, validate=validate)
        else:
            result = loading.import_spec_file(app.store, file, name=name, tag=tag)
        if as_json:
            echo_json(_import_json(result))
            return
        ref = f"{result.name}:{result.tag}"
        if result.created:
            click.echo(f"imported {ref} sha256:{result.hash} ({result.size} bytes)")
        else:
            click.echo(
                f"unchanged {ref} sha256:{result.hash} (already imported {human_time(result.imported_at)})"
            )

    import_help = (
        f"Import FILE into the store as NAME:TAG.\n\nThe bytes are stored exactly as they are, under their "
        f"SHA-256. NAME defaults to the file's `name:`, TAG to its `version:`, else the next minor version "
        f"after the highest tag (v0.1.0 for the first). Tags are immutable: re-importing identical bytes "
        f"is a no-op; other bytes under an existing tag are refused."
    )
    command: Any = pass_app(import_cmd)
    if kind == "scenario":
        import_help += " The scenario is validated first unless --no-validate is given."
        command = click.option(
            "--validate/--no-validate",
            default=True,
            help="Validate before importing (default); --no-validate is an explicit escape hatch.",
        )(command)
    for decorate in (
        _json_option(),
        click.option("--tag", "-t", metavar="TAG", help="SemVer tag, e.g. 1.2.0 or v1.2.0."),
        click.option("--name", "-n", metavar="NAME", help="Store under this name instead of the file's `name:`."),
        click.argument("file", type=click.Path(path_type=Path)),
    ):
        command = decorate(command)
    group.command("import", cls=FluxmixCommand, help=import_help, short_help=f"Import a {kind} file into the store.")(
        command
    )

    # ---------------------------------------------------------------- list
    @group.command("list", cls=FluxmixCommand, short_help=f"List stored {meta.plural} and their tags.")
    @click.argument("name", required=False)
    @_json_option()
    @pass_app
    def list_cmd(app: App, name: str | None, as_json: bool) -> None:
        """List every NAME:TAG (of one NAME when given): tag, short hash, size, import time."""
        entries = app.store.entries(kind, name)
        if as_json:
            echo_json([_entry_json(e) for e in entries])
            return
        if not entries:
            what = f"{kind} named {name!r}" if name else meta.plural
            click.echo(f"no {what} in the store at {app.store.home}", err=True)
            return
        echo_table(
            ["NAME", "TAG", "HASH", "SIZE", "IMPORTED"],
            [(e.name, e.tag, short_hash(e.hash), human_size(e.size), human_time(e.imported_at)) for e in entries],
        )

    # ---------------------------------------------------------------- tags
    @group.command("tags", cls=FluxmixCommand, short_help=f"List the tags of one {kind}, highest first.")
    @click.argument("name")
    @_json_option()
    @pass_app
    def tags_cmd(app: App, name: str, as_json: bool) -> None:
        """List the tags of NAME in SemVer order, highest first, marking the one `latest` resolves to."""
        entries = app.store.entries(kind, name)
        if not entries:
            raise NotFoundError(f"no {kind} named {name!r} in the store")
        latest = app.store.resolve(name, kind=kind).tag
        if as_json:
            echo_json(
                {
                    "kind": kind,
                    "name": name,
                    "latest": latest,
                    "tags": [dict(_entry_json(e), latest=e.tag == latest) for e in entries],
                }
            )
            return
        echo_table(
            ["TAG", "HASH", "SIZE", "IMPORTED", ""],
            [
                (e.tag, short_hash(e.hash), human_size(e.size), human_time(e.imported_at), "latest" if e.tag == latest else "")
                for e in entries
            ],
        )

    # ---------------------------------------------------------------- show
    @group.command("show", cls=FluxmixCommand, short_help=f"Print the exact stored bytes of a {kind}.")
    @click.argument("ref")
    @pass_app
    def show_cmd(app: App, ref: str) -> None:
        """Write the exact stored bytes of REF (NAME[:TAG] or sha256:HEX) to stdout.

        The blob is re-hashed on the way out, so what you see is what the hash names.
        """
        resolved = _resolve(app, kind, ref)
        data = app.store.get_blob(resolved.hash)
        out = click.get_binary_stream("stdout")
        out.write(data)
        out.flush()

    # ---------------------------------------------------------------- resolve
    @group.command("resolve", cls=FluxmixCommand, short_help="Print the sha256 a reference names.")
    @click.argument("ref")
    @_json_option()
    @pass_app
    def resolve_cmd(app: App, ref: str, as_json: bool) -> None:
        """Print `sha256:<hex>` for REF (NAME, NAME:TAG, NAME:latest or a sha256 prefix)."""
        resolved = _resolve(app, kind, ref)
        if as_json:
            echo_json({"kind": resolved.kind, "name": resolved.name, "tag": resolved.tag, "hash": resolved.hash})
        else:
            click.echo(f"sha256:{resolved.hash}")

    # ---------------------------------------------------------------- validate
    @group.command("validate", cls=FluxmixCommand, short_help=f"Validate a {kind} file or stored reference.")
    @click.argument("target", metavar="FILE|REF")
    @_json_option()
    @pass_app
    def validate_cmd(app: App, target: str, as_json: bool) -> None:
        """Run pre-flight validation on a file or a stored REF and report every problem at once.

        Prints `ok` and a summary, or one line per problem on stderr (`FILE: location: reason`)
        and exits with status 2.
        """
        from fluxmix.errors import ValidationError

        document = load_document(app, kind, target)
        try:
            parsed = _parse(app, kind, document)
        except ValidationError as error:
            if as_json:
                echo_json({"ok": False, "source": document.source, "problems": [_problem_json(p) for p in error.problems]})
            raise
        summary = _summary(kind, parsed)
        if as_json:
            echo_json({"ok": True, "source": document.source, **summary})
            return
        click.echo("ok")
        click.echo(summary["text"])

    # ---------------------------------------------------------------- diff
    @group.command("diff", cls=FluxmixCommand, short_help=f"Compare two {meta.plural} (refs or files).")
    @click.argument("old", metavar="OLD")
    @click.argument("new", metavar="NEW")
    @click.option("--text", is_flag=True, help="Also show the unified diff of the file text.")
    @click.option(
        "--exit-code",
        is_flag=True,
        help="Exit with status 1 when they differ, 0 when they do not (as `git diff --exit-code`).",
    )
    @_json_option()
    @pass_app
    def diff_cmd(app: App, old: str, new: str, text: bool, exit_code: bool, as_json: bool) -> None:
        """Show what changed from OLD to NEW: added, removed and changed gears and wires.

        OLD and NEW are store references or file paths. Exits 0 whether or not they differ,
        unless --exit-code is given.
        """
        before = load_document(app, kind, old)
        after = load_document(app, kind, new)
        changed = _diff(app, kind, before, after, text=text, as_json=as_json)
        if exit_code and changed:
            raise click.exceptions.Exit(1)

    # ---------------------------------------------------------------- untag
    @group.command("untag", cls=FluxmixCommand, short_help="Remove a tag (the blob stays until gc).")
    @click.argument("ref", metavar="NAME:TAG")
    @_json_option()
    @pass_app
    def untag_cmd(app: App, ref: str, as_json: bool) -> None:
        """Remove the tag NAME:TAG. The bytes stay in the store until `fluxmix store gc` finds them unused."""
        from fluxmix.store import NameRef, parse_ref

        parsed = parse_ref(ref) if ":" in ref else None
        if not isinstance(parsed, NameRef) or parsed.tag is None:
            raise BadReferenceError(f"untag needs NAME:TAG with an explicit tag (not latest), got {ref!r}")
        entry = app.store.untag(kind, parsed.name, parsed.tag)
        if as_json:
            echo_json(_entry_json(entry))
        else:
            click.echo(f"untagged {entry.name}:{entry.tag} (was sha256:{entry.hash})")

    return group


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _json_option() -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def _resolve(app: App, kind: str, ref: str) -> Resolved:
    """A store reference only: the store refuses a path with a message that says what to do."""
    return app.store.resolve(ref, kind=kind)


def load_document(app: App, kind: str, target: str) -> Document:
    """The bytes behind a file path or a store reference (re-hashed when read from the store)."""
    from fluxmix import loading
    from fluxmix.store import PathRef, parse_ref

    parsed = parse_ref(target)
    if isinstance(parsed, PathRef):
        return Document(data=loading.read_document(parsed.path), source=str(parsed.path))
    resolved = app.store.resolve(parsed, kind=kind)
    label = f"{resolved.name}:{resolved.tag}" if resolved.name else f"sha256:{resolved.hash}"
    return Document(
        data=app.store.get_blob(resolved.hash),
        source=label,
        hash=resolved.hash,
        name=resolved.name,
        tag=resolved.tag,
    )


def _parse(app: App, kind: str, document: Document) -> Any:
    """Parse and validate; raises ScenarioError / ValidationError carrying every problem."""
    from fluxmix import loading

    if kind == "scenario":
        return loading.parse_scenario(document.data, document.source, catalog=app.catalog, store=app.store)
    return loading.parse_spec(document.data, document.source)


def _summary(kind: str, parsed: Any) -> dict[str, Any]:
    if kind == "scenario":
        transports = sorted(parsed.transports)
        text = (
            f"{parsed.name}: {_count(len(parsed.gears), 'gear')}, {_count(len(parsed.wires), 'wire')}"
            + (f", transports: {', '.join(transports)}" if transports else "")
        )
        return {
            "name": parsed.name,
            "version": parsed.version,
            "gears": len(parsed.gears),
            "wires": len(parsed.wires),
            "transports": transports,
            "text": text,
        }
    name = getattr(parsed, "name", None)
    has_schema = getattr(parsed, "schema", None) is not None
    return {
        "name": name,
        "version": getattr(parsed, "version", None),
        "schema": has_schema,
        "text": f"{name}: {'with' if has_schema else 'no'} message schema",
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _diff(app: App, kind: str, before: Document, after: Document, *, text: bool, as_json: bool) -> bool:
    """Print the difference; return whether there is one."""
    text_lines = list(
        difflib.unified_diff(
            before.data.decode("utf-8", errors="replace").splitlines(keepends=True),
            after.data.decode("utf-8", errors="replace").splitlines(keepends=True),
            fromfile=before.source,
            tofile=after.source,
        )
    )
    structural = _structural_diff(app, kind, before, after)
    identical_bytes = before.data == after.data
    changed = not identical_bytes
    if as_json:
        value: dict[str, Any] = {
            "kind": kind,
            "old": _doc_json(before),
            "new": _doc_json(after),
            "identical": identical_bytes,
            "changes": structural,
        }
        if text:
            value["text"] = "".join(text_lines)
        echo_json(value)
        return changed
    if identical_bytes:
        click.echo(f"no differences: {before.source} and {after.source} are the same bytes")
        return False
    for line in _structural_lines(structural):
        click.echo(line)
    if text:
        for line in text_lines:
            click.echo(line, nl=not line.endswith("\n"))
    return changed


def _structural_diff(app: App, kind: str, before: Document, after: Document) -> dict[str, Any]:
    from fluxmix import diff as diffing

    return diffing.diff_documents(kind, before.data, before.source, after.data, after.source).as_dict()


def _structural_lines(changes: dict[str, Any]) -> list[str]:
    return [str(changes)]


def _import_json(result: ImportResult) -> dict[str, Any]:
    return {
        "kind": result.kind,
        "name": result.name,
        "tag": result.tag,
        "hash": result.hash,
        "size": result.size,
        "created": result.created,
        "imported_at": iso_utc(result.imported_at),
    }


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "kind": entry.kind,
        "name": entry.name,
        "tag": entry.tag,
        "hash": entry.hash,
        "size": entry.size,
        "imported_at": iso_utc(entry.imported_at),
    }


def _doc_json(document: Document) -> dict[str, Any]:
    return {"source": document.source, "hash": document.hash, "name": document.name, "tag": document.tag}


def _problem_json(problem: Any) -> dict[str, str]:
    return {"location": problem.location, "reason": problem.reason}


scenario = kind_group("scenario")
spec = kind_group("spec")
