"""Global state as gears and expressions see it: one cached snapshot per scenario name.

Readers (`globals.get("threshold", 100)` in expressions, `ctx.globals.get` in gears) never touch
the database on the message path: they read a dict. Freshness bound:

- a write made through this process (the mixer's API, `fluxmix state`, a `set-global` gear)
  updates the snapshot before it returns, so the next message evaluated sees it;
- a write made by another process straight into the store (a second mixer on the same store)
  is seen within REFRESH_SECONDS: the mixer compares the store's change counter that often.

Writes are checked (key, JSON, size, and the scenario's `globals:` JSON Schema for that key)
before anything is written, then go to a `GlobalsBackend`: the store's SQL tables today, a NATS
KV bucket once mixers form a fleet. Concurrent writers: atomic per key, last writer wins per key,
writes to distinct keys never lose each other.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import jsonschema
from jsonschema.validators import validator_for

from fluxmix.errors import GlobalsError

REFRESH_SECONDS = 1.0


class GlobalsBackend(Protocol):
    """Where global values live (fluxmix.store.Store.globals implements it)."""

    def version(self, scenario: str) -> int: ...

    def snapshot(self, scenario: str) -> tuple[int, dict[str, Any]]: ...

    def set(self, scenario: str, key: str, value: Any, *, who: str, only_if_absent: bool = False,
            op: str = "set") -> tuple[Any, int | None]: ...

    def delete(self, scenario: str, key: str, *, who: str) -> tuple[Any, int | None]: ...

    def clear(self, scenario: str, *, who: str) -> int: ...


class MemoryBackend:
    """A backend without a store (in-process `fluxmix scenario test`, gear harnesses); nothing lasts."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self._version = 0
        self._lock = threading.Lock()

    def version(self, scenario: str) -> int:
        return self._version

    def snapshot(self, scenario: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            return self._version, dict(self._values.get(scenario, {}))

    def set(self, scenario: str, key: str, value: Any, *, who: str, only_if_absent: bool = False,
            op: str = "set") -> tuple[Any, int | None]:
        from fluxmix.store._globals import check_key, check_value  # the same bounds as the store

        check_key(key)
        value = check_value(key, value)
        with self._lock:
            values = self._values.setdefault(scenario, {})
            if only_if_absent and key in values:
                return values[key], None
            old = values.get(key)
            values[key] = value
            self._version += 1
            return old, self._version

    def delete(self, scenario: str, key: str, *, who: str) -> tuple[Any, int | None]:
        with self._lock:
            values = self._values.setdefault(scenario, {})
            if key not in values:
                return None, None
            self._version += 1
            return values.pop(key), self._version

    def clear(self, scenario: str, *, who: str) -> int:
        with self._lock:
            count = len(self._values.pop(scenario, {}))
            self._version += 1
            return count


class ScenarioGlobals:
    """One scenario name's global state: a snapshot for readers, checked writes through a backend.

    Read-only for readers: `get` hands out the snapshot's values, which writes replace, never mutate.
    """

    def __init__(self, scenario: str, backend: GlobalsBackend, declared: Mapping[str, Any] | None = None) -> None:
        self.scenario = scenario
        self.backend = backend
        self._values: dict[str, Any] = {}
        self._version = -1
        self._lock = threading.Lock()  # writes and refreshes: the snapshot follows the backend's order
        self._declared: Mapping[str, Any] = {}
        self._validators: dict[str, Any] = {}
        self.declare(declared or {})

    # ---- reading (the message path) ----

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def declared(self) -> dict[str, Any]:
        """The scenario's `globals:` declarations (initial, schema, description per key)."""
        return dict(self._declared)

    @property
    def version(self) -> int:
        return self._version

    # ---- the scenario's `globals:` section ----

    def declare(self, declared: Mapping[str, Any]) -> None:
        """Adopt a scenario's declarations (initial values, JSON Schema per key) for later writes."""
        validators = {}
        for key, spec in declared.items():
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            if schema is not None:
                cls = validator_for(schema, default=jsonschema.Draft202012Validator)
                validators[key] = cls(schema, format_checker=cls.FORMAT_CHECKER)
        self._declared, self._validators = dict(declared), validators

    def seed(self, *, who: str, declared: Mapping[str, Any] | None = None) -> None:
        """Write each declared initial value whose key has none yet; existing values are kept.

        `declared` (default: this object's declarations) must be validated already: its initial
        values were checked against their own schemas by the `globals:` section's validation.
        """
        from fluxmix.store._globals import check_value

        for key, spec in (self._declared if declared is None else declared).items():
            if isinstance(spec, Mapping) and "initial" in spec:
                self._write(key, check_value(key, spec["initial"]), who=who, only_if_absent=True, op="initial")
        self.refresh()

    def check(self, key: str, value: Any) -> None:
        """GlobalsError if `value` breaks the declared JSON Schema of `key` (bounds: the backend)."""
        validator = self._validators.get(key)
        if validator is None:
            return
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "".join(f"[{p!r}]" for p in error.absolute_path)
            raise GlobalsError(f"global {key}{where}: violates the scenario's schema: {error.message[:200]}")

    # ---- writing ----

    def set(self, key: str, value: Any, *, who: str, only_if_absent: bool = False, op: str = "set") -> Any:
        """Check, write, and update the snapshot; returns the old value (None if there was none)."""
        from fluxmix.store._globals import check_key, check_value  # one definition of the bounds

        value = check_value(check_key(key), value)  # also a private copy: the caller may mutate its own
        self.check(key, value)
        return self._write(key, value, who=who, only_if_absent=only_if_absent, op=op)

    def _write(self, key: str, value: Any, *, who: str, only_if_absent: bool, op: str) -> Any:
        with self._lock:
            old, change = self.backend.set(self.scenario, key, value, who=who, only_if_absent=only_if_absent, op=op)
            if change is not None:
                self._apply(change, key, value, present=True)
        return old

    def delete(self, key: str, *, who: str) -> tuple[Any, bool]:
        from fluxmix.store._globals import check_key

        check_key(key)
        with self._lock:
            old, change = self.backend.delete(self.scenario, key, who=who)
            if change is not None:
                self._apply(change, key, None, present=False)
        return old, change is not None

    def clear(self, *, who: str) -> int:
        with self._lock:
            count = self.backend.clear(self.scenario, who=who)
            self._refresh_locked()
        return count

    def _apply(self, change: int, key: str, value: Any, *, present: bool) -> None:
        if change != self._version + 1:  # someone else wrote in between: take the whole snapshot
            self._refresh_locked()
            return
        values = dict(self._values)  # readers keep the dict they hold: replace, never mutate
        if present:
            values[key] = value
        else:
            values.pop(key, None)
        self._values, self._version = values, change

    def refresh(self) -> bool:
        """Re-read the backend if it changed since the snapshot; True when it did."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        if self.backend.version(self.scenario) == self._version:
            return False
        self._version, self._values = self.backend.snapshot(self.scenario)
        return True


class GlobalsHub:
    """The mixer's ScenarioGlobals, one per scenario name, over one backend."""

    def __init__(self, backend: GlobalsBackend) -> None:
        self.backend = backend
        self._by_name: dict[str, ScenarioGlobals] = {}

    def for_scenario(self, name: str, declared: Mapping[str, Any] | None = None) -> ScenarioGlobals:
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = ScenarioGlobals(name, self.backend, declared)
        elif declared is not None:
            found.declare(declared)
        return found

    def refresh_all(self) -> None:
        for globals_ in list(self._by_name.values()):
            globals_.refresh()

    def versions(self) -> dict[str, int]:
        """Scenario name -> its snapshot's change counter (to tell watchers something moved)."""
        return {name: globals_.version for name, globals_ in list(self._by_name.items())}


# The globals of the scenario whose gear is running: set for each runtime's tasks (see
# Runtime.start), read by the expression function `globals.get`.
_CURRENT: contextvars.ContextVar[ScenarioGlobals | None] = contextvars.ContextVar("fluxmix_globals", default=None)


def current() -> ScenarioGlobals | None:
    return _CURRENT.get()


def use(globals_: ScenarioGlobals | None) -> contextvars.Token[ScenarioGlobals | None]:
    return _CURRENT.set(globals_)


def get_current(key: Any, default: Any = None) -> Any:
    """`globals.get(key, default)` in expressions: the running scenario's value, else default."""
    if not isinstance(key, str):
        raise TypeError(f"globals.get() takes a string key, not {type(key).__name__}")
    view = _CURRENT.get()
    return default if view is None else view.get(key, default)
