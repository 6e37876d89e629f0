"""A real `fluxmix-mixer` subprocess for end-to-end tests, its fixtures, and what they feed it.

Every mixer runs the console script with FLUXMIX_HOME in tmp_path and the API on port 0 (the
mixer binds a port the kernel picks and logs it: no race with other servers, see tests.support.ports);
`start_mixer` kills whatever it started. `EventReader` follows its SSE stream in a thread.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.polling import WAIT, block_until


BIN = Path(sys.executable).parent
MIXERD = BIN / "fluxmix-mixer"
FLUXMIX = BIN / "fluxmix"


LISTENING = re.compile(r"HTTP API listening on http://127\.0\.0\.1:(\d+)")


def scenario_yaml(
    out: Path,
    *,
    name: str = "hello",
    version: str = "v1",
    rate: int | None = 200,
    count: int | None = None,
    sink_path: str | None = None,
    extra_gear: str = "",
) -> str:
    """generate -> map -> filter -> file-out on memory wires. `version` tags each output line."""
    gen_config = {"body": {"kind": "demo"}}
    if rate is not None:
        gen_config["rate"] = rate
    if count is not None:
        gen_config["count"] = count
    return f"""\
name: {name}
description: test pipeline
gears:
  - name: source
    type: generate
    config: {json.dumps(gen_config)}
  - name: stamp
    type: map
    config:
      set:
        version: {version}
        double: {{expr: seq * 2}}
  - name: keep
    type: filter
    config:
      where: seq > 0
  - name: sink
    type: file-out
    config:
      path: {json.dumps(sink_path or str(out))}
{extra_gear}wires:
  - {{from: source.out, to: stamp.in, transport: memory}}
  - {{from: stamp.out, to: keep.in, transport: memory}}
  - {{from: keep.out, to: sink.in, transport: memory}}
"""


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines written so far (a line still being written is ignored)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def atomic_write(path: Path, text: str) -> None:
    """Save like an editor does: temp file + rename (the watcher must survive it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class MixerProcess:
    def __init__(self, cwd: Path, home: Path, args: list[str], *, token: str | None = None, env: dict[str, str] | None = None) -> None:
        self._port: int | None = None
        self.token = token
        self.home = home
        self.log_path = cwd / f"mixer-{uuid.uuid4().hex[:8]}.log"
        cmd = [str(MIXERD), *args, "--http", "127.0.0.1:0", "--stop-timeout", "20"]
        if token:
            cmd += ["--api-token", token]
        full_env = {**os.environ, "FLUXMIX_HOME": str(home), **(env or {})}
        full_env.pop("FLUXMIX_NATS_URL", None)
        full_env.pop("FLUXMIX_API_TOKEN", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def port(self) -> int:
        """The API's port, from the mixer's "HTTP API listening on" log line (waits for it)."""
        if self._port is None:
            found = block_until(lambda: LISTENING.search(self.output()), "the API's 'listening on' log line", proc=self)
            self._port = int(found.group(1))
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if method == "POST" and data is None:
            data = b""
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                payload = resp.read()
                status, ctype = resp.status, resp.headers.get_content_type()
        except urllib.error.HTTPError as error:
            payload, status, ctype = error.read(), error.code, error.headers.get_content_type()
        if ctype == "application/json":
            return status, json.loads(payload)
        return status, payload.decode()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POST with the token the mixer was given, else the one it generated in its home."""
        return self.request("POST", path, body, token=self.auth_token())

    def auth_token(self) -> str:
        """What a write needs: the token the mixer was given, else the one it generated in its home."""
        return self.token or self.home_token()

    def home_token(self) -> str:
        return (self.home / "api-token").read_text().strip()

    def try_get(self, path: str) -> tuple[int, Any] | None:
        try:
            return self.request("GET", path)
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def wait_ready(self) -> dict[str, Any]:
        def ready() -> Any:
            answer = self.try_get("/readyz")
            return answer if answer and answer[0] == 200 else None

        block_until(ready, "/readyz to answer 200", proc=self)
        return self.get("/status")

    def status(self) -> dict[str, Any]:
        return self.get("/status")

    def journal(self) -> list[dict[str, Any]]:
        return self.get("/journal?limit=100")["entries"]

    def wait_journal(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []

        def found() -> dict[str, Any] | None:
            seen[:] = self.journal()
            return next((e for e in seen if predicate(e)), None)

        try:
            return block_until(found, what, proc=self)
        except pytest.fail.Exception as failure:  # say what the journal did hold
            rows = [(e["trigger"], e["outcome"], e["ref"], e["reason"]) for e in seen]
            pytest.fail(f"{failure.msg}\njournal, newest first: {rows}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=WAIT + 20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"mixer did not stop after {signal.Signals(sig).name}\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def start_mixer(tmp_path: Path, home: Path) -> Iterator[Callable[..., MixerProcess]]:
    started: list[MixerProcess] = []

    def start(*args: str, token: str | None = None) -> MixerProcess:
        proc = MixerProcess(tmp_path, home, list(args), token=token)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


def run_fluxmix(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLUXMIX_HOME": str(home)}
    return subprocess.run([str(FLUXMIX), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def seqs(lines: list[dict[str, Any]]) -> list[int]:
    return [line["seq"] for line in lines]


def assert_exactly_once(values: list[int]) -> None:
    """Every seq from 1 to the highest exactly once: nothing lost, nothing duplicated."""
    assert values, "nothing was written"
    duplicates = sorted({v for v in values if values.count(v) > 1}) if len(set(values)) != len(values) else []
    missing = sorted(set(range(1, max(values) + 1)) - set(values))
    assert not duplicates and not missing, f"duplicates {duplicates[:20]}, missing {missing[:20]}"


class EventReader:
    """Reads an SSE stream in a thread: (id, event, data) tuples as they arrive."""

    def __init__(self, host: str, port: int, path: str = "/events") -> None:
        self.events: list[tuple[int, str, Any]] = []
        self.closed = threading.Event()
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if not line:
                    if "event" in fields:
                        self.events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    fields[key] = value
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self.closed.set()

    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.events]

    def close(self) -> None:
        """Hang up, let the reader thread see the end, then release the connection."""
        if self.conn.sock is not None:
            try:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(10)
        self.conn.close()


def generate_scenario(name: str, where: str, expect: str) -> str:
    return f"""\
name: {name}
gears:
  - {{name: source, type: generate, config: {{rate: 50}}}}
  - {{name: keep, type: filter, config: {{where: '{where}'}}}}
  - {{name: sink, type: file-out, config: {{path: out/{name}.jsonl}}}}
wires:
  - {{from: source.out, to: keep.in, transport: memory}}
  - {{from: keep.out, to: sink.in, transport: memory}}
expect:
  - {expect}
  - dead_letters == 0
"""
