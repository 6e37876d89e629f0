"""The envelope every wire carries.

Memory wires pass the object itself; durable wires carry `encode()` bytes (msgpack), so the
envelope stays small and flat: plain str/float/dict values that round-trip through msgpack.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Mapping as _Mapping
from typing import Any, Iterable, Mapping

import msgpack

from fluxmix.errors import ReadOnlyBodyError, TransportError

_FIELDS = ("id", "body", "origin", "scenario", "ts", "headers")

# ---------------------------------------------------------------- read-only bodies

_READ_ONLY = (
    "message bodies are read-only (the same body goes to every gear on a fan-out): "
    "build a new one instead, e.g. {**message.body, \"field\": value} or dict(message.body)"
)


def _refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise ReadOnlyBodyError(_READ_ONLY)


class FrozenDict(dict):  # type: ignore[type-arg]
    """A read-only dict: what a body (and every mapping inside it) is once emitted.

    A dict subclass rather than a mapping proxy, so msgpack, json and `dict(body)` /
    `{**body}` take their C fast paths and gears read it like any dict. Copies (`dict(b)`,
    `b.copy()`, `copy.deepcopy(b)`, `b | other`) are ordinary mutable dicts. Build one with
    `freeze_body`, which freezes what is inside too.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(self)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class FrozenList(list):  # type: ignore[type-arg]
    """A read-only list: what a list (or tuple) inside a body becomes once emitted."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def copy(self) -> list[Any]:  # type: ignore[override]
        return list(self)

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.deepcopy(v, memo) for v in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


# What a wire can carry as is: msgpack's scalar types. Ints are range-checked (msgpack's 64 bits)
# only inside containers: a top-level int field beyond 64 bits is not looked for on the hot path
# (it passes a memory wire; a standard wire refuses it when encoding, failing that message).
_PLAIN = frozenset({str, float, bool, type(None), bytes, FrozenDict, FrozenList})
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_KEY_TYPES = frozenset({int, float, bool, type(None), bytes})
_FLAT = _PLAIN | {int}
_STR = frozenset({str})


def _freeze_value(value: Any, strict: bool = True) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        raise OverflowError(f"integer {value} does not fit in 64 bits")
    if isinstance(value, _Mapping):
        return _freeze_mapping(value, strict)
    if isinstance(value, (list, tuple)):
        return FrozenList([_freeze_value(v, strict) for v in value])
    # subclasses (str enums, IntEnum, numpy-free floats...) become the plain type msgpack sends
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _freeze_value(int(value))
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not strict:
        return value
    raise TypeError(f"can not serialize {kind.__name__!r} object")


def _freeze_mapping(body: Mapping[Any, Any], strict: bool = True) -> FrozenDict:
    frozen = FrozenDict(body)  # one shallow copy at C speed; what is inside is checked below
    if _FLAT.issuperset(map(type, frozen.values())) and _STR.issuperset(map(type, frozen)):
        return frozen  # the usual flat body with str keys, checked at C speed (ints: see _freeze_value)
    for key, value in frozen.items():
        kind = type(value)
        if kind in _FLAT and type(key) is str:  # the usual flat field (ints: see _freeze_value)
            continue
        if type(key) is not str and type(key) not in _KEY_TYPES and strict:
            raise TypeError(f"a {type(key).__name__} key can not be serialized")
        if kind not in _PLAIN and not (kind is int and _INT_MIN <= value <= _INT_MAX):
            dict.__setitem__(frozen, key, _freeze_value(value, strict))  # same key: iteration stays valid
    return frozen


def freeze_body(body: Mapping[str, Any], gear: str = "", port: str = "", *, strict: bool = True) -> FrozenDict:
    """`body` as a read-only FrozenDict (deeply), checked to be what a wire can carry.

    Done once per emit: every wire of a fan-out then shares the same body, and no gear can
    change what another sees. A body that is already frozen (a gear passing its input on) costs
    nothing. Raises TransportError naming the gear and port for a body msgpack could not encode;
    `strict=False` (test harnesses feeding a gear directly) keeps such values as they are.
    """
    if type(body) is FrozenDict:
        return body
    try:
        if type(body) is dict:
            return _freeze_mapping(body, strict)
        if not isinstance(body, _Mapping):
            raise TypeError(f"a body must be a mapping, not {type(body).__name__}")
        return _freeze_mapping(body, strict)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise TransportError(f"gear '{gear}' emitted on '{port}' a body that cannot be encoded: {exc}") from None


def freeze_changed(body: dict[str, Any], changed: Iterable[str], gear: str = "", port: str = "") -> FrozenDict:
    """`body` frozen when only the fields in `changed` may hold unfrozen values: the rest was
    copied from a body that was already frozen (a gear reshaping its input), so only those are
    checked and frozen instead of the whole body. Raises like freeze_body."""
    frozen = FrozenDict(body)
    try:
        for key in changed:
            if key in frozen:
                if type(key) is not str and type(key) not in _KEY_TYPES:
                    raise TypeError(f"a {type(key).__name__} key can not be serialized")
                dict.__setitem__(frozen, key, _freeze_value(frozen[key]))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise TransportError(f"gear '{gear}' emitted on '{port}' a body that cannot be encoded: {exc}") from None
    return frozen


def freeze_headers(headers: Mapping[str, str] | None) -> FrozenDict:
    """Headers as a read-only mapping (shared like bodies); no headers share one empty mapping."""
    if not headers:
        return NO_HEADERS
    if type(headers) is FrozenDict:
        return headers
    return FrozenDict(headers)


NO_HEADERS = FrozenDict()


class Message:
    """A unit of work moving along a wire.

    `id` is deterministic wherever possible (see `source_id`, `derived_id`) so a replay after a
    crash is recognised by JetStream's de-duplication instead of being delivered twice. A
    message emitted while handling another (`Message.derived`) hashes its id only when someone
    reads it (a durable wire, a de-duplicating sink, a log line): on an all-memory path nobody
    does, and hashing on every hop would cost ~0.6 us each.
    """

    __slots__ = ("_id", "_derive", "body", "origin", "scenario", "ts", "headers")

    def __init__(self, id: str, body: dict[str, Any], origin: str = "", scenario: str = "",
                 ts: float | None = None, headers: dict[str, str] | None = None) -> None:
        self._id: str | None = id
        self._derive: tuple[Message, str, str, int] | None = None
        self.body = body
        self.origin = origin  # "gear.port" that emitted it
        self.scenario = scenario  # sha256 hex of the scenario that emitted it
        self.ts = time.time() if ts is None else ts
        self.headers = {} if headers is None else headers

    @classmethod
    def derived(cls, parent: "Message", gear: str, port: str, index: int, body: dict[str, Any], origin: str,
                scenario: str, ts: float, headers: dict[str, str]) -> "Message":
        """A message whose id is `derived_id(parent.id, gear, port, index)`, computed when read
        (the parent's own id too, if it was derived: the chain is as short as the pipeline)."""
        message = cls.__new__(cls)
        message._id, message._derive = None, (parent, gear, port, index)
        message.body, message.origin, message.scenario, message.ts, message.headers = body, origin, scenario, ts, headers
        return message

    @property
    def id(self) -> str:
        found = self._id
        if found is None:
            found = self._resolve_id()
        return found

    def _resolve_id(self) -> str:
        """Hash the ids of the chain of derived messages up to the first with a known id, in one
        loop (a sink reading the id of a message three hops from its source would otherwise
        recurse through three properties); each keeps its id and lets go of its parent."""
        chain: list[Message] = []
        message = self
        while message._id is None:
            chain.append(message)
            message = message._derive[0]  # type: ignore[index]
        found: str = message._id
        for message in reversed(chain):
            _, gear, port, index = message._derive  # type: ignore[misc]
            found = message._id = _blake2b(f"{found}|{gear}|{port}|{index}".encode(), digest_size=12).hexdigest()
            message._derive = None  # and the parent is no longer kept alive
        return found

    @id.setter
    def id(self, value: str) -> None:
        self._id, self._derive = value, None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.id, self.body, self.origin, self.scenario, self.ts, self.headers) == (
            other.id, other.body, other.origin, other.scenario, other.ts, other.headers)

    __hash__ = None  # type: ignore[assignment]  # equal by value and mutable (body, headers): no hash

    def __repr__(self) -> str:
        return (f"Message(id={self.id!r}, body={self.body!r}, origin={self.origin!r}, "
                f"scenario={self.scenario!r}, ts={self.ts!r}, headers={self.headers!r})")

    def encode(self) -> bytes:
        return msgpack.packb(
            [self.id, self.body, self.origin, self.scenario, self.ts, self.headers],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> "Message":
        id_, body, origin, scenario, ts, headers = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return cls(id=id_, body=body, origin=origin, scenario=scenario, ts=ts, headers=headers)


def source_id(scenario_name: str, gear: str, position: int | str) -> str:
    """Id of a message a source emits at `position`: stable across restarts and reloads."""
    return f"{scenario_name}/{gear}/{position}"


def derived_id(parent_id: str, gear: str, port: str, index: int) -> str:
    """Id of the `index`-th message a gear emits on `port` while handling `parent_id`.

    Deterministic, so re-handling a redelivered message re-emits the same ids. Hashed to keep
    ids short however long the chain of gears is.
    """
    # Message._resolve_id spells it the same way, in a loop over a chain of derived messages
    return _blake2b(f"{parent_id}|{gear}|{port}|{index}".encode(), digest_size=12).hexdigest()


_blake2b = hashlib.blake2b
