"""Validation at scale: parse + validate a generated scenario of 1,000 gears and 2,000 wires.

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
    return [
        Row("validation", "parse+validate 1,000 gears / 2,000 wires", "s", False, fx, raw, "yaml.safe_load",
            note=f"{len(data) / 1024:.0f} KiB of YAML")
    ]
