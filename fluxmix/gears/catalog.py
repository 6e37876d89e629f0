"""The catalog of gear types: built-ins plus plugins from the `fluxmix.gears` entry-point group."""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Iterator

from fluxmix.gears.base import Gear

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fluxmix.gears"

# type name -> "module:Class"; imported on first use so `fluxmix scenario validate` stays fast.
BUILTINS: dict[str, str] = {
    "generate": "fluxmix.gears.generate:Generate",
    "map": "fluxmix.gears.transform:Map",
    "filter": "fluxmix.gears.transform:Filter",
    "route": "fluxmix.gears.transform:Route",
    "file-out": "fluxmix.gears.file_out:FileOut",
    "file-in": "fluxmix.gears.file_in:FileIn",
    "log": "fluxmix.gears.logsink:Log",
    "python": "fluxmix.gears.python:Python",
    "set-global": "fluxmix.gears.state:SetGlobal",
}


def _load(target: str) -> type[Gear]:
    module, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    if not (isinstance(obj, type) and issubclass(obj, Gear)):
        raise TypeError(f"{target} is not a fluxmix Gear subclass")
    return obj


class Catalog:
    """Maps type names to Gear classes. `Catalog.default()` is what the CLI and mixer use."""

    def __init__(self, types: dict[str, type[Gear]] | None = None) -> None:
        self._types: dict[str, type[Gear]] = dict(types or {})
        self.origins: dict[str, str] = {name: "custom" for name in self._types}

    @classmethod
    def default(cls) -> "Catalog":
        cat = cls()
        for name, target in BUILTINS.items():
            cat.register(name, _load(target), origin="built-in")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in cat._types:
                log.warning("plugin gear type %r from %s ignored: the name is taken", ep.name, ep.value)
                continue
            try:
                cat.register(ep.name, ep.load(), origin=f"plugin {ep.value}")
            except (Exception, SystemExit) as exc:  # a broken plugin must not take the whole tool down
                log.warning("plugin gear type %r from %s cannot be loaded: %s", ep.name, ep.value, exc)
        return cat

    def register(self, name: str, gear: type[Gear], origin: str = "custom") -> None:
        if not (isinstance(gear, type) and issubclass(gear, Gear)):
            raise TypeError(f"{gear!r} is not a fluxmix Gear subclass")
        self._types[name] = gear
        self.origins[name] = origin

    def get(self, name: str) -> type[Gear] | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[tuple[str, type[Gear]]]:
        return iter(sorted(self._types.items()))
