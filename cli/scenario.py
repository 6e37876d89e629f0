"""`fluxmix scenario ...` and `fluxmix spec ...`: the same verbs over the two kinds of the store.

Both groups come from one factory, `kind_group(kind)`, so the two kinds can never drift apart.
The few real differences (scenarios are validated against the gear catalog and may skip it
with `--no-validate`; specs are diffed by schema path since they have no gears) are branches
on `kind`, not copies of the commands.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fluxmix.cli._app import FluxmixCommand, FluxmixGroup
from fluxmix.cli.main import App, pass_app
from fluxmix.cli.output import echo_json, echo_table, human_size, human_time, iso_utc, json_option
from fluxmix.refs import short_hash
from fluxmix.errors import BadReferenceError, NotFoundError, ScenarioError

_FILE_SUFFIXES = (".yaml", ".yml", ".json")

if TYPE_CHECKING:
    from fluxmix.store import Entry, ImportResult, Resolved


@dataclass(frozen=True)
class Document:
    """The bytes of a scenario or spec and where they came from (a file or a store reference)."""

    data: bytes
    source: str  # what error messages and diff headers call it
    hash: str  # sha256 of data, for files too: what the store would call it
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
            result = loading.import_scenario_file(
                app.store, file, name=name, tag=tag, validate=validate, catalog=app.catalog if validate else None
            )
        else:
            result = loading.import_spec_file(app.store, file, name=name, tag=tag)
        if as_json:
            echo_json(_import_json(result))
            return
        if result.created:
            click.echo(f"imported {result.ref} sha256:{result.hash} ({result.size} bytes)")
        else:
            click.echo(
                f"unchanged {result.ref} sha256:{result.hash} (already imported {human_time(result.imported_at)})"
            )

    import_help = (
        "Import FILE into the store as NAME:TAG.\n\nThe bytes are stored exactly as they are, under their "
        "SHA-256. NAME defaults to the file's `name:`, TAG to its `version:`, else the next minor version "
        "after the highest tag (v0.1.0 for the first). Tags are immutable: re-importing identical bytes "
        "is a no-op; other bytes under an existing tag are refused."
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
        json_option(),
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
    @json_option()
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
    @json_option()
    @pass_app
    def tags_cmd(app: App, name: str, as_json: bool) -> None:
        """List the tags of NAME in SemVer order, highest first, marking the one `latest` resolves to."""
        from fluxmix.store import latest_tag

        entries = app.store.entries(kind, name)
        if not entries:
            raise NotFoundError(f"no {kind} named {name!r} in the store")
        latest = latest_tag([e.tag for e in entries])  # what `NAME:latest` resolves to, without a second query
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
        # sys.stdout's binary buffer (what click.get_binary_stream returned; deprecated in click 8.5)
        sys.stdout.flush()
        out = sys.stdout.buffer
        out.write(data)
        out.flush()

    # ---------------------------------------------------------------- resolve
    @group.command("resolve", cls=FluxmixCommand, short_help="Print the sha256 a reference names.")
    @click.argument("ref")
    @json_option()
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
    @json_option()
    @pass_app
    def validate_cmd(app: App, target: str, as_json: bool) -> None:
        """Run pre-flight validation on a file or a stored REF and report every problem at once.

        Prints `ok` and a summary, or one line per problem on stderr (`FILE: location: reason`)
        and exits with status 2.
        """
        from fluxmix.errors import ValidationError

        source = target
        try:
            document = load_document(app, kind, target)
            source = document.source
            parsed = _parse(app, kind, document)
        except ScenarioError as error:  # unreadable, not YAML, or invalid: with --json, still a verdict
            if as_json:
                problems = error.problems if isinstance(error, ValidationError) else [_unprefixed(error, source)]
                echo_json({"ok": False, "source": source, "problems": [_problem_json(p) for p in problems]})
            raise
        summary = _summary(kind, parsed)
        text = summary.pop("text")
        if as_json:
            echo_json({"ok": True, "source": source, **summary})
            return
        click.echo("ok")
        click.echo(text)

    # ---------------------------------------------------------------- test
    if kind == "scenario":

        @group.command("test", cls=FluxmixCommand, short_help="Run a scenario's tests: offline, in-process.")
        @click.argument("target", metavar="FILE|REF")
        @click.option("--tests", "tests_file", type=click.Path(dir_okay=False, path_type=Path),
                      help="Run the tests in this file (a mapping with a tests: list) instead of the scenario's own.")
        @click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path),
                      help="Also write a JUnit XML report to this file (for CI systems).")
        @click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
                      help="Seconds one test's gears may take to finish.")
        @json_option()
        @pass_app
        def test_cmd(app: App, target: str, tests_file: Path | None, junit_file: Path | None,
                     timeout: float, as_json: bool) -> None:
            """Run the tests of a scenario file or stored REF and report each as PASS or FAIL.

            Validation runs first (the tests included). The gears run in-process on memory wires
            with their real config; sources do not run, sinks are replaced by captures. Exits 0
            when every test passes, 1 when one fails, 2 for invalid input.
            """
            _test(app, target, tests_file, junit_file, timeout, as_json)

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
    @json_option()
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

    # ---------------------------------------------------------------- graph
    if kind == "scenario":

        @group.command("graph", cls=FluxmixCommand, short_help="Draw a scenario: Mermaid, DOT or SVG.")
        @click.argument("target", metavar="REF|FILE")
        @click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "svg"]), default="mermaid",
                      show_default=True, help="svg needs Graphviz's `dot` on PATH.")
        @pass_app
        def graph_cmd(app: App, target: str, fmt: str) -> None:
            """Print the scenario's gears (nodes) and wires (edges: ports and transport; memory
            dashed, standard solid). The scenario is validated first, so only a runnable
            scenario is drawn."""
            from fluxmix import graph

            parsed = _parse(app, kind, load_document(app, kind, target))
            if fmt == "svg":
                click.echo(graph.to_svg(parsed).decode("utf-8"), nl=False)
            elif fmt == "dot":
                click.echo(graph.to_dot(parsed), nl=False)
            else:
                click.echo(graph.to_mermaid(parsed), nl=False)

    # ---------------------------------------------------------------- untag
    untag_help = "Remove the tag NAME:TAG. The bytes stay in the store until `fluxmix store gc` finds them unused."
    if kind == "spec":
        untag_help += (
            "\n\nA spec tag that stored scenarios resolve their `spec:` through is refused, naming them; "
            "--force untags it anyway and lists the scenarios it breaks (their pinned spec blob is kept)."
        )

    @group.command("untag", cls=FluxmixCommand, help=untag_help, short_help="Remove a tag (the blob stays until gc).")
    @click.argument("ref", metavar="NAME:TAG")
    @click.option("--force", is_flag=True, hidden=kind != "spec", help="Untag even if stored scenarios resolve through it.")
    @json_option()
    @pass_app
    def untag_cmd(app: App, ref: str, force: bool, as_json: bool) -> None:
        from fluxmix.store import NameRef, parse_ref

        parsed = parse_ref(ref) if ":" in ref else None
        if not isinstance(parsed, NameRef) or parsed.tag is None:
            raise BadReferenceError(f"untag needs NAME:TAG with an explicit tag (not latest), got {ref!r}")
        result = app.store.untag(kind, parsed.name, parsed.tag, force=force)
        entry = result.entry
        if as_json:
            echo_json(dict(_entry_json(entry), breaks=list(result.breaks)) if kind == "spec" else _entry_json(entry))
            return
        click.echo(f"untagged {entry.name}:{entry.tag} (was sha256:{entry.hash})")
        if result.breaks:
            click.echo(
                f"warning: {len(result.breaks)} stored scenario{'s' if len(result.breaks) != 1 else ''} "
                f"no longer resolve{'s' if len(result.breaks) == 1 else ''} {entry.name}:{entry.tag} "
                "and will fail validation (the spec's blob is kept while they are):",
                err=True,
            )
            for broken in result.breaks:
                click.echo(f"  {broken}", err=True)

    return group


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _test(app: App, target: str, tests_file: Path | None, junit_file: Path | None, timeout: float,
          as_json: bool) -> None:
    """`scenario test`: validate, load the tests, run them, report; exit 1 when one fails."""
    import logging

    from fluxmix.checks import report
    from fluxmix.checks.runner import run_tests_sync
    from fluxmix.checks.sections import build_tests, check_tests_file, scenario_ports
    from fluxmix.errors import Problem, ValidationError
    from fluxmix.scenario_yaml import load_yaml

    source = target
    try:
        document = load_document(app, "scenario", target)
        source = document.source
        scenario = _parse(app, "scenario", document)
        raw_tests: Any = scenario.tests
        if tests_file is not None:
            from fluxmix import loading

            source = str(tests_file)
            raw = load_yaml(loading.read_document(tests_file), source)
            wires = [(w.source, w.target) for w in scenario.wires]
            problems = check_tests_file(raw, scenario_ports(scenario, app.catalog), wires)
            if problems:
                raise ValidationError(source, problems)
            raw_tests = raw["tests"]
            source = document.source
        if not raw_tests:
            where = str(tests_file) if tests_file is not None else document.source
            raise ValidationError(where, [Problem("tests", "no tests to run: add a tests: section (see README) or pass --tests FILE")])
    except ScenarioError as error:
        if as_json:
            problems = error.problems if isinstance(error, ValidationError) else [_unprefixed(error, source)]
            echo_json({"ok": False, "source": source, "problems": [_problem_json(p) for p in problems]})
        raise
    if junit_file is not None and not (junit_file.parent if str(junit_file.parent) else Path(".")).is_dir():
        from fluxmix.errors import UserError

        raise UserError(f"--junit {junit_file}: the directory {junit_file.parent} does not exist")
    tests = build_tests(raw_tests)
    quiet = logging.getLogger("fluxmix")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # gear failures are part of the report, not log noise on stderr
    try:
        results = run_tests_sync(scenario, tests, catalog=app.catalog, scenario_hash=document.hash, timeout=timeout)
    finally:
        quiet.setLevel(level)
    if junit_file is not None:
        report.write_atomically(junit_file, report.junit_xml(scenario.name, results))
    if as_json:
        echo_json(report.as_json(document.source, scenario.name, results))
    else:
        click.echo(report.render_text(document.source, results))
    if not all(r.passed for r in results):
        raise click.exceptions.Exit(1)


def _resolve(app: App, kind: str, ref: str) -> Resolved:
    """A store reference only: the store refuses a path with a message that says what to do."""
    from fluxmix.loading import refuse_other_kind

    resolved = app.store.resolve(ref, kind=kind)
    if resolved.name is None:  # a bare sha256: may name a blob of the other kind
        refuse_other_kind(app.store, resolved.hash, kind, f"sha256:{resolved.hash}")
    return resolved


def load_document(app: App, kind: str, target: str) -> Document:
    """The bytes behind a file path or a store reference (re-hashed when read from the store)."""
    from fluxmix import loading
    from fluxmix.store import PathRef, parse_ref

    parsed = parse_ref(target)
    if isinstance(parsed, PathRef):
        data = loading.read_document(parsed.path)
        return Document(data=data, source=str(parsed.path), hash=hashlib.sha256(data).hexdigest())
    try:
        resolved = app.store.resolve(parsed, kind=kind)
    except NotFoundError:
        # `validate flow.yaml` with a typo reads as the store name "flow.yaml": say what was tried.
        if Path(target).is_dir():
            raise ScenarioError(f"{target}: is a directory, not a {kind} file") from None
        if Path(target).suffix.lower() in _FILE_SUFFIXES:
            raise ScenarioError(f"{target}: no such file (and no {kind} of that name in the store)") from None
        raise
    label = resolved.ref
    data = app.store.get_blob(resolved.hash)
    if resolved.name is None:  # a bare sha256: may name a blob of the other kind
        _refuse_other_kind(app, kind, resolved.hash, data, label)
    return Document(
        data=data,
        source=label,
        hash=resolved.hash,
        name=resolved.name,
        tag=resolved.tag,
    )


def _refuse_other_kind(app: App, kind: str, digest: str, data: bytes, label: str) -> None:
    """Say "this is a spec" (or a scenario) instead of listing every key the other kind lacks."""
    from fluxmix.loading import refuse_other_kind
    from fluxmix.scenario_yaml import load_yaml

    try:
        raw = load_yaml(data, label)
    except ScenarioError:  # not YAML at all: validation reports that itself
        raw = None
    refuse_other_kind(app.store, digest, kind, label, raw=raw)


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
            + (f", {_count(len(parsed.tests), 'test')}" if parsed.tests else "")
            + (f", {_count(len(parsed.expect), 'expectation')}" if parsed.expect else "")
        )
        return {
            "name": parsed.name,
            "version": parsed.version,
            "gears": len(parsed.gears),
            "wires": len(parsed.wires),
            "transports": transports,
            "tests": len(parsed.tests),
            "expectations": len(parsed.expect),
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
    """Print what changed from `before` to `after`; return whether their bytes differ."""
    from fluxmix.diff import text_diff

    changes = _structural_diff(app, kind, before, after)
    differ = before.data != after.data
    unified = text_diff(before.data, after.data, before.source, after.source) if text else ""
    if as_json:
        value: dict[str, Any] = {
            "kind": kind,
            "old": _doc_json(before),
            "new": _doc_json(after),
            "identical": not differ,
            "changes": changes.as_dict(),
        }
        if text:
            value["text"] = unified
        echo_json(value)
        return differ
    if not differ:
        click.echo(f"no differences: {before.source} and {after.source} are the same bytes (sha256:{before.hash})")
        return False
    click.echo(f"{kind} {before.source} -> {after.source}")
    click.echo(changes.render())
    if text:
        click.echo()
        click.echo(unified, nl=False)
    return differ


def _structural_diff(app: App, kind: str, before: Document, after: Document) -> Any:
    """Scenarios: fluxmix.diff's gear/wire diff; specs: their fields and schema, path by path.

    Spec references need not resolve to compare two scenarios, so the store is not consulted.
    """
    from fluxmix import loading

    if kind == "scenario":
        from fluxmix.diff import diff_scenarios

        return diff_scenarios(
            loading.parse_scenario(before.data, before.source, catalog=app.catalog),
            loading.parse_scenario(after.data, after.source, catalog=app.catalog),
        )
    return SpecDiff.between(loading.parse_spec(before.data, before.source), loading.parse_spec(after.data, after.source))


@dataclass(frozen=True)
class SpecDiff:
    """What changed between two specs: top-level fields, and the schema one JSON path at a time."""

    fields: dict[str, tuple[Any, Any]]
    added: list[tuple[str, Any]]
    removed: list[tuple[str, Any]]
    changed: list[tuple[str, Any, Any]]

    @classmethod
    def between(cls, old: Any, new: Any) -> SpecDiff:
        fields = {
            key: (getattr(old, key), getattr(new, key))
            for key in ("name", "version", "description")
            if getattr(old, key) != getattr(new, key)
        }
        added: list[tuple[str, Any]] = []
        removed: list[tuple[str, Any]] = []
        changed: list[tuple[str, Any, Any]] = []
        _walk("schema", old.schema, new.schema, added, removed, changed)
        return cls(fields, added, removed, changed)

    @property
    def empty(self) -> bool:
        return not (self.fields or self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "empty": self.empty,
            "fields": {k: {"old": old, "new": new} for k, (old, new) in self.fields.items()},
            "schema": {
                "added": [{"path": p, "new": v} for p, v in self.added],
                "removed": [{"path": p, "old": v} for p, v in self.removed],
                "changed": [{"path": p, "old": o, "new": n} for p, o, n in self.changed],
            },
        }

    def render(self) -> str:
        if self.empty:
            return "no changes to the spec's fields or schema"
        lines = [f"~ {key}: {_show(old)} -> {_show(new)}" for key, (old, new) in self.fields.items()]
        lines += [f"+ {path}: {_show(value)}" for path, value in self.added]
        lines += [f"- {path}: {_show(value)}" for path, value in self.removed]
        lines += [f"~ {path}: {_show(old)} -> {_show(new)}" for path, old, new in self.changed]
        return "\n".join(lines)


def _walk(
    path: str,
    old: Any,
    new: Any,
    added: list[tuple[str, Any]],
    removed: list[tuple[str, Any]],
    changed: list[tuple[str, Any, Any]],
) -> None:
    """Recurse through mappings (a list or scalar that differs is reported whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys(), key=str):
            child = f"{path}.{key}" if _plain_key(key) else f"{path}[{json.dumps(str(key))}]"
            if key not in new:
                removed.append((child, old[key]))
            elif key not in old:
                added.append((child, new[key]))
            else:
                _walk(child, old[key], new[key], added, removed, changed)
    elif old != new or type(old) is not type(new):
        if old is None:
            added.append((path, new))
        elif new is None:
            removed.append((path, old))
        else:
            changed.append((path, old, new))


def _plain_key(key: Any) -> bool:
    return isinstance(key, str) and key.replace("_", "a").replace("-", "a").isalnum()


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _unprefixed(error: Exception, source: str) -> Any:
    """A whole-file error as a Problem without location; its message already names the file."""
    from fluxmix.errors import Problem

    message = str(error)
    prefix = f"{source}: "
    return Problem("", message[len(prefix):] if message.startswith(prefix) else message)


def _problem_json(problem: Any) -> dict[str, str]:
    return {"location": problem.location, "reason": problem.reason}


scenario = kind_group("scenario")
spec = kind_group("spec")
