"""`python`: a gear written by the operator as a Python class, named `package.module:ClassName`.

Trust boundary: scenario text is never evaluated, and it never makes the process import a module
the operator did not allow. Importing runs a module's top-level code, so "installed" is not
enough (`venv.__main__` creates virtual environments, `this` prints to stdout). A module may be
imported only when it belongs to the top-level package of an installed `fluxmix.gears`
entry-point plugin, or when Python would load it from a directory on the operator's gears path
(`--gears-path` / FLUXMIX_GEARS_PATH). That is checked with importlib.util.find_spec before
anything is imported (a top-level lookup imports nothing), and `__main__` modules are refused
outright. Whatever an allowed module does at import or in its methods, SystemExit included, is
reported as a problem or a gear failure: no scenario ends the process.

Modules are imported once per process (Python's import cache): a reload of the scenario picks
up a changed `config`, but changed code needs a mixer restart.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar

import jsonschema

from fluxmix.errors import GearClassError, excerpt
from fluxmix.gears.base import Gear, Port
from fluxmix.message import Message
from fluxmix.schema_errors import describe as describe_schema_error

CLASS_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


GEARS_PATH_ENV = "FLUXMIX_GEARS_PATH"
PLUGIN_GROUP = "fluxmix.gears"
_configured_path: tuple[Path, ...] | None = None
T = TypeVar("T")


def configure_gears_path(dirs: Iterable[str | os.PathLike[str]] | None) -> None:
    """Set the operator's gears path (the CLIs' --gears-path); None falls back to FLUXMIX_GEARS_PATH."""
    global _configured_path
    _configured_path = None if dirs is None else _normalised(dirs)


def split_gears_path(values: Iterable[str]) -> list[str]:
    """`--gears-path a:b --gears-path c` and `FLUXMIX_GEARS_PATH=a:b` -> [a, b, c] (os.pathsep)."""
    return [part for value in values for part in value.split(os.pathsep) if part.strip()]


def gears_path() -> tuple[Path, ...]:
    """The directories python gears may be imported from (absolute, symlinks resolved)."""
    if _configured_path is not None:
        return _configured_path
    return _normalised(split_gears_path([os.environ.get(GEARS_PATH_ENV, "")]))


def _normalised(dirs: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(Path(os.path.expanduser(str(d))).resolve() for d in dirs))


@lru_cache(maxsize=1)
def plugin_packages() -> frozenset[str]:
    """Top-level packages of the installed `fluxmix.gears` entry-point plugins."""
    return frozenset(ep.value.split(":")[0].split(".")[0].strip() for ep in entry_points(group=PLUGIN_GROUP))


def _under(path: str | None, roots: tuple[Path, ...]) -> bool:
    if not path:
        return False
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(root) for root in roots)


def _spec_location(spec: Any) -> list[str]:
    locations = list(spec.submodule_search_locations or [])
    return [spec.origin] if spec.origin and spec.has_location else locations


def check_module_allowed(module_name: str) -> None:
    """Refuse (GearClassError) a module the operator did not allow, before importing anything."""
    parts = module_name.split(".")
    if "__main__" in parts:
        raise GearClassError(f"{excerpt(module_name)}: __main__ modules are never imported (they run a program)")
    roots = gears_path()
    for directory in roots:  # after the interpreter's own path: a gears dir never shadows a library
        if str(directory) not in sys.path:
            sys.path.append(str(directory))
    top = parts[0]
    if top in plugin_packages():
        return
    hint = (
        f"a python gear may only name a module of an installed {PLUGIN_GROUP} plugin or one under the gears path "
        f"(--gears-path / {GEARS_PATH_ENV}; now: {os.pathsep.join(map(str, roots)) or 'none'})"
    )
    try:
        spec = importlib.util.find_spec(top)  # a top-level lookup executes no module code
    except (ImportError, ValueError) as exc:
        raise GearClassError(f"cannot import {excerpt(module_name)}: {type(exc).__name__}: {exc}") from None
    if spec is None:
        raise GearClassError(f"cannot import {excerpt(module_name)}: ModuleNotFoundError: no module named {top!r} ({hint})")
    locations = _spec_location(spec)
    if not locations or not all(_under(location, roots) for location in locations):
        raise GearClassError(f"module {excerpt(module_name)} is not allowed: {hint}")


def guarded(what: str, call: Callable[[], T]) -> T:
    """Run operator code; SystemExit becomes an ordinary error so it cannot end the process."""
    try:
        return call()
    except SystemExit as exc:
        raise RuntimeError(f"{what} called sys.exit({exc.code!r})") from None


def load_gear_class(ref: str) -> type[Gear]:
    """Import `package.module:ClassName` (only from allowed modules) and check it is a Gear subclass."""
    if not isinstance(ref, str) or not CLASS_REF.match(ref):
        raise GearClassError(f"{excerpt(ref)} is not of the form package.module:ClassName")
    module_name, _, attr = ref.partition(":")
    check_module_allowed(module_name)
    try:
        obj: Any = guarded(f"importing {module_name}", lambda: importlib.import_module(module_name))
    except Exception as exc:  # ImportError, or the module itself failing (or exiting) at import
        raise GearClassError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    module_file = getattr(obj, "__file__", None)
    if module_name.split(".")[0] not in plugin_packages() and not _under(module_file, gears_path()):
        raise GearClassError(f"module {module_name!r} was not loaded from the gears path")
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
        return guarded(f"{inner.__qualname__}.input_ports", lambda: inner.input_ports(_inner_config(config))) if inner else ()

    @classmethod
    def output_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        inner = _try_load(config)
        return guarded(f"{inner.__qualname__}.output_ports", lambda: inner.output_ports(_inner_config(config))) if inner else ()

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
            found = guarded(f"{config['class']}.check_config", lambda: inner.check_config(inner_config))
        except Exception as exc:  # the operator's code: report, do not crash validation
            return [("config", f"{config['class']}.check_config failed: {type(exc).__name__}: {exc}")]
        return [(f"config.{path}" if path else "config", reason) for path, reason in found]

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.inner_class = load_gear_class(self.config["class"])
        self.inner: Gear = self.inner_class(name, _inner_config(self.config), ctx)

    # The runtime awaits these as gear code: a sys.exit() in them fails this gear, not the mixer.
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
