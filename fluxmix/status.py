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


def _json(value: Any) -> Any:
    """A status value as JSON data: nested status objects through their own to_json()."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "as_dict"):  # a journal entry
        return value.as_dict()
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    return value


def _flat(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dataclass's fields as a JSON object, in declaration order."""
    return {f.name: _json(getattr(obj, f.name)) for f in fields(obj) if f.name not in skip}


class _Status:
    """Base of every status dataclass: JSON is its fields in order unless a class says otherwise."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return _flat(self)


# ---- gears ------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class GearCounters(_Status):
    """What a gear has done; the runtime counts into one of these on the hot path.
    Keyword-only, so GearStatus can extend it and still take its own fields first."""

    handled: int = 0  # handle() calls that returned
    errors: int = 0  # handle() attempts that raised, run() crashes, failed stop()
    emitted: int = 0  # emit() calls that reached at least one wire
    dead_lettered: int = 0  # messages that used up their attempts
    dropped: int = 0  # ... and had no `error` wire to go to
    restarts: int = 0  # run() restarts after a crash (sources)


GEAR_COUNTER_FIELDS = tuple(f.name for f in fields(GearCounters))


@dataclass(slots=True)
class GearStatus(GearCounters):
    """One gear of the running scenario: its lifecycle state and a copy of its counters.
    JSON: the counters between `sink` and `last_error`, then the running instance's own."""

    type: str
    state: str  # built | starting | running | paused | finished | stopped | failed ...
    source: bool
    sink: bool
    last_error: str | None = None
    # The counters above are totals over every instance of the gear in this runtime (a partial
    # reload that restarts the gear does not reset them); these are the running instance's own.
    since_start: dict[str, int] = field(default_factory=dict)
    up_since: float | None = None  # time.time() the running instance started
    instance: int = 1  # 1, then +1 each time a reload restarted the gear
    restarted_at: float | None = None  # up_since of an instance a reload started (instance > 1)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "state": self.state, "source": self.source, "sink": self.sink,
                **{name: getattr(self, name) for name in GEAR_COUNTER_FIELDS}, "last_error": self.last_error,
                "since_start": dict(self.since_start), "up_since": self.up_since, "instance": self.instance,
                "restarted_at": self.restarted_at}


# ---- wires ------------------------------------------------------------------------------------


@dataclass(slots=True)
class WireStatus(_Status):
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
    # operator chaining (fluxmix.runtime.chaining): batches go to the consumer in the sender's
    # task while it is idle; in_queue is then the part of the batch in hand not yet started
    chained: bool = False

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
    publish_batches: int = 0  # fast-ingest batches sent (one PubAck each instead of one per message)
    pending: int | None = None  # lag: in the stream, not yet delivered
    ack_pending: int | None = None
    server_redelivered: int | None = None
    backlog: int | None = None  # with the wire option `backlog`: its messages stored or in flight
    backlog_bound: int | None = None  # that option (None: only the stream-wide --nats-wire-backlog)

    @property
    def waiting(self) -> int | None:
        return self.pending

    def to_json(self) -> dict[str, Any]:
        data = WireStatus.to_json(self)
        for key in ("pending", "ack_pending", "server_redelivered", "backlog", "backlog_bound"):  # absent until known
            if data[key] is None:
                del data[key]
        return data


# ---- brokers ----------------------------------------------------------------------------------


@dataclass(slots=True)
class BrokerStatus(_Status):
    kind: str


@dataclass(slots=True)
class MemoryBrokerStatus(BrokerStatus):
    queue_size: int = 0
    wires_created: int = 0


@dataclass(slots=True)
class NatsConnectionStatus(_Status):
    state: str  # new | connected | disconnected | closed
    servers: list[str] = field(default_factory=list)  # redacted: no password in /status
    connected_url: str | None = None
    connected_since: str | None = None  # ISO 8601
    down_since: str | None = None
    disconnects: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class EmbeddedServerStatus(_Status):
    pid: int | None
    url: str | None
    running: bool
    restarts: int
    last_exit: Any  # the server's last exit status (int) or None


@dataclass(slots=True)
class NatsBrokerStatus(BrokerStatus):
    """JSON: the connection's fields inline, beside the broker's own."""

    connection: NatsConnectionStatus = field(default_factory=lambda: NatsConnectionStatus("new"))
    replicas: int = 1
    streams: list[str] = field(default_factory=list)
    embedded_server: EmbeddedServerStatus | None = None  # set when the mixer runs its own server

    def to_json(self) -> dict[str, Any]:
        data = _flat(self, skip=("connection", "embedded_server"))
        data = {"kind": data.pop("kind"), **self.connection.to_json(), **data}
        if self.embedded_server is not None:
            data["embedded_server"] = self.embedded_server.to_json()
        return data


# ---- a runtime --------------------------------------------------------------------------------


@dataclass(slots=True)
class RuntimeStatus(_Status):
    """One activation's runtime: its scenario, state, and every gear and wire (topological order)."""

    scenario: str
    hash: str
    state: str
    started_at: float | None = None  # time.time()
    first_handled_at: float | None = None
    last_handled_at: float | None = None
    gears: dict[str, GearStatus] = field(default_factory=dict)
    wires: dict[str, WireStatus] = field(default_factory=dict)
    reloading: bool = False  # a partial reload is replacing some of its gears right now


# ---- the mixer --------------------------------------------------------------------------------


class JournalEntryLike(Protocol):
    """What status needs of a store JournalEntry (the store is not imported here)."""

    outcome: str
    gap_seconds: float | None

    @property
    def ts(self) -> Any: ...

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class ScenarioInfo(_Status):
    """The active scenario as the mixer knows it (JSON: /status `scenario`)."""

    name: str
    tag: str | None
    hash: str
    ref: str | None  # what the mixer follows
    version: str | None
    description: str | None
    path: str | None


@dataclass(slots=True)
class MixerStatus(_Status):
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
    fleet: dict[str, Any] | None = None  # with --fleet: fluxmix.fleet.FleetMember.status()
