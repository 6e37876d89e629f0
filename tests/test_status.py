"""The typed status model: producers fill it, and to_json() keeps the documented /status shapes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from tests.support import runtime as h
from fluxmix.runtime import MemoryCheckpoints, Runtime
from fluxmix.status import (
    DurableWireStatus,
    EmbeddedServerStatus,
    GearStatus,
    MemoryBrokerStatus,
    MemoryWireStatus,
    MixerStatus,
    NatsBrokerStatus,
    NatsConnectionStatus,
    RuntimeStatus,
    ScenarioInfo,
    WireStatus,
)
from fluxmix.transports.memory import MemoryBroker
from tests.support.polling import wait_until

COUNTERS = ["sent", "received", "failed", "redelivered", "dead_lettered", "dropped"]
# The JSON keys /status served before the typed model, in their order (clients depend on them).
GEAR_KEYS = ["type", "state", "source", "sink", "handled", "errors", "emitted", "dead_lettered", "dropped",
             "restarts", "last_error", "since_start", "up_since", "instance", "restarted_at"]  # the last 4: issue 10
MEMORY_WIRE_KEYS = ["from", "to", "transport", *COUNTERS, "in_queue", "capacity", "max_deliver", "retry_delay",
                    "consuming", "chained"]
DURABLE_WIRE_KEYS = ["from", "to", "transport", *COUNTERS, "stream", "subject", "consumer", "in_flight",
                     "publish_retries", "duplicates", "refused", "last_refusal", "full",
                     "publish_batches"]
CONSUMER_INFO_KEYS = ["pending", "ack_pending", "server_redelivered"]
NATS_BROKER_KEYS = ["kind", "state", "servers", "connected_url", "connected_since", "down_since", "disconnects",
                    "reconnects", "errors", "last_error", "replicas", "streams"]
RUNTIME_KEYS = ["scenario", "hash", "state", "started_at", "first_handled_at", "last_handled_at", "gears", "wires",
                "reloading"]
MIXER_KEYS = ["state", "ready", "reason", "paused", "scenario", "following", "watching", "gears", "wires",
              "brokers", "uptime_seconds", "started_at", "last_reload", "expectations", "store", "pid", "version", "fleet"]


def test_gear_status_json_keeps_its_keys() -> None:
    gear = GearStatus("map", "running", False, True, "boom", handled=3)
    assert list(gear.to_json()) == GEAR_KEYS
    assert gear.to_json()["handled"] == 3 and gear.to_json()["last_error"] == "boom"


def test_wire_status_json_names_its_ends_from_and_to() -> None:
    wire = MemoryWireStatus("a.out", "b.in", "memory", sent=2, in_queue=1, capacity=8)
    assert list(wire.to_json()) == MEMORY_WIRE_KEYS
    assert wire.to_json()["from"] == "a.out" and wire.to_json()["to"] == "b.in"
    assert wire.waiting == 1 and WireStatus("a.out", "b.in", "x").waiting is None


def test_durable_wire_reports_consumer_numbers_only_once_known() -> None:
    before = DurableWireStatus("a.out", "b.in", "standard", stream="S", subject="s", consumer="c")
    assert list(before.to_json()) == DURABLE_WIRE_KEYS and before.waiting is None
    after = DurableWireStatus("a.out", "b.in", "standard", pending=4, ack_pending=1, server_redelivered=0)
    assert list(after.to_json()) == DURABLE_WIRE_KEYS + CONSUMER_INFO_KEYS and after.waiting == 4


def test_nats_broker_json_inlines_the_connection_and_adds_the_embedded_server_only_when_there() -> None:
    connection = NatsConnectionStatus("connected", servers=["nats://127.0.0.1:4222"], reconnects=2)
    broker = NatsBrokerStatus("standard", connection=connection, replicas=1, streams=["S"])
    assert list(broker.to_json()) == NATS_BROKER_KEYS and broker.to_json()["reconnects"] == 2
    broker.embedded_server = EmbeddedServerStatus(pid=7, url="nats://x", running=True, restarts=0, last_exit=None)
    assert list(broker.to_json()) == [*NATS_BROKER_KEYS, "embedded_server"]
    assert broker.to_json()["embedded_server"] == {"pid": 7, "url": "nats://x", "running": True, "restarts": 0,
                                                   "last_exit": None}
    assert MemoryBrokerStatus("memory", queue_size=4, wires_created=1).to_json() == {
        "kind": "memory", "queue_size": 4, "wires_created": 1}


class _Entry:
    outcome = "activated"
    gap_seconds = 0.01
    ts = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome}


def test_mixer_status_json_is_the_status_document() -> None:
    status = MixerStatus(
        state="running", ready=True, reason="running", paused=False,
        scenario=ScenarioInfo("s", "v1", "f" * 64, "s:latest", "1.0.0", None, None),
        following="s:latest", watching=None,
        gears={"g": GearStatus("log", "running", False, True)},
        wires={"a.out->g.in": MemoryWireStatus("a.out", "g.in", "memory")},
        brokers={"memory": MemoryBrokerStatus("memory")},
        uptime_seconds=1.5, started_at="2026-01-01T00:00:00+00:00", last_reload=_Entry(),
        expectations=[], store="/s", pid=1, version="0",
    )
    data = json.loads(json.dumps(status.to_json()))
    assert list(data) == MIXER_KEYS
    assert list(data["scenario"]) == ["name", "tag", "hash", "ref", "version", "description", "path"]
    assert data["last_reload"] == {"outcome": "activated"} and list(data["gears"]["g"]) == GEAR_KEYS


async def test_a_real_runtime_produces_the_model() -> None:
    h.reset()
    scenario = h.scenario("line", [("src", "t-counter", {"count": 5}), ("sink", "t-collect", {})],
                          [("src.out", "sink.in")])
    rt = Runtime(scenario, "f" * 64, catalog=h.catalog(), brokers={"memory": MemoryBroker(queue_size=8)},
                 checkpoints=MemoryCheckpoints())
    await rt.build()
    await rt.start()
    await wait_until(lambda: len(h.SEEN["sink"]) == 5)
    await rt.stop()
    status = rt.status()
    assert isinstance(status, RuntimeStatus) and status.state == "stopped"
    assert status.gears["src"].emitted == 5 and status.gears["sink"].handled == 5
    wire = status.wires["src.out->sink.in"]
    assert isinstance(wire, MemoryWireStatus) and (wire.source, wire.target, wire.received) == ("src.out", "sink.in", 5)
    data = json.loads(json.dumps(status.to_json()))
    assert list(data) == RUNTIME_KEYS
    assert list(data["gears"]["src"]) == GEAR_KEYS and list(data["wires"]["src.out->sink.in"]) == MEMORY_WIRE_KEYS
