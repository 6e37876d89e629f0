"""`python`: the operator's Gear class by name; ports, config and lifecycle are that class's."""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Mapping

import pytest

from fluxmix.gears.base import Gear, Port
from fluxmix.gears.python import Python, load_gear_class
from fluxmix.gears.testing import GearHarness, config_problems
from fluxmix.message import Message

# ---- classes the tests name as f"{HERE}:Class" (this module is on sys.path under pytest) ----

HERE = __name__
EVENTS: list[str] = []


class Scale(Gear):
    """A transform with its own config schema and check."""

    type = "scale"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"), Port("negative"))
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["factor"],
        "properties": {"factor": {"type": "number"}},
    }

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("factor", "must not be zero")] if config.get("factor") == 0 else []

    async def start(self) -> None:
        EVENTS.append(f"start {self.name}")

    async def handle(self, port: str, message: Message) -> None:
        value = message.body["x"] * self.config["factor"]
        await self.ctx.emit("out" if value >= 0 else "negative", {"x": value})

    async def stop(self) -> None:
        EVENTS.append(f"stop {self.name}")


class Countdown(Gear):
    """A source."""

    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"start": {"type": "integer"}}}

    async def run(self) -> None:
        for n in range(self.config.get("start", 3), 0, -1):
            if self.ctx.stopping.is_set():
                return
            await self.ctx.emit("out", {"n": n}, position=n)


class Dynamic(Gear):
    """Ports that depend on config, like `route`."""

    @classmethod
    def input_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        return tuple(Port(n) for n in config.get("ins", []))

    @classmethod
    def output_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        return tuple(Port(n) for n in config.get("outs", []))

    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}


class BrokenCheck(Gear):
    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        raise RuntimeError("boom")


class BadSchema(Gear):
    config_schema: ClassVar[dict[str, Any]] = {"type": "no-such-type"}


class NotAGear:
    pass


class Committing(Gear):
    """A sink with a flush hook, like file-out."""

    inputs = (Port("in", required=True),)

    async def handle(self, port: str, message: Message) -> None:
        EVENTS.append(f"handle {message.body['x']}")

    async def flush(self) -> None:
        EVENTS.append("flush")


# ---- tests ----


async def test_delegates_lifecycle_and_handle() -> None:
    EVENTS.clear()
    async with GearHarness("python", {"class": f"{HERE}:Scale", "config": {"factor": 2}}, name="sc") as h:
        assert await h.send({"x": 3}) == {"out": [{"x": 6}]}
        assert await h.send({"x": -1}) == {"negative": [{"x": -2}]}
        assert isinstance(h.gear.inner, Scale) and h.gear.inner.config == {"factor": 2}
    assert EVENTS == ["start sc", "stop sc"]


async def test_a_wrapped_source_is_a_source() -> None:
    h = GearHarness("python", {"class": f"{HERE}:Countdown", "config": {"start": 3}}, name="cd")
    assert h.gear.is_source()  # decided per instance: the wrapped class is a source
    assert await h.run_source() == [{"n": 3}, {"n": 2}, {"n": 1}]
    assert [m.id for m in h.ctx.emitted["out"]] == ["test/cd/3", "test/cd/2", "test/cd/1"]


def test_a_wrapped_transform_is_not_a_source() -> None:
    h = GearHarness("python", {"class": f"{HERE}:Scale", "config": {"factor": 1}})
    assert not h.gear.is_source()
    assert not Python.is_source()


def test_ports_are_the_user_class_ports() -> None:
    config = {"class": f"{HERE}:Scale", "config": {"factor": 1}}
    assert [p.name for p in Python.input_ports(config)] == ["in"]
    assert Python.input_ports(config)[0].required
    assert [p.name for p in Python.output_ports(config)] == ["out", "negative", "error"]
    dyn = {"class": f"{HERE}:Dynamic", "config": {"ins": ["a", "b"], "outs": ["c"]}}
    assert [p.name for p in Python.input_ports(dyn)] == ["a", "b"]
    assert [p.name for p in Python.output_ports(dyn)] == ["c"]
    assert Python.input_ports({"class": "no.such:Thing"}) == ()
    assert Python.output_ports({}) == ()


def test_nested_class_names_resolve() -> None:
    assert load_gear_class(f"{HERE}:Scale") is Scale


@pytest.mark.parametrize(
    ("config", "location", "reason"),
    [
        ({}, "config", "'class' is a required property"),
        ({"class": "not a ref"}, "config.class", "does not match"),
        ({"class": "os.path"}, "config.class", "does not match"),
        ({"class": "no_such_module_xyz:Gear"}, "config.class", "cannot import 'no_such_module_xyz': ModuleNotFoundError"),
        ({"class": f"{HERE}:Missing"}, "config.class", "has no 'Missing'"),
        ({"class": f"{HERE}:NotAGear"}, "config.class", "is not a Gear subclass"),
        ({"class": "os:getcwd"}, "config.class", "is not allowed: a python gear may only name a module"),
        ({"class": f"{HERE}:Scale"}, "config.config", "'factor' is a required property"),
        ({"class": f"{HERE}:Scale", "config": {"factor": "x"}}, "config.config.factor", "is not of type 'number'"),
        ({"class": f"{HERE}:Scale", "config": {"factor": 0}}, "config.config.factor", "must not be zero"),
        ({"class": f"{HERE}:BrokenCheck"}, "config.config", "check_config failed: RuntimeError: boom"),
        ({"class": f"{HERE}:BadSchema"}, "config.class", "has an invalid config_schema"),
        ({"class": f"{HERE}:Scale", "config": {"factor": 1}, "extra": 1}, "config", "Additional properties"),
    ],
)
def test_config_problems(config: dict, location: str, reason: str) -> None:
    problems = config_problems(Python, config)
    assert len(problems) == 1, problems
    assert problems[0].location == location
    assert reason in problems[0].reason


def test_a_module_that_fails_at_import_is_reported_not_raised(tmp_path, monkeypatch) -> None:
    (tmp_path / "explodes_on_import.py").write_text("raise RuntimeError('bad module')\n")
    monkeypatch.setenv("FLUXMIX_GEARS_PATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    (problem,) = config_problems(Python, {"class": "explodes_on_import:X"})
    assert problem.reason == "cannot import 'explodes_on_import': RuntimeError: bad module"
    sys.modules.pop("explodes_on_import", None)


def test_class_text_is_imported_never_evaluated() -> None:
    for text in ("__import__('os'):system", "os:system('true')", "x;import os:Y"):
        (problem,) = config_problems(Python, {"class": text})
        assert problem.location == "config.class"


async def test_delegates_the_flush_hook_only_when_the_class_has_one() -> None:
    EVENTS.clear()
    async with GearHarness("python", {"class": f"{HERE}:Committing"}) as h:
        assert h.gear.flushes()
        await h.send({"x": 1})  # the harness flushes after handle, as the runtime does before an ack
    assert EVENTS == ["handle 1", "flush"]
    async with GearHarness("python", {"class": f"{HERE}:Scale", "config": {"factor": 2}}) as h:
        assert not h.gear.flushes()  # so the runtime skips it on the hot path
