"""Hostile input against the API, the CLI and the python gear (issue 8, security and hangs).

Each test feeds what an attacker or a careless operator would, and checks the answer: refused,
one bounded line, nothing read, nothing imported, the mixer still up, no secret in the log.
The API's guard is tested in-process (aiohttp's test client against the real app); what a user
runs is tested against real `fluxmix` / `fluxmix-mixer` processes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fluxmix.gears.catalog import Catalog
from fluxmix.mixer.activation import Activator
from fluxmix.mixer.service import MixerService
from fluxmix.mixer.http import create_app
from fluxmix.mixer.logs import JsonFormatter, TextFormatter
from fluxmix.mixer.settings import MixerSettings
from fluxmix.store import open_store
from fluxmix.transports.registry import Brokers
from tests.support.mixer import FLUXMIX, MixerProcess, run_fluxmix
from tests.support.polling import block_until

TOKEN = "tok-3f9a1c77e2b44d0c9b1f"
LONG = 900_000  # characters of the hostile name
MAX_ECHO = 1_000  # no error line may be longer than this


def _memory_scenario(out: Path, name: str = "sec") -> str:
    return (
        f"name: {name}\n"
        "gears:\n"
        "  - {name: source, type: generate, config: {count: 3}}\n"
        f"  - {{name: sink, type: file-out, config: {{path: '{out}'}}}}\n"
        "wires:\n"
        "  - {from: source.out, to: sink.in, transport: memory}\n"
    )


# ---------------------------------------------------------------- the API in-process


class Api:
    """The real aiohttp app over a real store and activator, with the settings a flag would give."""

    def __init__(self, client: TestClient, mixer: MixerService, allowed: Path) -> None:
        self.client, self.mixer, self.allowed = client, mixer, allowed

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = TOKEN,
                   content_type: str | None = "application/json", **headers: str) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        sent = dict(headers)
        if content_type:
            sent["Content-Type"] = content_type
        if token:
            sent["Authorization"] = f"Bearer {token}"
        response = await self.client.post(path, data=data, headers=sent)
        return response.status, await response.json()

    def journal(self) -> list[Any]:
        return self.mixer.store.journal(limit=100)


@pytest.fixture
async def api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    overrides = getattr(request, "param", {})
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    store = open_store(tmp_path / "home")
    settings = MixerSettings(**{"api_token": TOKEN, "scenario_dirs": (allowed.resolve(),), **overrides})
    catalog = Catalog.default()
    brokers = Brokers(store.home)
    activator = Activator(store, catalog, brokers, stop_timeout=10)
    mixer = MixerService(settings, store, catalog, brokers, activator)
    mixer.phase = "serving"
    client = TestClient(TestServer(create_app(mixer), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Api(client, mixer, allowed)
    finally:
        await client.close()
        await mixer.shutdown()
        await brokers.close()
        store.close()


async def test_a_text_plain_post_is_refused_before_anything_happens(api: Api) -> None:
    """What a web page's form or fetch() can send cross-site without a preflight."""
    path = api.allowed / "s.yaml"
    path.write_text(_memory_scenario(api.allowed / "out.jsonl"))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        code, body = await api.post("/activate", {"ref": str(path)}, content_type=content_type)
        assert code == 415 and "application/json" in body["error"], (content_type, body)
    assert api.journal() == [] and api.mixer.activator.current is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},  # another local port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Host": "evil.example:8470"},  # DNS rebinding: the name resolves to 127.0.0.1
    ],
)
async def test_requests_from_another_site_are_refused(api: Api, headers: dict[str, str]) -> None:
    path = api.allowed / "s.yaml"
    path.write_text(_memory_scenario(api.allowed / "out.jsonl"))
    code, body = await api.post("/activate", {"ref": str(path)}, **headers)  # even with the token
    assert code == 403 and "refused" in body["error"], body
    response = await api.client.get("/status", headers=headers)
    assert response.status == 403
    assert api.journal() == []


async def test_a_link_from_another_site_opens_the_page_but_a_form_post_does_not_pass(api: Api) -> None:
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    response = await api.client.get("/", headers=navigate)
    assert response.status == 200
    code, _ = await api.post("/activate", {"ref": "nosuch:v1.0.0"}, **navigate)
    assert code == 403
    response = await api.client.get("/status", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"})
    assert response.status == 403


async def test_the_api_own_origin_and_a_browser_tab_typed_url_pass(api: Api) -> None:
    host = f"127.0.0.1:{api.client.port}"
    for headers in ({"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        code, body = await api.post("/activate", {"ref": "nosuch:v1.0.0"}, **headers)
        assert code == 422 and body["outcome"] == "rejected", (headers, body)


async def test_a_post_without_the_token_is_refused(api: Api) -> None:
    code, body = await api.post("/activate", {"ref": "nosuch:v1.0.0"}, token=None)
    assert code == 401 and "bearer token" in body["error"]
    code, _ = await api.post("/reload", token="wrong")
    assert code == 401
    assert api.journal() == []


@pytest.mark.parametrize("api", [{"api_token": None}], indirect=True)
async def test_auth_without_a_token_fails_closed(api: Api) -> None:
    code, _ = await api.post("/activate", {"ref": "nosuch:v1.0.0"}, token=None)
    assert code == 401


@pytest.mark.parametrize("api", [{"api_token": None, "auth": False}], indirect=True)
async def test_no_auth_accepts_a_json_post_without_token_but_still_refuses_other_sites(api: Api) -> None:
    code, body = await api.post("/activate", {"ref": "nosuch:v1.0.0"}, token=None)
    assert code == 422 and body["outcome"] == "rejected"
    code, _ = await api.post("/activate", {"ref": "nosuch:v1.0.0"}, token=None, content_type="text/plain")
    assert code == 415
    code, _ = await api.post("/activate", {"ref": "nosuch:v1.0.0"}, token=None, Origin="http://evil.example")
    assert code == 403


async def test_deeply_nested_json_answers_400(api: Api) -> None:
    for raw in (b"[" * 30_000 + b"]" * 30_000, b'{"ref": ' + b"[" * 30_000, b'{"a":' * 12_000):  # under 64 KiB
        code, body = await api.post("/activate", raw=raw)
        assert code == 400 and "JSON" in body["error"], body


async def test_a_path_outside_the_allowed_dirs_is_refused_without_reading_it(api: Api, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:*:19000:0:99999:7:::\nalice:$6$saltsalt$hash:19000:0:99999:7:::\n")
    link = api.allowed / "link.yaml"
    link.symlink_to(secret)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for ref in (str(secret), str(link), f"file://{secret}", str(api.allowed / ".." / "shadow"), str(fifo), "/etc/passwd"):
        code, entry = await api.post("/activate", {"ref": ref})
        assert code == 422 and entry["outcome"] == "rejected" and entry["error_kind"] == "user", entry
        assert "not inside a directory the API may activate" in entry["reason"] and "not read" in entry["reason"]
        text = json.dumps(entry)
        assert "root:" not in text and "alice" not in text and "19000" not in text
    rows = json.dumps([e.as_dict() for e in api.journal()])
    assert "root:" not in rows and "alice" not in rows


async def test_a_fifo_in_an_allowed_dir_is_refused_and_does_not_block_later_activations(api: Api) -> None:
    os.mkfifo(api.allowed / "pipe.yaml")
    code, entry = await asyncio_wait(api.post("/activate", {"ref": str(api.allowed / "pipe.yaml")}))
    assert code == 422 and "not a regular file" in entry["reason"] and entry["error_kind"] == "user"
    good = api.allowed / "good.yaml"
    good.write_text(_memory_scenario(api.allowed / "out.jsonl"))
    code, entry = await asyncio_wait(api.post("/activate", {"ref": str(good)}))
    assert code == 200 and entry["outcome"] == "activated", entry


async def asyncio_wait(coro: Any) -> Any:
    import asyncio

    return await asyncio.wait_for(coro, 20)


async def test_a_huge_name_is_never_echoed_whole(api: Api) -> None:
    path = api.allowed / "long.yaml"
    path.write_text(f"name: {'a' * LONG}\ngears: []\nbogus_{'k' * LONG}: 1\n")
    code, entry = await api.post("/activate", {"ref": str(path)})
    assert code == 422 and entry["outcome"] == "rejected"
    for line in [entry["reason"], *entry["problems"]]:
        assert len(line) < MAX_ECHO, len(line)
    stored = api.journal()[0]
    assert max(len(line) for line in [stored.reason, *stored.problems]) < MAX_ECHO
    code, body = await api.post("/activate", {"ref": "x" * 60_000})
    assert code == 400 and len(body["error"]) < MAX_ECHO
    code, body = await api.post("/activate", {"ref": "a:v1.0.0", "k" * 60_000: 1})
    assert code == 400 and len(body["error"]) < MAX_ECHO


# ---------------------------------------------------------------- the CLI


def test_cli_refuses_a_fifo_and_a_device_instead_of_hanging(tmp_path: Path, home: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for args in (("scenario", "import", str(fifo)), ("scenario", "validate", str(fifo)), ("spec", "import", str(fifo)),
                 ("scenario", "validate", "/dev/zero")):
        result = run_fluxmix(home, tmp_path, *args)  # times out (and fails) if it blocks
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "not a regular file" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_cli_never_echoes_a_huge_name_or_control_characters(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "long.yaml"
    # 900,000 characters in the name, a long gear name, and a terminal escape (YAML "\e") in a type
    path.write_text(f"name: {'a' * LONG}\ngears:\n  - {{name: '{'g' * 50_000}', type: \"x\\e[31m\"}}\n")
    for command in ("validate", "import"):
        result = run_fluxmix(home, tmp_path, "scenario", command, str(path))
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert lines and all(line.startswith("error: ") and len(line) < MAX_ECHO for line in lines), [len(x) for x in lines]
        assert "\x1b" not in result.stderr
    result = run_fluxmix(home, tmp_path, "scenario", "show", "n" * 120_000)
    assert result.returncode == 2 and len(result.stderr) < MAX_ECHO


VENV_GEAR = "  - {name: g, type: python, config: {class: 'venv.__main__:Gear'}}\n"


@pytest.mark.parametrize("klass", ["venv.__main__:Gear", "this:Gear", "os:getcwd", "json.tool:Gear", "__main__:Gear"])
def test_validate_never_imports_a_module_the_operator_did_not_allow(tmp_path: Path, home: Path, klass: str) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text(
        "name: evil\ngears:\n"
        f"  - {{name: g, type: python, config: {{class: '{klass}'}}}}\n"
    )
    before = set(os.listdir(tmp_path))
    result = run_fluxmix(home, tmp_path, "scenario", "validate", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # `this` would print the Zen of Python
    assert "not allowed" in result.stderr or "__main__ modules are never imported" in result.stderr
    assert set(os.listdir(tmp_path)) == before  # venv's CLI would have created environments
    assert "Traceback" not in result.stderr


def test_a_module_under_the_gears_path_is_allowed_and_one_outside_is_not(tmp_path: Path, home: Path) -> None:
    gears = tmp_path / "gears"
    gears.mkdir()
    (gears / "mygear.py").write_text(GEAR_SOURCE)
    other = tmp_path / "other"
    other.mkdir()
    (other / "outside.py").write_text(GEAR_SOURCE)
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: ok\ngears:\n  - {name: g, type: python, config: {class: 'mygear:Passthrough'}}\n")
    env = {"FLUXMIX_GEARS_PATH": "", "PYTHONPATH": str(other)}
    assert _fluxmix(home, tmp_path, env, "scenario", "validate", str(ok)).returncode == 2  # not configured
    assert _fluxmix(home, tmp_path, env, "--gears-path", str(gears), "scenario", "validate", str(ok)).returncode == 0
    env["FLUXMIX_GEARS_PATH"] = str(gears)
    assert _fluxmix(home, tmp_path, env, "scenario", "validate", str(ok)).returncode == 0
    outside = tmp_path / "outside.yaml"
    outside.write_text("name: o\ngears:\n  - {name: g, type: python, config: {class: 'outside:Passthrough'}}\n")
    result = _fluxmix(home, tmp_path, env, "scenario", "validate", str(outside))  # importable through PYTHONPATH
    assert result.returncode == 2 and "not allowed" in result.stderr


def _fluxmix(home: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "FLUXMIX_HOME": str(home), **env}
    return subprocess.run([str(FLUXMIX), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


GEAR_SOURCE = """
import os, sys
from fluxmix.gears.base import Gear, Port


class Passthrough(Gear):
    inputs = (Port("in"),)
    outputs = (Port("out"),)

    async def handle(self, port, message):
        await self.ctx.emit("out", message.body)


class ExitsInHandle(Gear):
    inputs = (Port("in"),)

    async def handle(self, port, message):
        sys.exit(3)


class ExitsInFlush(Gear):
    inputs = (Port("in"),)

    async def handle(self, port, message):
        pass

    async def flush(self):
        sys.exit(6)


class ExitsInStart(Gear):
    inputs = (Port("in"),)

    async def start(self):
        sys.exit("bye")


class QuotesArgv(Gear):
    inputs = (Port("in"),)

    @classmethod
    def check_config(cls, config):
        return [("", "usage: " + " ".join(sys.argv) + " env " + os.environ.get("FLUXMIX_API_TOKEN", ""))]
"""


def test_no_scenario_ends_the_mixer(tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    gears = tmp_path / "gears"
    gears.mkdir()
    (gears / "mygear.py").write_text(GEAR_SOURCE)
    (gears / "exits_at_import.py").write_text("import sys\nsys.exit(2)\n")
    out = tmp_path / "out.jsonl"
    base = tmp_path / "base.yaml"
    base.write_text(_memory_scenario(out, "base"))
    mixer = MixerProcess(tmp_path, home, ["-s", str(base), "--gears-path", str(gears)], token=TOKEN)
    try:
        mixer.wait_ready()
        cases = {
            "venv.yaml": "venv.__main__:Gear",
            "import.yaml": "exits_at_import:Gear",
        }
        for name, klass in cases.items():
            (tmp_path / name).write_text(
                f"name: {name[:-5]}\ngears:\n  - {{name: source, type: generate, config: {{count: 1}}}}\n"
                f"  - {{name: g, type: python, config: {{class: '{klass}'}}}}\n"
                "wires:\n  - {from: source.out, to: g.in, transport: memory}\n"
            )
            code, entry = mixer.post("/activate", {"ref": str(tmp_path / name)})
            assert code == 422 and entry["outcome"] == "rejected" and entry["error_kind"] == "user", entry
            assert mixer.proc.poll() is None, mixer.output()
        (tmp_path / "start.yaml").write_text(
            "name: start\ngears:\n  - {name: source, type: generate, config: {count: 2}}\n"
            "  - {name: g, type: python, config: {class: 'mygear:ExitsInStart'}}\n"
            "wires:\n  - {from: source.out, to: g.in, transport: memory}\n"
        )
        code, entry = mixer.post("/activate", {"ref": str(tmp_path / "start.yaml")})
        assert code == 422 and entry["outcome"] == "rolled-back" and "sys.exit" in entry["reason"], entry
        assert mixer.proc.poll() is None and mixer.status()["scenario"]["name"] == "base"
        (tmp_path / "handle.yaml").write_text(
            "name: handle\ngears:\n  - {name: source, type: generate, config: {count: 2}}\n"
            "  - {name: g, type: python, config: {class: 'mygear:ExitsInHandle'}}\n"
            "wires:\n  - {from: source.out, to: g.in, transport: memory}\n"
        )
        code, entry = mixer.post("/activate", {"ref": str(tmp_path / "handle.yaml")})
        assert code == 200 and entry["outcome"] == "activated", entry
        block_until(lambda: (mixer.status()["gears"]["g"].get("errors") or 0) >= 1, "the gear's failure", proc=mixer)
        assert mixer.proc.poll() is None and mixer.get("/healthz") == {"status": "ok"}
        (tmp_path / "flush.yaml").write_text(  # flush() runs after each message from a memory wire
            "name: flush\ngears:\n  - {name: source, type: generate, config: {count: 2}}\n"
            "  - {name: g, type: python, config: {class: 'mygear:ExitsInFlush'}}\n"
            "wires:\n  - {from: source.out, to: g.in, transport: memory}\n"
        )
        code, entry = mixer.post("/activate", {"ref": str(tmp_path / "flush.yaml")})
        assert code == 200 and entry["outcome"] == "activated", entry
        block_until(lambda: (mixer.status()["gears"]["g"].get("errors") or 0) >= 1, "the flush failure", proc=mixer)
        assert mixer.proc.poll() is None and mixer.get("/healthz") == {"status": "ok"}
        assert TOKEN not in mixer.output()
    finally:
        assert mixer.stop() == 0, mixer.output()


def test_no_secret_in_a_log_line_or_a_journal_row(tmp_path: Path, home: Path) -> None:
    """A gear (or a library) quoting the process's argv and environment must not leak them."""
    gears = tmp_path / "gears"
    gears.mkdir()
    (gears / "mygear.py").write_text(GEAR_SOURCE)
    base = tmp_path / "base.yaml"
    base.write_text(_memory_scenario(tmp_path / "out.jsonl", "base"))
    args = ["-s", str(base), "--gears-path", str(gears), "--log-level", "debug", "--log-format", "json"]
    mixer = MixerProcess(tmp_path, home, args, token=TOKEN, env={"FLUXMIX_NATS_PASSWORD": "pw-7d2c9e41", "FLUXMIX_NATS_USER": "u"})
    try:
        mixer.wait_ready()
        quoting = tmp_path / "quote.yaml"
        quoting.write_text(
            "name: quote\ngears:\n  - {name: source, type: generate, config: {count: 1}}\n"
            "  - {name: g, type: python, config: {class: 'mygear:QuotesArgv'}}\n"
            "wires:\n  - {from: source.out, to: g.in, transport: memory}\n"
        )
        code, entry = mixer.post("/activate", {"ref": str(quoting)})
        assert code == 422 and "usage: " in json.dumps(entry)
        assert "***" in json.dumps(entry)
        journal = json.dumps(mixer.journal())
        assert TOKEN not in journal and "pw-7d2c9e41" not in journal
    finally:
        mixer.stop()
    log = mixer.output()
    assert "usage: " in log  # the problem was logged ...
    assert TOKEN not in log and "pw-7d2c9e41" not in log  # ... with the secrets masked


def test_formatters_mask_registered_secrets_and_url_passwords() -> None:
    import logging

    from fluxmix.redact import forget_secrets, redact, register_secret

    register_secret("s3cr3t-value")
    try:
        record = logging.LogRecord("x", logging.INFO, "", 0, "connect to %s with %s", ("nats://bob:pa55word@h:4222", "s3cr3t-value"), None)
        record.extra_field = {"url": "nats://bob:pa55word@h:4222"}
        for formatter in (TextFormatter(), JsonFormatter()):
            line = formatter.format(record)
            assert "pa55word" not in line and "s3cr3t-value" not in line and "bob:***@h:4222" in line
        assert redact("tls://h:4222 and nats://h") == "tls://h:4222 and nats://h"
    finally:
        forget_secrets()


# ---------------------------------------------------------------- tokens and the CLI against a mixer


def _mixer_cli(home: Path, cwd: Path, url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("FLUXMIX_API_TOKEN", "FLUXMIX_MIXER_URL")}
    full.update({"FLUXMIX_HOME": str(home), "FLUXMIX_MIXER_URL": url, **(env or {})})
    return subprocess.run([str(FLUXMIX), "mixer", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def test_a_token_is_generated_by_default_and_the_cli_reads_it(tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "s.yaml"
    path.write_text(_memory_scenario(out))
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    token_file = home / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token not in mixer.output()
    assert mixer.request("POST", "/reload")[0] == 401  # no token: refused
    assert mixer.request("POST", "/reload", token=token)[0] == 200

    result = _mixer_cli(home, tmp_path, mixer.url, "reload")
    assert result.returncode == 0 and result.stdout.startswith("unchanged"), result.stderr
    # A bad reference is the operator's mistake: exit 2, like bad input everywhere else.
    result = _mixer_cli(home, tmp_path, mixer.url, "activate", "nosuch:v1.0.0")
    assert result.returncode == 2 and result.stderr.startswith("error: activation rejected"), result.stderr
    # A path outside the -s file's directory is refused (exit 2), naming the flag to allow it.
    result = _mixer_cli(home, tmp_path, mixer.url, "activate", "/etc/passwd")
    assert result.returncode == 2 and "--scenario-dir" in result.stderr and "root:" not in result.stderr
    # The file token is only sent to this machine's mixers.
    other = home.parent / "other-home"
    other.mkdir()
    result = _mixer_cli(other, tmp_path, mixer.url, "reload")
    assert result.returncode == 1 and "401" in result.stderr
    assert mixer.stop() == 0, mixer.output()[-3000:]
    restarted = start_mixer("-s", str(path))  # the token survives a restart
    restarted.wait_ready()
    assert token_file.read_text().strip() == token
    assert restarted.stop() == 0, restarted.output()[-3000:]


def test_no_auth_opts_out(tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(_memory_scenario(tmp_path / "out.jsonl"))
    mixer = start_mixer("-s", str(path), "--no-auth")
    mixer.wait_ready()
    assert not (home / "api-token").exists()
    assert mixer.request("POST", "/reload")[0] == 200
    assert mixer.request("POST", "/reload", raw=b"{}", token=None)[0] == 200
    assert mixer.stop() == 0, mixer.output()[-3000:]


class _FakeHandler(BaseHTTPRequestHandler):
    answers: dict[str, tuple[str, bytes]] = {}

    def _answer(self) -> None:
        content_type, body = self.answers[self.server.kind]  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


_FakeHandler.answers = {
    "html": ("text/html", b"<!doctype html><html><body>It works</body></html>"),
    "list": ("application/json", b"[1, 2, 3]"),
    "shape": ("application/json", b'{"state": 1, "entries": {"a": 1}, "outcome": ["x"], "gears": [1]}'),
    "nested": ("application/json", b"[" * 30_000 + b"]" * 30_000),
    "nested-object": ("application/json", b'{"entries": [' + b"[" * 900 + b"]" * 900 + b'], "state": "x", "gears": {"g": ' + b"[" * 900 + b"]" * 900 + b"}}"),
}


@pytest.fixture
def fake_server() -> Iterator[Callable[[str], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(kind: str) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        server.kind = kind  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", sorted(_FakeHandler.answers))
def test_cli_against_something_that_is_not_a_mixer(tmp_path: Path, home: Path, fake_server: Callable[[str], str], kind: str) -> None:
    url = fake_server(kind)
    for args in (("status",), ("journal",), ("check",), ("top", "--once"), ("activate", "x:v1.0.0"), ("reload",),
                 ("pause",), ("resume",)):
        result = _mixer_cli(home, tmp_path, url, *args, env={"FLUXMIX_API_TOKEN": "t"})
        assert result.returncode != 0, (args, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < MAX_ECHO, (args, result.stderr)
        assert "Traceback" not in result.stderr



def test_a_plugin_gear_calling_sys_exit_during_validation_is_a_problem() -> None:
    from typing import ClassVar

    from fluxmix.gears.base import Gear, Port
    from fluxmix.validation import validate_scenario

    class ExitsInCheck(Gear):
        outputs = (Port("out"),)
        config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

        @classmethod
        def check_config(cls, config: Any) -> list[tuple[str, str]]:
            sys.exit(4)

    class ExitsInPorts(ExitsInCheck):
        @classmethod
        def check_config(cls, config: Any) -> list[tuple[str, str]]:
            return []

        @classmethod
        def output_ports(cls, config: Any) -> tuple[Port, ...]:
            sys.exit(5)

    catalog = Catalog({"exits-in-check": ExitsInCheck, "exits-in-ports": ExitsInPorts})
    for kind in ("exits-in-check", "exits-in-ports"):
        problems = validate_scenario({"name": "p", "gears": [{"name": "g", "type": kind}]}, catalog=catalog)
        assert problems and "gears[0].config" in str(problems[0]), problems


def test_a_store_from_before_error_kind_gets_the_column_on_open(tmp_path: Path) -> None:
    import sqlite3
    from datetime import datetime, timezone

    from fluxmix.store import JournalEntry

    open_store(tmp_path / "home").close()
    db = sqlite3.connect(tmp_path / "home" / "index.sqlite3")
    db.execute("ALTER TABLE journal DROP COLUMN error_kind")  # what an older fluxmix created
    db.execute("DELETE FROM meta WHERE key = 'journal_error_kind'")
    db.commit()
    db.close()
    store = open_store(tmp_path / "home")
    try:
        entry = JournalEntry(ts=datetime.now(timezone.utc), trigger="api", ref="x:v1.0.0", from_hash=None,
                             to_hash=None, outcome="rejected", reason="no such scenario", error_kind="user")
        store.record_activation(entry)
        assert store.journal(limit=1)[0].error_kind == "user"
    finally:
        store.close()
