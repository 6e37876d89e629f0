"""The typed status model: what the runtime, its wires and the brokers report about themselves.

Producers (`Runtime.status()`, each gear slot, `Wire.status()`, `Broker.status()`) build these
objects; consumers (the HTTP API, Prometheus metrics, the event stream, expectations, the CLI)
read typed fields instead of guessing dict keys. `to_json()` gives the documented JSON shapes of
`GET /status`, so clients of the API see the same documents as before the model existed.

This module is a leaf: it imports nothing from fluxmix, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol


def _flat(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dataclass's own fields as a dict, in declaration order (shallow: no deep copies)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.name not in skip}


# ---- gears ------------------------------------------------------------------------------------


@dataclass(slots=True)
class GearStatus:
    """One gear of the running scenario: its lifecycle state and its counters."""

    type: str
    state: str  # built | starting | running | paused | finished | stopped | failed ...
    source: bool
    sink: bool
    handled: int = 0  # handle() calls that returned
    errors: int = 0  # handle() attempts that raised, run() crashes, failed stop()
    emitted: int = 0  # emit() calls that reached at least one wire
    dead_lettered: int = 0  # messages that used up their attempts
    dropped: int = 0  # ... and had no `error` wire to go to
    restarts: int = 0  # run() restarts after a crash (sources)
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _flat(self)


GEAR_COUNTER_FIELDS = ("handled", "errors", "emitted", "dead_lettered", "dropped", "restarts")


# ---- wires ------------------------------------------------------------------------------------


@dataclass(slots=True)
class WireStatus:
    """Counters every wire keeps, whatever its transport (see transports/base.py WireStats)."""

    source: str  # "gear.port" the wire takes from (JSON "from")
    target: str  # "gear.port" it delivers to (JSON "to")
    transport: str
    sent: int = 0
    received: int = 0  # handled by the downstream gear (successfully or dead-lettered)
    failed: int = 0  # handling attempts that raised
    redelivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0

    @property
    def waiting(self) -> int | None:
        """Messages on the wire not yet handed to the downstream gear; None when not known."""
        return None

    def to_json(self) -> dict[str, Any]:
        data = _flat(self, skip=("source", "target"))
        return {"from": self.source, "to": self.target, **data}


WIRE_COUNTER_FIELDS = ("sent", "received", "failed", "redelivered", "dead_lettered", "dropped")


@dataclass(slots=True)
class MemoryWireStatus(WireStatus):
    """A bounded in-process queue."""

    in_queue: int = 0
    capacity: int = 0
    max_deliver: int = 0
    retry_delay: float = 0.0
    consuming: bool = False

    @property
    def waiting(self) -> int | None:
        return self.in_queue


@dataclass(slots=True)
class DurableWireStatus(WireStatus):
    """A JetStream stream and its durable consumer. The consumer's numbers come from the last
    consumer info the wire fetched (at most once a second): None until the first one arrives."""

    stream: str = ""
    subject: str = ""
    consumer: str = ""
    in_flight: int = 0  # publishes not yet acknowledged by JetStream
    publish_retries: int = 0
    duplicates: int = 0
    refused: int = 0
    last_refusal: str | None = None
    full: bool = False
    pending: int | None = None  # lag: in the stream, not yet delivered
    ack_pending: int | None = None
    server_redelivered: int | None = None

    @property
    def waiting(self) -> int | None:
        return self.pending

    def to_json(self) -> dict[str, Any]:
        data = WireStatus.to_json(self)
        for key in ("pending", "ack_pending", "server_redelivered"):  # absent until known
            if data[key] is None:
                del data[key]
        return data


# ---- brokers ----------------------------------------------------------------------------------


@dataclass(slots=True)
class BrokerStatus:
    kind: str

    def to_json(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(slots=True)
class MemoryBrokerStatus(BrokerStatus):
    queue_size: int = 0
    wires_created: int = 0


@dataclass(slots=True)
class NatsConnectionStatus:
    state: str  # new | connected | disconnected | closed
    servers: list[str] = field(default_factory=list)  # redacted: no password in /status
    connected_url: str | None = None
    connected_since: str | None = None  # ISO 8601
    down_since: str | None = None
    disconnects: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(slots=True)
class EmbeddedServerStatus:
    pid: int | None
    url: str | None
    running: bool
    restarts: int
    last_exit: Any  # the server's last exit status (int) or None

    def to_json(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(slots=True)
class NatsBrokerStatus(BrokerStatus):
    """JSON: the connection's fields inline, beside the broker's own."""

    connection: NatsConnectionStatus = field(default_factory=lambda: NatsConnectionStatus("new"))
    replicas: int = 1
    streams: list[str] = field(default_factory=list)
    embedded_server: EmbeddedServerStatus | None = None  # set when the mixer runs its own server

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, **self.connection.to_json(), "replicas": self.replicas,
                                "streams": self.streams}
        if self.embedded_server is not None:
            data["embedded_server"] = self.embedded_server.to_json()
        return data


def brokers_json(brokers: dict[str, BrokerStatus]) -> dict[str, Any]:
    return {kind: broker.to_json() for kind, broker in brokers.items()}


# ---- a runtime --------------------------------------------------------------------------------


@dataclass(slots=True)
class RuntimeStatus:
    """One activation's runtime: its scenario, state, and every gear and wire (topological order)."""

    scenario: str
    hash: str
    state: str
    started_at: float | None = None  # time.time()
    first_handled_at: float | None = None
    last_handled_at: float | None = None
    gears: dict[str, GearStatus] = field(default_factory=dict)
    wires: dict[str, WireStatus] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "hash": self.hash,
            "state": self.state,
            "started_at": self.started_at,
            "first_handled_at": self.first_handled_at,
            "last_handled_at": self.last_handled_at,
            "gears": {name: gear.to_json() for name, gear in self.gears.items()},
            "wires": {key: wire.to_json() for key, wire in self.wires.items()},
        }


# ---- the mixer --------------------------------------------------------------------------------


class JournalEntryLike(Protocol):
    """What status needs of a store JournalEntry (the store is not imported here)."""

    outcome: str
    gap_seconds: float | None

    @property
    def ts(self) -> Any: ...

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class ScenarioInfo:
    """The active scenario as the mixer knows it (JSON: /status `scenario`)."""

    name: str
    tag: str | None
    hash: str
    ref: str | None  # what the mixer follows
    version: str | None
    description: str | None
    path: str | None

    def to_json(self) -> dict[str, Any]:
        return _flat(self)


@dataclass(slots=True)
class MixerStatus:
    """Everything `GET /status` answers; metrics, the event stream and the page read the same."""

    state: str
    ready: bool
    reason: str
    paused: bool
    scenario: ScenarioInfo | None
    following: str | None
    watching: str | None
    gears: dict[str, GearStatus]
    wires: dict[str, WireStatus]
    brokers: dict[str, BrokerStatus]
    uptime_seconds: float
    started_at: str  # ISO 8601
    last_reload: JournalEntryLike | None
    expectations: list[dict[str, Any]]
    store: str
    pid: int
    version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ready": self.ready,
            "reason": self.reason,
            "paused": self.paused,
            "scenario": self.scenario.to_json() if self.scenario is not None else None,
            "following": self.following,
            "watching": self.watching,
            "gears": {name: gear.to_json() for name, gear in self.gears.items()},
            "wires": {key: wire.to_json() for key, wire in self.wires.items()},
            "brokers": brokers_json(self.brokers),
            "uptime_seconds": self.uptime_seconds,
            "started_at": self.started_at,
            "last_reload": self.last_reload.as_dict() if self.last_reload is not None else None,
            "expectations": self.expectations,
            "store": self.store,
            "pid": self.pid,
            "version": self.version,
        }
