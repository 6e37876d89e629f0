"""The issue-16 pipeline, three ways in one run: fluxmix on memory wires, a raw asyncio.Queue
chain doing the same work, and bytewax 0.21.1 (one worker, source batches of 256) when the
optional `bench` extra installed it.

    source of ~256 B dicts -> map (add a field) -> filter `amount > 100` -> JSON-lines file, one
    write per line

Every contender is timed the same way: N source messages / (last line written - first source
message made), in its own process or task set, start-up excluded.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.fixtures import seconds_until_written

CURRENCIES = ("EUR", "USD", "GBP")
NOTE = "x" * 180
ROOT = Path(__file__).resolve().parent.parent


def body(seq: int) -> dict[str, Any]:
    """~256 B as JSON; `amount > 100` keeps 60 % of them."""
    return {"amount": seq * 37 % 250, "currency": CURRENCIES[seq % 3], "note": NOTE, "seq": seq}


def kept(n: int) -> int:
    return sum(1 for s in range(1, n + 1) if s * 37 % 250 > 100)


def _payments_class() -> type:
    from fluxmix.gears.generate import Generate

    class Payments(Generate):
        """`generate` (checkpoints, ids from seq) with a per-seq body."""

        type = "bench-payments"

        def __init__(self, name: str, config: Any, ctx: Any) -> None:
            super().__init__(name, config, ctx)
            self._copy = self._make

        def _make(self, _template: Any) -> dict[str, Any]:
            made = body(self.next_seq)
            del made["seq"]  # generate sets it
            return made

    return Payments


SCENARIO = """name: {name}
gears:
  - {{name: src, type: bench-payments, config: {{count: {n}}}}}
  - {{name: enrich, type: map, config: {{set: {{cents: {{expr: "amount * 100"}}}}}}}}
  - {{name: large, type: filter, config: {{where: "amount > 100"}}}}
  - {{name: sink, type: file-out, config: {{path: "{out}"}}}}
wires:
  - {{from: src.out, to: enrich.in, transport: memory}}
  - {{from: enrich.out, to: large.in, transport: memory}}
  - {{from: large.out, to: sink.in, transport: memory}}
"""


async def fluxmix_rate(n: int, name: str) -> float:
    """Source msg/s of the pipeline in one Runtime on memory wires."""
    from fluxmix.gears.catalog import Catalog

    catalog = Catalog.default()
    catalog.register("bench-payments", _payments_class(), origin="bench")
    with tempfile.TemporaryDirectory(prefix="fluxmix-bench-pipe-") as tmp:
        text = SCENARIO.format(name=name, n=n, out=Path(tmp) / "out.jsonl")
        return n / await seconds_until_written(text.encode(), catalog, kept(n))


async def raw_rate(n: int, queue_size: int = 1024) -> float:
    """The same work in 4 tasks joined by asyncio.Queue(queue_size): the floor."""
    q1: asyncio.Queue[Any] = asyncio.Queue(queue_size)
    q2: asyncio.Queue[Any] = asyncio.Queue(queue_size)
    q3: asyncio.Queue[Any] = asyncio.Queue(queue_size)
    end = None

    async def source() -> None:
        for s in range(1, n + 1):
            await q1.put(body(s))
        await q1.put(end)

    async def enrich() -> None:
        while (b := await q1.get()) is not end:
            await q2.put({**b, "cents": b["amount"] * 100})
        await q2.put(end)

    async def large() -> None:
        while (b := await q2.get()) is not end:
            if b["amount"] > 100:
                await q3.put(b)
        await q3.put(end)

    async def sink(path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while (b := await q3.get()) is not end:
                os.write(fd, (json.dumps(b, separators=(",", ":")) + "\n").encode())
        finally:
            os.close(fd)

    with tempfile.TemporaryDirectory(prefix="fluxmix-bench-raw-") as tmp:
        t0 = time.perf_counter()
        await asyncio.gather(source(), enrich(), large(), sink(Path(tmp) / "out.jsonl"))
        return n / (time.perf_counter() - t0)


def bytewax_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("bytewax")
    except Exception:
        return None


def bytewax_rate(n: int, batch: int = 256) -> float:
    """Source msg/s of bench/bw_pipeline.py run by bytewax with one worker (a subprocess)."""
    with tempfile.TemporaryDirectory(prefix="fluxmix-bench-bw-") as tmp:
        stats = Path(tmp) / "stats.json"
        env = dict(os.environ, BW_N=str(n), BW_OUT=str(Path(tmp) / "out.jsonl"), BW_STATS=str(stats),
                   BW_BATCH=str(batch), PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "bytewax.run", "bench.bw_pipeline:flow", "-w", "1"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not stats.exists():
            raise RuntimeError(f"bytewax run failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
        figures = json.loads(stats.read_text())
        if figures["lines"] != kept(n):
            raise RuntimeError(f"bytewax wrote {figures['lines']} lines, expected {kept(n)}")
        return n / (figures["last"] - figures["first"])
