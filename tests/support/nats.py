"""Real nats-server fixtures (never a mock): one server, or a three-node JetStream cluster.

- `nats_url`: $NATS_URL when set (tests then isolate by unique scenario/stream names), else an
  embedded server (fluxmix.transports.embedded.EmbeddedNats) on a temp dir and a free port.
- `nats_embedded`: always our own EmbeddedNats, for tests that stop/start/kill the server.
- `nats_cluster`: three nats-server processes with routes and JetStream, started from the
  operator configs in deploy/nats/node-{1,2,3}.conf with free ports and temp store dirs.
- `unique_name`: a scenario name no other test (or earlier run on a shared NATS_URL) uses;
- `restartable_nats_server`: a plain server a test stops and starts again on the same port.

A server that cannot start FAILS the test under CI=true and skips it otherwise, so a CI run can
never pass by silently skipping the NATS tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from fluxmix.errors import NatsUnavailableError
from fluxmix.transports.embedded import EmbeddedNats, find_nats_server
from tests.support.polling import block_until
from tests.support.ports import reserve_port

DEPLOY_NATS = Path(__file__).resolve().parents[2] / "deploy" / "nats"


def nats_unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"nats-server unavailable under CI: {reason}")
    pytest.skip(f"nats-server unavailable: {reason}")


def pid_alive(pid: int) -> bool:
    """Running. A zombie counts as gone: the servers tests watch are usually another process's
    children (a mixer subprocess's), so waitpid cannot reap them and /proc must tell."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.fixture
def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def embedded_server(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, str]]:
    """Our own EmbeddedNats under tmp_path and its URL, stopped on the way out."""
    server = EmbeddedNats(tmp_path / "nats")
    try:
        url = await server.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    try:
        yield server, url
    finally:
        await server.stop()


@pytest.fixture
async def nats_embedded(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    async with embedded_server(tmp_path) as (server, _):
        yield server


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    external = os.environ.get("NATS_URL")
    if external:
        yield external
        return
    async with embedded_server(tmp_path) as (_, url):
        yield url


# the brief's name for it
nats_server = nats_url


def restartable_nats_server(tmp_path: Path) -> tuple[int, Callable[[], subprocess.Popen[bytes]]]:
    """A plain nats-server (JetStream) on a reserved port and a store dir under tmp_path, for tests
    that stop it (an outage) and start it again where clients expect it: (port, start), where
    start() returns the process once it accepts connections. The test stops and kills it."""
    try:
        binary = find_nats_server()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    port = reserve_port()
    cmd = [str(binary), "-js", "-sd", str(tmp_path / "nats-store"), "-a", "127.0.0.1", "-p", str(port)]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"nats-server on port {port} exited with {proc.returncode}")
            with contextlib.closing(socket.socket()) as sock:
                sock.settimeout(0.5)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        block_until(accepting, f"nats-server on port {port}")
        return proc

    return port, start


# --- three-node cluster --------------------------------------------------------------------------


@dataclass
class NatsNode:
    index: int
    config: Path
    client_port: int
    http_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


@dataclass
class NatsCluster:
    """Three nodes; `kill(i)` (SIGKILL), `stop(i)` (SIGTERM), `start(i)` by index 0..2."""

    nodes: list[NatsNode]
    binary: Path
    _all: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, i: int) -> None:
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            return
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(
                [str(self.binary), "-c", str(node.config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        self._all.append(node.proc)

    def kill(self, i: int) -> None:
        self._signal(i, signal.SIGKILL)

    def stop(self, i: int) -> None:
        self._signal(i, signal.SIGTERM)

    def _signal(self, i: int, sig: int) -> None:
        proc = self.nodes[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def healthy(self, i: int) -> bool:
        """JetStream healthy on node i (in a cluster this includes a known meta leader)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.nodes[i].http_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_healthy(self, indexes: list[int] | None = None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(range(len(self.nodes)) if indexes is None else indexes)
        while pending and time.monotonic() < deadline:
            pending = [i for i in pending if not self.healthy(i)]
            for i in pending:
                proc = self.nodes[i].proc
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"node {i + 1} exited: {self.nodes[i].log.read_text()[-2000:]}")
            if pending:
                time.sleep(0.1)
        if pending:
            raise TimeoutError(f"nodes {[i + 1 for i in pending]} not healthy within {timeout}s")

    def close(self) -> None:
        for proc in self._all:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def render_node_config(template: str, ports: dict[int, int], store_dir: Path) -> str:
    """deploy/nats/node-N.conf with its fixed loopback ports mapped to free ones and a temp store."""
    text = re.sub(r":(\d{4})\b", lambda m: f":{ports.get(int(m.group(1)), int(m.group(1)))}", template)
    return re.sub(r'store_dir:\s*"[^"]*"', f'store_dir: "{store_dir}"', text)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    try:
        binary = find_nats_server()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    fixed = [4222, 4223, 4224, 6222, 6223, 6224, 8222, 8223, 8224]
    ports = dict(zip(fixed, (reserve_port() for _ in fixed)))
    nodes = []
    for i in (1, 2, 3):
        template = (DEPLOY_NATS / f"node-{i}.conf").read_text()
        config = tmp_path / f"node-{i}.conf"
        config.write_text(render_node_config(template, ports, tmp_path / f"store-{i}"))
        nodes.append(
            NatsNode(i - 1, config, ports[4221 + i], ports[8221 + i], tmp_path / f"node-{i}.log")
        )
    cluster = NatsCluster(nodes, binary)
    try:
        for i in range(3):
            cluster.start(i)
        try:
            cluster.wait_healthy()
        except (RuntimeError, TimeoutError) as exc:
            nats_unavailable(f"cluster did not come up: {exc}")
        yield cluster
    finally:
        cluster.close()
