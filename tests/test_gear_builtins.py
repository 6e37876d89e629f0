"""Every built-in: well-formed declarations, and a pipeline of them on the real runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fluxmix.gears.catalog import BUILTINS, Catalog
from fluxmix.runtime import MemoryCheckpoints, Runtime
from fluxmix.scenario import Endpoint, GearSpec, Scenario, WireSpec
from fluxmix.transports.memory import MemoryBroker
from tests.support.polling import wait_until

CATALOG = Catalog.default()


@pytest.mark.parametrize("type_name", sorted(BUILTINS))
def test_declarations_are_complete(type_name: str) -> None:
    cls = CATALOG.get(type_name)
    assert cls is not None and cls.type == type_name
    assert cls.description and cls.__doc__
    schema = cls.config_schema
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    for prop, sub in schema["properties"].items():
        assert sub.get("description"), f"{type_name}.{prop} has no description (`fluxmix gears` prints them)"
    for port in (*cls.inputs, *cls.outputs):
        assert port.description, f"{type_name} port {port.name} has no description"



def scenario(gears: list[tuple[str, str, dict[str, Any]]], wires: list[tuple[str, str]], **options: Any) -> Scenario:
    def endpoint(text: str) -> Endpoint:
        gear, port = text.split(".")
        return Endpoint(gear, port)

    return Scenario(
        name="pipeline",
        gears=tuple(GearSpec(n, t, c) for n, t, c in gears),
        wires=tuple(WireSpec(endpoint(a), endpoint(b), "memory", dict(options)) for a, b in wires),
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def run_until_written(scen: Scenario, checkpoints: MemoryCheckpoints, done: Any) -> None:
    rt = Runtime(scen, "a" * 64, catalog=CATALOG, brokers={"memory": MemoryBroker(queue_size=4)}, checkpoints=checkpoints)
    await rt.build()
    await rt.start()
    try:
        await wait_until(done, "the sinks to be written")
    finally:
        await rt.stop()


async def test_generate_map_filter_route_file_out_on_the_runtime(tmp_path: Path) -> None:
    big, small, rejected = tmp_path / "big.jsonl", tmp_path / "small.jsonl", tmp_path / "rejected.jsonl"
    scen = scenario(
        [
            ("src", "generate", {"count": 40, "body": {"currency": "EUR"}}),
            ("price", "map", {"set": {"amount": {"expr": "seq * 10"}, "source": "gen"}, "drop": ["currency"]}),
            ("even", "filter", {"where": "seq % 2 == 0"}),
            ("split", "route", {"routes": {"big": "amount >= 200"}}),
            ("big", "file-out", {"path": str(big)}),
            ("small", "file-out", {"path": str(small)}),
            ("odd", "file-out", {"path": str(rejected)}),
            ("show", "log", {"level": "debug"}),
        ],
        [
            ("src.out", "price.in"),
            ("price.out", "even.in"),
            ("even.out", "split.in"),
            ("even.rejected", "odd.in"),
            ("split.big", "big.in"),
            ("split.default", "small.in"),
            ("split.default", "show.in"),
        ],
    )
    cps = MemoryCheckpoints()
    await run_until_written(scen, cps, lambda: len(lines(big)) + len(lines(small)) + len(lines(rejected)) == 40)
    assert [b["seq"] for b in lines(big)] == list(range(20, 41, 2))
    assert [b["seq"] for b in lines(small)] == list(range(2, 19, 2))
    assert [b["seq"] for b in lines(rejected)] == list(range(1, 40, 2))
    assert lines(big)[0] == {"seq": 20, "amount": 200, "source": "gen"}
    assert cps.values[("pipeline", "src")] == 41


async def test_file_in_to_file_out_resumes_on_the_runtime(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(5)))
    scen = scenario(
        [("read", "file-in", {"path": str(src), "follow": True, "poll_interval": 0.01}), ("write", "file-out", {"path": str(dst)})],
        [("read.out", "write.in")],
    )
    cps = MemoryCheckpoints()
    await run_until_written(scen, cps, lambda: len(lines(dst)) == 5)
    with open(src, "a") as f:
        f.write(json.dumps({"n": 5}) + "\n")
    await run_until_written(scen, cps, lambda: len(lines(dst)) == 6)  # a restart reads only the new line
    assert [b["n"] for b in lines(dst)] == list(range(6))
    assert cps.values[("pipeline", "read")] == src.stat().st_size


async def test_python_source_runs_on_the_runtime(tmp_path: Path) -> None:
    dst = tmp_path / "out.jsonl"
    scen = scenario(
        [
            ("cd", "python", {"class": "test_gear_python:Countdown", "config": {"start": 4}}),
            ("write", "file-out", {"path": str(dst)}),
        ],
        [("cd.out", "write.in")],
    )
    await run_until_written(scen, MemoryCheckpoints(), lambda: len(lines(dst)) == 4)
    assert [b["n"] for b in lines(dst)] == [4, 3, 2, 1]


async def test_an_expression_that_fails_sends_the_message_to_the_error_port(tmp_path: Path) -> None:
    ok, errors = tmp_path / "ok.jsonl", tmp_path / "errors.jsonl"
    scen = scenario(
        [
            ("src", "generate", {"count": 6}),
            ("calc", "map", {"set": {"x": {"expr": "10 // (seq % 3)"}}}),
            ("ok", "file-out", {"path": str(ok)}),
            ("errors", "file-out", {"path": str(errors), "envelope": True}),
        ],
        [("src.out", "calc.in"), ("calc.out", "ok.in"), ("calc.error", "errors.in")],
        max_deliver=2,
        retry_delay=0,
    )
    await run_until_written(scen, MemoryCheckpoints(), lambda: len(lines(ok)) + len(lines(errors)) == 6)
    assert [b["seq"] for b in lines(ok)] == [1, 2, 4, 5]
    failed = lines(errors)
    assert [r["body"]["seq"] for r in failed] == [3, 6]
    assert "set.x: '10 // (seq % 3)': integer division or modulo by zero" in failed[0]["headers"]["error"]
