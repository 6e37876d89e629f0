"""Store at scale: 100 names x 100 tags imported, then resolve / list / verify, then imports
from 4 processes at once into one store.

Baselines, all in this process on the same data:
- import: the atomic write the store must do anyway (temp file + fsync + rename), nothing else;
- resolve name:latest and list: the stdlib sqlite3 module on an equivalent table, picking the
  highest SemVer tag in Python (what the least a hand-written index would do);
- verify: hashlib.sha256 over the same bytes already in memory (no disk);
- 4 processes: the same harness with 1 process, so the ratio is the concurrent speed-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import semver

from bench.harness import Row, Stat, percentile

ROOT = Path(__file__).resolve().parent.parent


def scenario_bytes(name: str, tag: int) -> bytes:
    """A small, valid, distinct scenario file (~300 B) per (name, tag)."""
    return (
        f"name: {name}\n"
        f"version: 1.{tag}.0\n"
        f"description: benchmark scenario {name} number {tag}\n"
        "gears:\n"
        "  - name: source\n"
        "    type: generate\n"
        "    config: {}\n"
        "  - name: sink\n"
        "    type: log\n"
        "wires:\n"
        "  - from: source.out\n"
        "    to: sink.in\n"
        "    transport: memory\n"
    ).encode()


def corpus(names: int, tags: int, prefix: str = "bench") -> list[tuple[str, str, bytes]]:
    return [(f"{prefix}-{n:03d}", f"v1.{t}.0", scenario_bytes(f"{prefix}-{n:03d}", t)) for n in range(names) for t in range(tags)]


def import_all(home: Path, items: list[tuple[str, str, bytes]]) -> float:
    """Seconds to import every item into the store at `home`, one store instance."""
    from fluxmix.store import open_store

    store = open_store(home)
    try:
        t0 = time.perf_counter()
        for name, tag, data in items:
            store.import_bytes("scenario", data, name=name, tag=tag)
        return time.perf_counter() - t0
    finally:
        store.close()


def raw_atomic_writes(root: Path, items: list[tuple[str, str, bytes]]) -> float:
    """Seconds for the minimum durable write per item: temp file, fsync, rename, dir fsync."""
    root.mkdir(parents=True, exist_ok=True)
    dfd = os.open(root, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for _name, _tag, data in items:
            digest = hashlib.sha256(data).hexdigest()
            tmp = root / f".tmp-{digest}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, root / digest)
            os.fsync(dfd)
        return time.perf_counter() - t0
    finally:
        os.close(dfd)


def raw_index(path: Path, items: list[tuple[str, str, bytes]]) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tags (kind TEXT, name TEXT, tag TEXT, hash TEXT, size INT, PRIMARY KEY (kind, name, tag))")
    db.executemany(
        "INSERT INTO tags VALUES ('scenario', ?, ?, ?, ?)",
        [(n, t, hashlib.sha256(d).hexdigest(), len(d)) for n, t, d in items],
    )
    db.commit()
    return db


def raw_resolve_latest(db: sqlite3.Connection, name: str) -> str:
    rows = db.execute("SELECT tag, hash FROM tags WHERE kind = 'scenario' AND name = ?", (name,)).fetchall()
    return max(rows, key=lambda r: semver.Version.parse(r[0][1:]))[1]


def _spawn_workers(home: Path, parts: list[list[tuple[str, str, bytes]]], workdir: Path) -> tuple[float, int]:
    """Run one import worker process per part against the same store; returns (wall seconds
    from the common start signal to the last finish, items imported). Interpreter start-up
    and imports are excluded: workers load, say ready, then wait for "go" on stdin."""
    procs = []
    for i, part in enumerate(parts):
        spec = workdir / f"part{i}.json"
        spec.write_text(json.dumps([[n, t, d.decode()] for n, t, d in part]))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.store_worker", str(home), str(spec)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for p in procs:
            line = p.stdout.readline().strip() if p.stdout else ""
            if line != "ready":
                raise RuntimeError(f"store worker did not start: {line!r}")
        t0 = time.time()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"store worker exited {p.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        end = max(r["end"] for r in results)
        return end - t0, sum(r["count"] for r in results)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


async def run(ctx: Any) -> list[Row]:
    names, tags = (20, 25) if ctx.quick else (100, 100)
    items = corpus(names, tags)
    n = len(items)
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="fluxmix-bench-store-"))
    try:
        from fluxmix.store import open_store

        # ---- import N (one rep: 10k durable imports is the figure; the raw side is cheap)
        home = tmp / "home"
        ctx.log(f"store: importing {n} scenarios ({names} names x {tags} tags)")
        fx_s = import_all(home, items)
        raw_s = raw_atomic_writes(tmp / "raw-blobs", items)
        rows.append(
            Row("store", f"import {n} scenarios, 1 process", "imports/s", True,
                Stat([n / fx_s]), Stat([n / raw_s]), "temp+fsync+rename",
                note=f"{fx_s:.1f} s for {n}")
        )

        store = open_store(home)
        db = raw_index(tmp / "raw.sqlite3", items)
        try:
            # ---- resolve name:latest
            lookups = ctx.scale(2000, 300)
            rnd = random.Random(7)
            picks = [f"bench-{rnd.randrange(names):03d}" for _ in range(lookups)]
            expected = {name: hashlib.sha256(scenario_bytes(name, tags - 1)).hexdigest() for name in set(picks)}
            p50, p99, r50, r99 = Stat(), Stat(), Stat(), Stat()
            for _ in range(ctx.reps):
                fx_t, raw_t = [], []
                for name in picks:
                    t0 = time.perf_counter()
                    got = store.resolve(f"{name}:latest").hash
                    fx_t.append(time.perf_counter() - t0)
                    assert got == expected[name], (name, got)
                    t0 = time.perf_counter()
                    got = raw_resolve_latest(db, name)
                    raw_t.append(time.perf_counter() - t0)
                    assert got == expected[name]
                fx_t.sort()
                raw_t.sort()
                p50.samples.append(percentile(fx_t, 50))
                p99.samples.append(percentile(fx_t, 99))
                r50.samples.append(percentile(raw_t, 50))
                r99.samples.append(percentile(raw_t, 99))
            rows.append(Row("store", f"resolve name:latest p50 ({n} tags)", "s", False, p50, r50, "sqlite3 + semver"))
            rows.append(Row("store", f"resolve name:latest p99 ({n} tags)", "s", False, p99, r99, "sqlite3 + semver"))

            # ---- list every entry
            fx, raw = Stat(), Stat()
            for _ in range(ctx.reps):
                t0 = time.perf_counter()
                count = len(store.entries("scenario"))
                fx.samples.append(time.perf_counter() - t0)
                assert count == n, count
                t0 = time.perf_counter()
                count = len(db.execute("SELECT * FROM tags WHERE kind = 'scenario' ORDER BY name").fetchall())
                raw.samples.append(time.perf_counter() - t0)
            rows.append(Row("store", f"list all {n} entries", "s", False, fx, raw, "sqlite3 SELECT"))

            # ---- verify every blob
            blobs = [d for _n, _t, d in items]
            fx, raw = Stat(), Stat()
            for _ in range(ctx.reps):
                t0 = time.perf_counter()
                report = store.verify()
                fx.samples.append(time.perf_counter() - t0)
                assert report.ok and report.blobs_checked == n, report
                t0 = time.perf_counter()
                for d in blobs:
                    hashlib.sha256(d).hexdigest()
                raw.samples.append(time.perf_counter() - t0)
            rows.append(Row("store", f"verify {n} blobs", "s", False, fx, raw, "hashlib in memory"))
        finally:
            store.close()
            db.close()

        # ---- 4 processes at once vs 1 process, same harness, fresh stores
        per_proc = ctx.scale(500, 100)
        fx, raw = Stat(), Stat()
        for rep in range(1 if ctx.quick else 2):
            conc_items = corpus(4 * per_proc // 50, 50, prefix=f"conc{rep}")
            parts = [conc_items[i::4] for i in range(4)]
            wall4, count4 = _spawn_workers(tmp / f"conc4-{rep}", parts, tmp)
            assert count4 == len(conc_items)
            single = corpus(per_proc // 50, 50, prefix=f"single{rep}")
            wall1, count1 = _spawn_workers(tmp / f"conc1-{rep}", [single], tmp)
            fx.samples.append(count4 / wall4)
            raw.samples.append(count1 / wall1)
            ctx.log(f"store: 4 procs {count4 / wall4:.0f}/s, 1 proc {count1 / wall1:.0f}/s")
        rows.append(Row("store", "import rate, 4 processes at once", "imports/s", True, fx, raw, "1 process",
                        note="ratio = speed-up over one process"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
