"""The store keeps what it promised: no-op re-imports, spec pins that gc and untag respect, read-only stores.

Every test drives the real `fluxmix` command (click's runner, or the console script as a process
where file permissions matter) against a real store directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fluxmix.cli.main import root
from fluxmix.store import open_store

FLUXMIX = Path(sys.executable).parent / "fluxmix"

HELLO = """\
name: hello
gears:
  - name: source
    type: generate
    config: {count: 3}
  - name: sink
    type: log
wires:
  - {from: source.out, to: sink.in, transport: memory}
"""

SPEC = """\
name: visa
version: 1.0.0
schema:
  type: object
  properties:
    amount: {type: number}
"""

SPEC_V2 = SPEC.replace("1.0.0", "1.1.0")

PAYMENTS = """\
name: payments
version: 1.0.0
spec: {spec}
gears:
  - name: source
    type: generate
    config: {{count: 3}}
  - name: sink
    type: log
wires:
  - {{from: source.out, to: sink.in, transport: memory}}
"""

Invoke = Callable[..., Result]


@pytest.fixture
def cli(fluxmix_home: Path) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(root, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    def writer(name: str, text: str) -> Path:
        path = tmp_path / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return writer


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def error_lines(result: Result, code: int = 2) -> list[str]:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr
    assert "Traceback" not in result.output
    return lines


def imported(cli: Invoke, path: Path, *args: str) -> dict[str, object]:
    return json.loads(ok(cli("scenario", "import", str(path), "--json", *args)).stdout)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- re-importing the same bytes -----------------------------------------------------------------


def test_reimporting_tagged_bytes_reports_their_tag_instead_of_a_new_one(cli: Invoke, write: Callable[[str, str], Path]) -> None:
    """hello.yaml (no version) -> v0.1.0; an edit -> v0.2.0; the original again was v0.3.0 with v0.1.0's hash."""
    first = write("hello.yaml", HELLO)
    edited = write("hello-edited.yaml", HELLO.replace("count: 3", "count: 4"))
    assert imported(cli, first)["tag"] == "v0.1.0"
    assert imported(cli, edited)["tag"] == "v0.2.0"

    again = ok(cli("scenario", "import", str(first)))
    assert again.stdout.startswith(f"unchanged hello:v0.1.0 sha256:{sha(HELLO)} ")
    assert [e["tag"] for e in json.loads(ok(cli("scenario", "list", "--json")).stdout)] == ["v0.2.0", "v0.1.0"]

    # An explicit tag may still give the same bytes a second name, as registries allow.
    second = imported(cli, first, "--tag", "1.0.0")
    assert (second["tag"], second["created"], second["hash"]) == ("v1.0.0", True, sha(HELLO))
    # ...and without --tag, the highest tag holding the bytes is the answer.
    assert imported(cli, first)["tag"] == "v1.0.0"


def test_reimport_ignores_a_declared_version_the_bytes_were_not_imported_under(
    cli: Invoke, write: Callable[[str, str], Path]
) -> None:
    text = HELLO.replace("name: hello\n", "name: hello\nversion: 1.0.0\n")
    path = write("hello.yaml", text)
    assert imported(cli, path, "--tag", "2.0.0")["tag"] == "v2.0.0"
    result = imported(cli, path)
    assert (result["tag"], result["created"]) == ("v2.0.0", False)
    assert [e["tag"] for e in json.loads(ok(cli("scenario", "list", "--json")).stdout)] == ["v2.0.0"]


def test_a_bare_hex_prefix_is_a_name_and_the_miss_says_how_to_write_a_hash(
    cli: Invoke, write: Callable[[str, str], Path]
) -> None:
    digest = imported(cli, write("hello.yaml", HELLO))["hash"]
    assert isinstance(digest, str)
    [line] = error_lines(cli("scenario", "resolve", digest[:12]))
    assert line == f"error: no scenario named {digest[:12]!r} in the store; to name a blob by its hash, write sha256:{digest[:12]}"
    assert ok(cli("scenario", "resolve", f"sha256:{digest[:12]}")).stdout == f"sha256:{digest}\n"
    help_text = " ".join(ok(cli("--help")).stdout.split())
    assert "after `sha256:`" in help_text and "bare hex is read as a name" in help_text


# -- spec pins -------------------------------------------------------------------------------------


@pytest.fixture
def with_spec(cli: Invoke, write: Callable[[str, str], Path]) -> str:
    """The spec visa:v1.0.0 in the store; returns its hash."""
    result = json.loads(ok(cli("spec", "import", str(write("visa.yaml", SPEC)), "--json")).stdout)
    return str(result["hash"])


def test_untagging_a_spec_a_stored_scenario_resolves_through_is_refused(
    cli: Invoke, write: Callable[[str, str], Path], with_spec: str, fluxmix_home: Path
) -> None:
    imported(cli, write("payments.yaml", PAYMENTS.format(spec="visa:v1.0.0")))
    index_before = (fluxmix_home / "index.sqlite3").read_bytes()

    [line] = error_lines(cli("spec", "untag", "visa:v1.0.0"))
    assert line == (
        "error: spec visa:v1.0.0 is needed by 1 stored scenario whose spec: would no longer resolve: "
        "payments:v1.0.0 (spec: visa:v1.0.0); use --force to untag it anyway"
    )
    assert ok(cli("spec", "resolve", "visa:v1.0.0")).stdout == f"sha256:{with_spec}\n"
    assert (fluxmix_home / "index.sqlite3").read_bytes() == index_before

    forced = ok(cli("spec", "untag", "visa:v1.0.0", "--force"))
    assert forced.stdout == f"untagged visa:v1.0.0 (was sha256:{with_spec})\n"
    assert "1 stored scenario no longer resolves visa:v1.0.0" in forced.stderr
    assert "  payments:v1.0.0 (spec: visa:v1.0.0)" in forced.stderr.splitlines()

    # The pinned spec blob outlives its tag while the scenario is stored...
    ok(cli("store", "gc", "--grace", "0"))
    assert open_store().has_blob(with_spec)
    # ...and goes with it.
    ok(cli("scenario", "untag", "payments:v1.0.0"))
    gone = json.loads(ok(cli("store", "gc", "--grace", "0", "--json")).stdout)
    assert with_spec in gone["removed"] and len(gone["removed"]) == 2
    assert not open_store().has_blob(with_spec)


def test_gc_keeps_the_spec_blob_a_scenario_names_by_hash(
    cli: Invoke, write: Callable[[str, str], Path], with_spec: str
) -> None:
    """Untagging is allowed (sha256: still resolves), but gc deleted the blob and broke the scenario."""
    imported(cli, write("payments.yaml", PAYMENTS.format(spec=f"sha256:{with_spec}")))
    untagged = json.loads(ok(cli("spec", "untag", "visa:v1.0.0", "--json")).stdout)
    assert untagged["breaks"] == []
    dry = json.loads(ok(cli("store", "gc", "--grace", "0", "--dry-run", "--json")).stdout)
    assert dry["removed"] == []
    ok(cli("store", "gc", "--grace", "0"))
    assert open_store().has_blob(with_spec)
    assert ok(cli("scenario", "validate", "payments")).stdout.startswith("ok\n")
    verified = json.loads(ok(cli("store", "verify", "--json")).stdout)
    assert verified["orphans"] == 0


def test_a_latest_spec_reference_only_blocks_the_untag_of_its_last_tag(
    cli: Invoke, write: Callable[[str, str], Path], with_spec: str
) -> None:
    newer = json.loads(ok(cli("spec", "import", str(write("visa2.yaml", SPEC_V2)), "--json")).stdout)
    imported(cli, write("payments.yaml", PAYMENTS.format(spec="visa")))  # pins visa:v1.1.0
    assert open_store().spec_pin(sha(PAYMENTS.format(spec="visa"))).spec_hash == newer["hash"]  # type: ignore[union-attr]
    ok(cli("spec", "untag", "visa:v1.1.0"))  # `visa` still resolves (to v1.0.0)
    ok(cli("store", "gc", "--grace", "0"))
    assert open_store().has_blob(str(newer["hash"]))  # still pinned: the scenario was stored with it
    [line] = error_lines(cli("spec", "untag", "visa:v1.0.0"))
    assert "payments:v1.0.0 (spec: visa)" in line  # the last tag: `visa` would resolve to nothing


def test_an_import_whose_spec_is_gone_writes_nothing(cli: Invoke, write: Callable[[str, str], Path], fluxmix_home: Path) -> None:
    path = write("payments.yaml", PAYMENTS.format(spec="visa:v1.0.0"))
    lines = error_lines(cli("scenario", "import", str(path), "--no-validate"))
    assert "visa:v1.0.0" in lines[0]
    assert not list((fluxmix_home / "blobs").rglob("*"))


def _as_previous_version(home: Path) -> None:
    """Turn a store into what the fluxmix before spec pins wrote: no pin table, no meta key."""
    with sqlite3.connect(home / "index.sqlite3") as db:
        db.execute("DROP TABLE spec_pins")
        db.execute("DELETE FROM meta WHERE key = 'spec_pins'")
    db.close()


def test_a_store_from_the_previous_version_gets_its_pins_when_first_written(
    cli: Invoke, write: Callable[[str, str], Path], with_spec: str, fluxmix_home: Path
) -> None:
    imported(cli, write("payments.yaml", PAYMENTS.format(spec="visa:v1.0.0")))
    _as_previous_version(fluxmix_home)
    assert ok(cli("scenario", "list")).stdout.count("payments") == 1
    [line] = error_lines(cli("spec", "untag", "visa:v1.0.0"))
    assert "payments:v1.0.0 (spec: visa:v1.0.0)" in line
    with sqlite3.connect(fluxmix_home / "index.sqlite3") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'spec_pins'").fetchall() == [("1",)]
        assert db.execute("SELECT spec_hash FROM spec_pins").fetchall() == [(with_spec,)]
    db.close()


# -- a read-only store ----------------------------------------------------------------------------


def _read_only_tree(home: Path, *, writable: bool) -> None:
    for path in [home, *home.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755 if writable else 0o555)
        elif path.name.startswith("index.sqlite3"):
            path.chmod(0o644 if writable else 0o444)


def run_as_reader(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script as a user who cannot write `home`.

    Root writes anything, so as root the command runs in a user namespace where it is an
    ordinary user (uid 1000 inside, mapped to root outside: it still owns, and can read, the files).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("FLUXMIX_DEBUG", "FLUXMIX_STORE_URL")}
    env["FLUXMIX_HOME"] = str(home)
    command = [str(FLUXMIX), *args]
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        probe = subprocess.run([unshare, "--user", "--map-user=1000", "true"], capture_output=True) if unshare else None
        if probe is None or probe.returncode != 0:
            reason = "root cannot drop its write access here (no usable `unshare --user`)"
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(reason)
            pytest.skip(reason)
        command = [str(unshare), "--user", "--map-user=1000", *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def read_only_home(cli: Invoke, write: Callable[[str, str], Path], with_spec: str, fluxmix_home: Path):  # type: ignore[no-untyped-def]
    imported(cli, write("payments.yaml", PAYMENTS.format(spec="visa:v1.0.0")))
    imported(cli, write("hello.yaml", HELLO))
    yield fluxmix_home
    _read_only_tree(fluxmix_home, writable=True)


@pytest.mark.parametrize("previous_version", [False, True], ids=["current", "previous-version"])
def test_a_read_only_store_serves_every_reading_command(read_only_home: Path, previous_version: bool) -> None:
    home = read_only_home
    if previous_version:
        _as_previous_version(home)
    before = sorted((p.name, p.stat().st_size) for p in home.rglob("*") if p.is_file())
    _read_only_tree(home, writable=False)
    assert FLUXMIX.exists(), f"the console script is not installed at {FLUXMIX}"

    listed = run_as_reader(home, "scenario", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(e["name"] for e in json.loads(listed.stdout)) == ["hello", "payments"]
    shown = run_as_reader(home, "scenario", "show", "hello")
    assert (shown.returncode, shown.stdout) == (0, HELLO)
    resolved = run_as_reader(home, "scenario", "resolve", f"sha256:{sha(HELLO)[:12]}")
    assert (resolved.returncode, resolved.stdout) == (0, f"sha256:{sha(HELLO)}\n")
    for args in (("store", "verify"), ("spec", "list"), ("scenario", "validate", "payments"), ("store", "gc", "--dry-run")):
        result = run_as_reader(home, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stderr == "", (args, result.stderr)

    refused = run_as_reader(home, "scenario", "untag", "hello:v0.1.0")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: the store at {home} is read-only (its directory is not writable by this user); "
        "reading commands work, changing it needs write access\n"
    )
    assert sorted((p.name, p.stat().st_size) for p in home.rglob("*") if p.is_file()) == before


def test_a_spec_named_by_an_uppercase_digest_validates_and_is_pinned(
    cli: Invoke, write: Callable[[str, str], Path], with_spec: str
) -> None:
    """The store always resolved `SHA256:<HEX>`; validation refused it. One grammar now (fluxmix.refs)."""
    text = PAYMENTS.format(spec=f"SHA256:{with_spec[:16].upper()}")
    imported(cli, write("payments.yaml", text))
    pin = open_store().spec_pin(sha(text))
    assert pin is not None and pin.spec_hash == with_spec


def test_verify_reports_a_stored_scenarios_missing_pinned_spec(
    cli: Invoke, write: Callable[[str, str], Path], with_spec: str, fluxmix_home: Path
) -> None:
    """A spec blob gone from under a scenario (a gc by a fluxmix without pins) is damage, not 'ok'."""
    imported(cli, write("payments.yaml", PAYMENTS.format(spec=f"sha256:{with_spec}")))
    ok(cli("spec", "untag", "visa:v1.0.0"))
    blob = open_store().blob_path(with_spec)
    blob.unlink()
    result = cli("store", "verify")
    assert result.exit_code == 1
    assert f"missing  pinned spec of scenario payments:v1.0.0 -> sha256:{with_spec}" in result.stdout.splitlines()
    assert result.stderr.splitlines() == [
        f"error: store {fluxmix_home} is damaged: 0 corrupt blob(s), 0 tag(s) with a missing blob, "
        "1 scenario(s) whose pinned spec is missing"
    ]
