"""Validation at scale: parse + validate a generated scenario of 1,000 gears and 2,000 wires, and
a hostile one: 10,000 gears (scaled down with --quick) and 600 wires to undefined gears, each of
which asks "did you mean" (issue 8: that took minutes when every gear name was compared).

Baseline: PyYAML's safe_load of the same bytes (the least any loader does: the validation
on top of it is what the ratio shows).
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from bench.fixtures import generate_config, relay_config
from bench.harness import Row, Stat


def big_scenario(gears: int = 1000, wires: int = 2000) -> bytes:
    """A DAG: a generate source, `gears - 2` map relays, a log sink. Wires go from each gear to
    the next, then to the one after next, then three steps ahead... until `wires` are placed
    (several wires may feed one input port: fan-in; never a cycle, never a duplicate)."""
    names = [f"g{i:04d}" for i in range(gears)]
    specs: list[dict[str, Any]] = [{"name": names[0], "type": "generate", "config": generate_config()}]
    specs += [{"name": n, "type": "map", "config": relay_config(i)} for i, n in enumerate(names[1:-1], start=1)]
    specs.append({"name": names[-1], "type": "log", "config": {}})
    out: list[dict[str, Any]] = []
    step = 1
    while len(out) < wires:
        for i in range(gears - step):
            if len(out) == wires:
                break
            out.append({"from": f"{names[i]}.out", "to": f"{names[i + step]}.in", "transport": "memory"})
        step += 1
    doc = {"name": "bench-validation", "description": f"{gears} gears, {wires} wires", "gears": specs, "wires": out}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def misspelt_scenario(gears: int, bad_wires: int) -> bytes:
    """A source fanning out to `gears` log sinks, plus `bad_wires` wires to gears that do not exist."""
    lines = ["name: bench-misspelt", "gears:", "  - {name: src, type: generate}"]
    lines += [f"  - {{name: gear-{i:05d}, type: log}}" for i in range(gears)]
    lines.append("wires:")
    lines += [f"  - {{from: src.out, to: gear-{i:05d}.in, transport: memory}}" for i in range(gears)]
    lines += [f"  - {{from: src.out, to: missing-{i:05d}.in, transport: memory}}" for i in range(bad_wires)]
    return ("\n".join(lines) + "\n").encode()


async def run(ctx: Any) -> list[Row]:
    from fluxmix.gears.catalog import Catalog
    from fluxmix.loading import parse_scenario

    data = big_scenario()
    catalog = Catalog.default()
    # one warm-up so lazy imports and schema compilation are not billed to the first rep
    scenario = parse_scenario(data, "bench-validation.yaml", catalog=catalog)
    assert len(scenario.gears) == 1000 and len(scenario.wires) == 2000
    fx, raw = Stat(), Stat()
    for _ in range(ctx.reps):
        t0 = time.perf_counter()
        parse_scenario(data, "bench-validation.yaml", catalog=catalog)
        fx.samples.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        yaml.safe_load(data)
        raw.samples.append(time.perf_counter() - t0)
    rows = [
        Row("validation", "parse+validate 1,000 gears / 2,000 wires", "s", False, fx, raw, "yaml.safe_load",
            note=f"{len(data) / 1024:.0f} KiB of YAML")
    ]
    return rows + [_misspelt(ctx, catalog)]


def _misspelt(ctx: Any, catalog: Any) -> Row:
    from fluxmix.errors import ValidationError
    from fluxmix.loading import parse_scenario

    gears, bad = ctx.scale(10_000, 2_000), 600
    data = misspelt_scenario(gears, bad)
    fx, raw = Stat(), Stat()
    for _ in range(ctx.reps):
        t0 = time.perf_counter()
        try:
            parse_scenario(data, "bench-misspelt.yaml", catalog=catalog)
        except ValidationError as error:
            assert len(error.problems) == bad and "did you mean" in error.problems[0].reason
        else:
            raise AssertionError("the misspelt scenario validated")
        fx.samples.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        yaml.safe_load(data)
        raw.samples.append(time.perf_counter() - t0)
    return Row("validation", f"parse+validate {gears:,} gears, {bad} wires to undefined gears", "s", False, fx, raw,
               "yaml.safe_load", note=f"{len(data) / 1024:.0f} KiB of YAML; every bad wire gets a 'did you mean'")
