"""Memory footprint: VmRSS of a `fluxmix-mixer` process, idle (nothing to resume) and running
the 10-gear memory scenario; baseline: a bare Python interpreter doing nothing."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.fixtures import generate_config, relay_config
from bench.harness import Row, Stat
from bench.natsserver import free_port

GEARS = 10


def vm_rss(pid: int) -> int:
    """Resident set size in bytes, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settled_rss(pid: int, seconds: float = 1.0, samples: int = 5) -> int:
    values = []
    for _ in range(samples):
        time.sleep(seconds / samples)
        values.append(vm_rss(pid))
    return int(statistics.median(values))


def mixer_binary() -> str:
    path = Path(sysconfig.get_path("scripts")) / "fluxmix-mixer"
    return str(path) if path.exists() else (shutil.which("fluxmix-mixer") or "fluxmix-mixer")


def footprint_scenario(out: Path) -> bytes:
    """generate (100 msg/s) -> 8 x map -> file-out, on memory wires: built-in gears only, as a
    user would run it."""
    specs: list[dict[str, Any]] = [{"name": "source", "type": "generate", "config": generate_config(rate=100)}]
    specs += [{"name": f"relay{i}", "type": "map", "config": relay_config(i)} for i in range(1, GEARS - 1)]
    specs.append({"name": "sink", "type": "file-out", "config": {"path": str(out)}})
    wires = [{"from": f"{a['name']}.out", "to": f"{b['name']}.in", "transport": "memory"} for a, b in zip(specs, specs[1:])]
    return yaml.safe_dump({"name": "bench-footprint", "gears": specs, "wires": wires}, sort_keys=False).encode()


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _wait_http(proc: subprocess.Popen[bytes], base: str, path: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fluxmix-mixer exited with {proc.returncode}")
        try:
            status, body = _get(base + path)
            last = (status, body)
            if status == 200:
                return body
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base}{path} not ready within {timeout} s (last: {last})")


def mixer_rss(home: Path, ref: str | None, log: Path) -> tuple[int, dict[str, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [mixer_binary(), "--store", str(home), "--http", f"127.0.0.1:{port}", "--no-watch"]
    if ref:
        cmd += ["-s", ref]
    with open(log, "ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, "FLUXMIX_HOME": str(home)})
    try:
        _wait_http(proc, base, "/healthz")
        status: dict[str, Any] = {}
        if ref:
            _wait_http(proc, base, "/readyz")
            time.sleep(2.0)  # let the source run and the queues fill to their steady state
            _, status = _get(base + "/status")
        else:
            time.sleep(0.5)
        return settled_rss(proc.pid), status or {}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bare_python_rss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.3)
        return settled_rss(proc.pid, 0.5)
    finally:
        proc.kill()
        proc.wait()


async def run(ctx: Any) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="fluxmix-bench-footprint-"))
    try:
        scenario = tmp / "footprint.yaml"
        scenario.write_bytes(footprint_scenario(tmp / "out.jsonl"))
        idle, running, bare = Stat(), Stat(), Stat()
        for rep in range(1 if ctx.quick else 2):
            rss, _ = mixer_rss(tmp / f"home-idle-{rep}", None, tmp / "mixer.log")
            idle.samples.append(rss)
            rss, _ = mixer_rss(tmp / f"home-run-{rep}", str(scenario), tmp / "mixer.log")
            running.samples.append(rss)
            bare.samples.append(bare_python_rss())
            ctx.log(f"footprint: idle {idle.samples[-1] / 2**20:.1f} MiB, running {running.samples[-1] / 2**20:.1f} MiB")
        return [
            Row("footprint", "fluxmix-mixer RSS, idle", "B", False, idle, bare, "bare python"),
            Row("footprint", f"fluxmix-mixer RSS, {GEARS}-gear memory scenario", "B", False, running, bare,
                "bare python"),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
