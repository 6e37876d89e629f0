"""`python -m bench fleet`: a CPU-heavy map with 1, 2 and 3 fleet members on one machine.

Each member is a real `fluxmix-mixer --fleet` process with its own store and working directory,
on the bench's nats-server. The scenario is generate -> burn -> file-out on standard wires: the
source runs on the lease holder, `burn` (a python gear: `rounds` chained SHA-256 per message,
about a millisecond) competes for the durable wire on every member, and each member's file-out
claims message ids fleet-wide. Throughput is counted at the sinks (the union of the members'
files) between 5% and 100% of the messages, so start-up and the lease race are left out.

The raw baseline is the same `burn` in a plain Python loop, one core, no fluxmix: the ratio is
how many cores' worth of that loop the fleet delivers. On this 2-core machine a third member has
no core of its own; the 3-member row shows the per-member overhead instead of a speed-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Row, Stat

ROUNDS = 2000
MEMBERS = (1, 2, 3)
MIXERD = Path(sys.executable).parent / "fluxmix-mixer"

BURN_MODULE = '''\
"""A CPU-heavy map for the fleet bench: `rounds` chained SHA-256 of the seq."""
import hashlib

from fluxmix.gears import Gear, Port


def burn(seq, rounds):
    digest = str(seq).encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


class Burn(Gear):
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema = {"type": "object", "properties": {"rounds": {"type": "integer", "minimum": 1}}}

    async def handle(self, port, message):
        await self.ctx.emit("out", {**message.body, "digest": burn(message.body["seq"], self.config.get("rounds", 1))})
'''


def burn(seq: int, rounds: int) -> str:
    digest = str(seq).encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


def raw_rate(count: int, rounds: int) -> float:
    """msg/s of the same work in a plain loop on one core."""
    t0 = time.perf_counter()
    for seq in range(1, count + 1):
        burn(seq, rounds)
    return count / (time.perf_counter() - t0)


def scenario(name: str, count: int, rounds: int) -> str:
    return f"""\
name: {name}
gears:
  - name: source
    type: generate
    config: {{count: {count}, body: {{kind: bench}}}}
  - name: burn
    type: python
    config: {{class: "fleetburn:Burn", config: {{rounds: {rounds}}}}}
  - name: sink
    type: file-out
    config: {{path: out/bench.jsonl, envelope: true}}
wires:
  - {{from: source.out, to: burn.in}}
  - {{from: burn.out, to: sink.in}}
"""


def _lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
        except FileNotFoundError:
            pass
    return total


async def fleet_rate(nats_url: str, members: int, count: int, rounds: int, log: Any) -> float:
    """msg/s at the sinks of `members` fleet members, between 5% and 100% of `count`."""
    root = Path(tempfile.mkdtemp(prefix="fluxmix-bench-fleet-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        gears = root / "gears"
        gears.mkdir()
        (gears / "fleetburn.py").write_text(BURN_MODULE)
        file = root / "fleetbench.yaml"
        # A fresh fleet and scenario name (stream, consumers, message ids) per measurement: the same
        # ids again would be dropped by JetStream's duplicate window as repeats of the last run's.
        fleet = f"bench{secrets.token_hex(3)}"
        file.write_text(scenario(f"fleetbench-{fleet}", count, rounds))
        sinks = []
        for i in range(members):
            cwd = root / f"m{i}"
            (cwd / "home").mkdir(parents=True)
            sinks.append(cwd / "out" / "bench.jsonl")
            env = {**os.environ, "FLUXMIX_HOME": str(cwd / "home"), "FLUXMIX_GEARS_PATH": str(gears)}
            env.pop("FLUXMIX_NATS_URL", None)
            with open(cwd / "mixer.log", "wb") as out:
                procs.append(subprocess.Popen(
                    [str(MIXERD), "-s", str(file), "--no-http", "--no-watch", "--fleet", fleet,
                     "--fleet-member", f"m{i}", "--nats-url", nats_url, "--log-level", "warning"],
                    cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT))
        start_at, t_start = count // 20, None
        deadline = time.monotonic() + 600
        while True:
            done = _lines(sinks)
            now = time.monotonic()
            if t_start is None and done >= start_at:
                t_start, n_start = now, done
            if done >= count:
                break
            if now > deadline or any(p.poll() is not None for p in procs):
                tails = "".join((root / f"m{i}" / "mixer.log").read_text()[-600:] for i in range(members))
                raise RuntimeError(f"fleet of {members}: {done}/{count} after the deadline or a member exited: {tails}")
            await asyncio.sleep(0.05)
        rate = (done - n_start) / (now - t_start) if t_start is not None and now > t_start else float("nan")
        log(f"fleet of {members}: {rate:.0f} msg/s at the sinks")
        return rate
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


async def run(ctx: Any) -> list[Row]:
    count = ctx.scale(8000, 3000)
    url = await ctx.nats_url()
    raw = Stat()
    results = {n: Stat() for n in MEMBERS}
    for _ in range(ctx.reps):
        raw.samples.append(await asyncio.to_thread(raw_rate, min(count, 2000), ROUNDS))
        for n in MEMBERS:
            results[n].samples.append(await fleet_rate(url, n, count, ROUNDS, ctx.log))
    rows = []
    for n in MEMBERS:
        note = ""
        if n == 1:
            note = "one member: the per-message cost of a durable wire, a lease, a fleet claim and file-out next to the raw loop"
        elif n == 3:
            note = "more members than cores: expect no gain over 2 here (see RESULTS.md on bigger machines)"
        rows.append(Row("fleet", f"burn {ROUNDS} rounds, {n} member{'s' * (n > 1)}", "msg/s", True, results[n], raw,
                        "the same burn, plain loop, 1 core", note))
    return rows


if __name__ == "__main__":  # pragma: no cover - manual run: python -m bench.fleet NATS_URL
    async def _main() -> None:
        for n in MEMBERS:
            print(n, await fleet_rate(sys.argv[1], n, 3000, ROUNDS, print))
    asyncio.run(_main())
