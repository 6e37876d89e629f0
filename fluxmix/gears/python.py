"""`python`: a gear written by the operator as a Python class, named `package.module:ClassName`.

Trust boundary: scenario text is never evaluated. The gear imports a module by name from
sys.path, which the operator controls (installed packages, PYTHONPATH); a scenario can only pick
among code that is already installed. For code that should be shared, prefer a plugin package
with a `fluxmix.gears` entry point; this gear is for one-off classes.

Modules are imported once per process (Python's import cache): a reload of the scenario picks
up a changed `config`, but changed code needs a mixer restart.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, ClassVar, Mapping, Sequence

import jsonschema

from fluxmix.errors import GearClassError
from fluxmix.gears.base import Gear, Port
from fluxmix.message import Message
from fluxmix.schema_errors import describe as describe_schema_error

CLASS_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def load_gear_class(ref: str) -> type[Gear]:
    """Import `package.module:ClassName` and check it is a Gear subclass."""
    if not isinstance(ref, str) or not CLASS_REF.match(ref):
        raise GearClassError(f"{ref!r} is not of the form package.module:ClassName")
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing at import
        raise GearClassError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise GearClassError(f"module {module_name!r} has no {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, Gear)):
        raise GearClassError(f"{ref} is not a Gear subclass (fluxmix.gears.Gear)")
    return obj


def _try_load(config: Mapping[str, Any]) -> type[Gear] | None:
    try:
        return load_gear_class(config.get("class"))  # type: ignore[arg-type]
    except GearClassError:
        return None


def _inner_config(config: Mapping[str, Any]) -> dict[str, Any]:
    inner = config.get("config") if isinstance(config, Mapping) else None
    return dict(inner) if isinstance(inner, Mapping) else {}


class Python(Gear):
    """Runs the operator's Gear subclass; its ports and config schema are that class's own."""

    type = "python"
    description = "Run a Gear subclass you provide, named package.module:ClassName (importable on the mixer's sys.path)."
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["class"],
        "properties": {
            "class": {
                "type": "string",
                "pattern": CLASS_REF.pattern,
                "description": "The gear class as package.module:ClassName; imported by name from sys.path, never evaluated.",
            },
            "config": {
                "type": "object",
                "default": {},
                "description": "Configuration passed to that class, checked against its own config_schema and check_config.",
            },
        },
    }

    def __new__(cls, name: str, config: Mapping[str, Any], ctx: Any) -> "Python":
        # `Gear.is_source()` looks at the class, so a wrapped source needs a class whose run()
        # delegates, and a wrapped transform one whose run() is Gear's.
        if cls is Python:
            inner = _try_load(config)
            if inner is not None and inner.is_source():
                return super().__new__(_PythonSource)
        return super().__new__(cls)

    @classmethod
    def input_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        inner = _try_load(config)
        return inner.input_ports(_inner_config(config)) if inner else ()

    @classmethod
    def output_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        inner = _try_load(config)
        return inner.output_ports(_inner_config(config)) if inner else ()

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        try:
            inner = load_gear_class(config.get("class"))  # type: ignore[arg-type]
        except GearClassError as exc:
            return [("class", str(exc))]
        inner_config = _inner_config(config)
        problems: list[tuple[str, str]] = []
        try:
            validator_cls = jsonschema.validators.validator_for(inner.config_schema)
            validator_cls.check_schema(inner.config_schema)
            validator = validator_cls(inner.config_schema)
        except jsonschema.SchemaError as exc:
            return [("class", f"{config['class']} has an invalid config_schema: {exc.message}")]
        for err in sorted(validator.iter_errors(inner_config), key=lambda e: list(e.absolute_path)):
            where = ".".join(["config", *(str(p) for p in err.absolute_path)])
            problems.append((where, describe_schema_error(err)))
        if problems:
            return problems
        try:
            found = inner.check_config(inner_config)
        except Exception as exc:  # the operator's code: report, do not crash validation
            return [("config", f"{config['class']}.check_config failed: {type(exc).__name__}: {exc}")]
        return [(f"config.{path}" if path else "config", reason) for path, reason in found]

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.inner_class = load_gear_class(self.config["class"])
        self.inner: Gear = self.inner_class(name, _inner_config(self.config), ctx)

    async def start(self) -> None:
        await self.inner.start()

    async def handle(self, port: str, message: Message) -> None:
        await self.inner.handle(port, message)

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        await self.inner.handle_batch(port, messages)

    async def flush(self) -> None:
        await self.inner.flush()

    def flushes(self) -> bool:
        return self.inner.flushes()

    async def stop(self) -> None:
        await self.inner.stop()


class _PythonSource(Python):
    """A `python` gear whose class is a source: run() is delegated too."""

    async def run(self) -> None:
        await self.inner.run()
