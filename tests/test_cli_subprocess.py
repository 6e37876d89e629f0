"""The installed `fluxmix` console script, run as a real process (entry point, exit codes, pipes)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

FLUXMIX = Path(sys.executable).parent / "fluxmix"

SCENARIO = b"""\
name: hello
version: 0.3.0
gears:
  - name: source
    type: generate
    config: {count: 3}
  - name: sink
    type: log
wires:
  - from: source.out
    to: sink.in
    transport: memory
"""


def run(home: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLUXMIX_DEBUG", "FLUXMIX_STORE_URL")}
    env["FLUXMIX_HOME"] = str(home)
    return subprocess.run([str(FLUXMIX), *args], env=env, timeout=60, **kwargs)  # type: ignore[call-overload]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    assert FLUXMIX.exists(), f"the console script is not installed at {FLUXMIX}"
    return tmp_path / "home"


def test_import_resolve_show_round_trip(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_bytes(SCENARIO)
    digest = hashlib.sha256(SCENARIO).hexdigest()

    imported = run(home, "scenario", "import", str(path), capture_output=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.decode() == f"imported hello:v0.3.0 sha256:{digest} ({len(SCENARIO)} bytes)\n"

    resolved = run(home, "scenario", "resolve", "hello:latest", capture_output=True)
    assert resolved.returncode == 0
    assert resolved.stdout.decode() == f"sha256:{digest}\n"

    shown = run(home, "scenario", "show", f"sha256:{digest[:12]}", capture_output=True)
    assert shown.returncode == 0
    assert shown.stdout == SCENARIO


def test_error_exit_is_one_line_without_traceback(home: Path, tmp_path: Path) -> None:
    unknown = run(home, "scenario", "resolve", "nothing:1.0.0", capture_output=True)
    assert unknown.returncode == 2
    assert unknown.stdout == b""
    lines = unknown.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nothing" in lines[0]

    missing = run(home, "scenario", "import", str(tmp_path / "absent.yaml"), capture_output=True)
    assert missing.returncode == 2
    assert b"Traceback" not in missing.stderr and b"absent.yaml" in missing.stderr

    usage = run(home, "store", "gc", "--grace", "soon", capture_output=True)
    assert usage.returncode == 2 and b"Traceback" not in usage.stderr


def test_closed_stdout_pipe_ends_quietly(home: Path, tmp_path: Path) -> None:
    """`fluxmix scenario list | head -1` once head has exited: no traceback, no error line.

    The reading end is closed before the process starts, so the very first write fails (EPIPE).
    """
    path = tmp_path / "hello.yaml"
    path.write_bytes(SCENARIO)
    assert run(home, "scenario", "import", str(path), "--no-validate", capture_output=True).returncode == 0
    for args in (("scenario", "list"), ("scenario", "show", "hello")):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = run(home, *args, stdout=write_end, stderr=subprocess.PIPE)
        finally:
            os.close(write_end)
        assert result.stderr == b"", (args, result.stderr)
        assert result.returncode == 141, args
