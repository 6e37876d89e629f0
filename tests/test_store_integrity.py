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
