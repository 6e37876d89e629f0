"""Bad input from an operator, fed from the outside: one `error:` line each, exit 2, no traceback, nothing written.

Found by QA against the installed scripts; each test feeds the input that used to misbehave.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fluxmix.cli.main import root
from fluxmix.cli.mixerd import main as mixerd_main
from fluxmix.store import open_store

SCENARIO = """\
name: flow
version: 1.0.0
gears:
  - {name: source, type: generate, config: {count: 1}}
  - {name: sink, type: log}
wires:
  - {from: source.out, to: sink.in, transport: memory}
"""

SPEC = """\
name: payment
version: 1.0.0
schema: {type: object}
"""


def _run(command: object, *args: str) -> Result:
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)  # type: ignore[arg-type]
    assert "Traceback" not in result.output + result.stderr
    return result


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def _store_files(home: Path) -> dict[str, float]:
    return {
        str(p.relative_to(home)): p.stat().st_mtime
        for p in home.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


@pytest.fixture
def stored(fluxmix_home: Path, tmp_path: Path) -> dict[str, str]:
    """A scenario and a spec imported by tag, and a spec-shaped blob that no tag names."""
    (tmp_path / "flow.yaml").write_text(SCENARIO)
    (tmp_path / "payment.yaml").write_text(SPEC)
    assert _run(root, "scenario", "import", str(tmp_path / "flow.yaml")).exit_code == 0
    assert _run(root, "spec", "import", str(tmp_path / "payment.yaml")).exit_code == 0
    store = open_store(fluxmix_home)
    try:
        untagged = store.put_blob(b"name: orphan\nschema: {type: string}\n")
    finally:
        store.close()
    return {
        "scenario": hashlib.sha256(SCENARIO.encode()).hexdigest(),
        "spec": hashlib.sha256(SPEC.encode()).hexdigest(),
        "untagged_spec": untagged,
    }


@pytest.mark.parametrize("verb", ["validate", "show", "resolve", "diff"])
@pytest.mark.parametrize("prefix_len", [64, 16])
def test_a_scenario_verb_given_a_spec_hash_says_it_is_a_spec(stored: dict[str, str], verb: str, prefix_len: int) -> None:
    ref = f"sha256:{stored['spec'][:prefix_len]}"
    args = ["scenario", verb, *(["flow:1.0.0", ref] if verb == "diff" else [ref])]
    result = _run(root, *args)
    assert result.exit_code == 2
    assert _error_lines(result) == [f"error: sha256:{stored['spec']}: this blob is the spec payment:v1.0.0, not a scenario"]
    assert result.stdout == ""


@pytest.mark.parametrize("verb", ["validate", "show", "resolve"])
def test_a_spec_verb_given_a_scenario_hash_says_it_is_a_scenario(stored: dict[str, str], verb: str) -> None:
    result = _run(root, "spec", verb, f"sha256:{stored['scenario']}")
    assert result.exit_code == 2
    assert _error_lines(result) == [f"error: sha256:{stored['scenario']}: this blob is the scenario flow:v1.0.0, not a spec"]


def test_an_untagged_spec_document_is_named_as_such_by_scenario_validate(stored: dict[str, str]) -> None:
    result = _run(root, "scenario", "validate", f"sha256:{stored['untagged_spec']}")
    assert result.exit_code == 2
    assert _error_lines(result) == [f"error: sha256:{stored['untagged_spec']}: this blob is a spec document, not a scenario"]


def test_validate_json_gives_the_wrong_kind_as_its_one_problem(stored: dict[str, str]) -> None:
    result = _run(root, "scenario", "validate", "--json", f"sha256:{stored['spec']}")
    assert result.exit_code == 2
    assert '"reason": "this blob is the spec payment:v1.0.0, not a scenario"' in result.stdout


def test_the_right_kind_of_hash_still_works(stored: dict[str, str]) -> None:
    assert _run(root, "scenario", "validate", f"sha256:{stored['scenario']}").exit_code == 0
    assert _run(root, "spec", "show", f"sha256:{stored['spec']}").stdout == SPEC


@pytest.mark.parametrize("kind", ["scenario", "spec"])
def test_validating_a_directory_named_like_a_store_name_says_it_is_a_directory(
    fluxmix_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    (tmp_path / "flows").mkdir()
    monkeypatch.chdir(tmp_path)
    open_store(fluxmix_home).close()  # an initialised, empty store: an error must leave it as it is
    before = _store_files(fluxmix_home)
    result = _run(root, kind, "validate", "flows")
    assert result.exit_code == 2
    assert _error_lines(result) == [f"error: flows: is a directory, not a {kind} file"]
    assert _store_files(fluxmix_home) == before


def test_a_file_read_as_one_long_string_is_quoted_briefly(fluxmix_home: Path, tmp_path: Path) -> None:
    """`/etc/passwd` given as a scenario (by the CLI or POST /activate) must not be echoed whole."""
    secret = "root:x:0:0:root:/root:/bin/bash " * 100
    (tmp_path / "passwd").write_text(secret)
    result = _run(root, "scenario", "validate", str(tmp_path / "passwd"))
    assert result.exit_code == 2
    [line] = _error_lines(result)
    assert len(line) < 250 and f"({len(secret.strip())} characters)" in line


@pytest.mark.parametrize(
    "url", ["nonsense", "ftp://127.0.0.1:8470", "http://", "http://[::1", "http://127.0.0.1:99999", "http://h:abc"]
)
@pytest.mark.parametrize("verb", [["status"], ["journal"], ["reload"], ["activate", "flow"]])
def test_mixer_commands_refuse_a_malformed_url(fluxmix_home: Path, url: str, verb: list[str]) -> None:
    result = _run(root, "mixer", *verb, "--url", url)
    assert result.exit_code == 2
    [line] = _error_lines(result)
    assert line.startswith(f"error: --url {url!r}: ")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:4222", "scheme must be one of nats://"),
        ("nats://", "no host"),
        (",,,", "no URL in it"),
        ("nats://h:99999", "not a valid URL"),
        ("nats://[::1", "not a valid URL"),
    ],
)
def test_mixer_refuses_a_malformed_nats_url_before_starting(
    fluxmix_home: Path, tmp_path: Path, url: str, reason: str
) -> None:
    scenario = tmp_path / "flow.yaml"
    scenario.write_text(SCENARIO)
    open_store(fluxmix_home).close()
    before = _store_files(fluxmix_home)
    result = _run(mixerd_main, "-s", str(scenario), "--no-http", "--nats-url", url)
    assert result.exit_code == 2
    [line] = _error_lines(result)
    assert line.startswith(f"error: --nats-url {url!r}: {reason}")
    assert _store_files(fluxmix_home) == before


@pytest.mark.parametrize("url", ["nats://127.0.0.1:4222", "tls://a:1,ws://b:2", "localhost:4222", "nats://u:p@h:4222"])
def test_well_formed_nats_urls_are_accepted(url: str) -> None:
    from fluxmix.mixer.settings import split_urls

    assert split_urls((url,)) == url.split(",")
    assert split_urls(("",)) == []  # an empty FLUXMIX_NATS_URL means "not set"


def test_ctrl_c_before_the_mixer_installs_its_handlers_exits_130_quietly(
    fluxmix_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Click's default is 'Aborted!' and status 1; an interrupted command exits 130, as in a shell."""
    from fluxmix.cli import mixerd

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(mixerd, "configure_logging", interrupted)
    scenario = tmp_path / "flow.yaml"
    scenario.write_text(SCENARIO)
    result = _run(mixerd_main, "-s", str(scenario), "--no-http")
    assert result.exit_code == 130
    assert "Aborted" not in result.output + result.stderr


def test_the_mixer_refuses_a_store_it_cannot_write(fluxmix_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Otherwise each activation logs an SQLite 'readonly database' traceback (os.access is faked: tests may run as root)."""
    from fluxmix.errors import StoreError
    from fluxmix.mixer import daemon

    open_store(fluxmix_home).close()
    index = fluxmix_home / "index.sqlite3"
    real_access = os.access
    monkeypatch.setattr(daemon.os, "access", lambda path, mode: Path(path) != index and real_access(path, mode))
    with pytest.raises(StoreError, match=f"^{index}: not writable by this user"):
        daemon.require_writable(fluxmix_home)
    result = _run(mixerd_main, "--no-http")
    assert result.exit_code == 1
    assert _error_lines(result) == [f"error: {index}: not writable by this user; the mixer records scenarios, its journal and checkpoints in the store"]


@pytest.mark.parametrize(
    ("ref", "line"),
    [
        ("flow.yml", "error: flow.yml: no such file (and no scenario of that name in the store)"),
        ("flows", "error: flows: is a directory, not a scenario or spec file"),
    ],
)
def test_mixer_startup_ref_that_looks_like_a_file_is_reported_as_one(
    fluxmix_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str, line: str
) -> None:
    """A mistyped file name without a slash reads as a store name; say what was probably meant."""
    (tmp_path / "flows").mkdir()
    monkeypatch.chdir(tmp_path)
    result = _run(mixerd_main, "-s", ref, "--no-http")
    assert result.exit_code == 2
    assert _error_lines(result) == [line]


@pytest.mark.parametrize("kind", ["scenario", "spec"])
def test_a_tag_conflict_names_the_refused_file(fluxmix_home: Path, tmp_path: Path, kind: str) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    text = SCENARIO if kind == "scenario" else SPEC
    first.write_text(text)
    second.write_text(text + "description: edited without a version bump\n")
    assert _run(root, kind, "import", str(first)).exit_code == 0
    before = _store_files(fluxmix_home)
    result = _run(root, kind, "import", str(second))
    assert result.exit_code == 2
    [line] = _error_lines(result)
    assert line.startswith(f"error: {second}: tag v1.0.0 of ")
    assert _store_files(fluxmix_home) == before


@pytest.mark.parametrize(
    ("url", "line"),
    [
        ("not a url", "error: store index URL ($FLUXMIX_STORE_URL) is not a database URL"),
        ("nosuchdialect://u:hunter2@h/db", "error: store index nosuchdialect://u:***@h/db: cannot use this database"),
        ("sqlite:////nonexistent/dir/index.sqlite3", "error: store index sqlite:////nonexistent/dir/index.sqlite3 cannot be opened"),
    ],
)
def test_an_unusable_store_url_is_one_line_without_its_password(
    fluxmix_home: Path, monkeypatch: pytest.MonkeyPatch, url: str, line: str
) -> None:
    monkeypatch.setenv("FLUXMIX_STORE_URL", url)
    result = _run(root, "scenario", "list")
    assert result.exit_code == 1
    [error] = _error_lines(result)
    assert error.startswith(line) and "hunter2" not in error
