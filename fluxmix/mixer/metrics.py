"""Prometheus metrics, read from the runtime's own counters at scrape time.

A custom Collector instead of prometheus-client Counters updated per message: the hot path
already counts (WireStats, gear counters), so a scrape just reads those, and the per-message
cost of metrics is zero. Counters of a runtime that a reload replaced are folded into
`RetiredCounters`, so `_total` series stay monotonic across reloads of the same gear/wire.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator, Mapping, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fluxmix.status import (
    GEAR_COUNTER_FIELDS,
    WIRE_COUNTER_FIELDS,
    DurableWireStatus,
    GearCounters,
    MemoryWireStatus,
    MixerStatus,
    NatsBrokerStatus,
    RuntimeStatus,
    WireStatus,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

GEAR_COUNTERS = {
    "handled": "messages handled",
    "errors": "handling attempts that raised, source crashes, failed stops",
    "emitted": "messages emitted",
    "dead_lettered": "messages that used up their attempts",
    "dropped": "dead-lettered messages with no error wire to go to",
    "restarts": "source restarts after a crash",
}
WIRE_COUNTERS = {
    "sent": "messages sent on the wire",
    "received": "messages handled by the downstream gear",
    "failed": "handling attempts that raised",
    "redelivered": "redeliveries",
    "dead_lettered": "messages given up on after max_deliver attempts",
    "dropped": "messages dropped (always logged)",
}
assert tuple(GEAR_COUNTERS) == GEAR_COUNTER_FIELDS and tuple(WIRE_COUNTERS) == WIRE_COUNTER_FIELDS


class RetiredCounters:
    """Totals of runtimes that are no longer current, keyed like the exported series."""

    def __init__(self) -> None:
        self.gears: Counter[tuple[str, str, str]] = Counter()  # (gear, type, counter)
        self.wires: Counter[tuple[str, str, str]] = Counter()  # (wire, transport, counter)

    def fold(self, status: RuntimeStatus) -> None:
        for name, gear in status.gears.items():
            for counter in GEAR_COUNTERS:
                self.gears[(name, gear.type, counter)] += getattr(gear, counter)
        for key, wire in status.wires.items():
            for counter in WIRE_COUNTERS:
                self.wires[(key, wire.transport, counter)] += getattr(wire, counter)


class MetricsSource(Protocol):
    """What a scrape reads: the typed status, plus the counters only metrics keeps."""

    retired: RetiredCounters
    outcomes: Mapping[str, int]  # activation attempts by journal outcome

    def status(self) -> MixerStatus: ...


def _counter_families(
    kind: str,
    second_label: str,
    counters: Mapping[str, str],
    retired: Mapping[tuple[str, str, str], float],
    current: Mapping[str, tuple[str, GearCounters | WireStatus]],
) -> Iterator[CounterMetricFamily]:
    """One family per counter: what retired runtimes counted plus what the current one counts,
    so a reload never makes a counter go down. `current`: name -> (second label, counters)."""
    values: dict[str, dict[tuple[str, str], float]] = {c: {} for c in counters}
    for (name, second, counter), value in retired.items():
        values[counter][(name, second)] = values[counter].get((name, second), 0) + value
    for name, (second, status) in current.items():
        key = (name, second)
        for counter in counters:
            values[counter][key] = values[counter].get(key, 0) + getattr(status, counter)
    for counter, help_text in counters.items():
        family = CounterMetricFamily(f"fluxmix_{kind}_{counter}", help_text, labels=[kind, second_label])
        for key, value in sorted(values[counter].items()):
            family.add_metric(list(key), value)
        yield family


class MixerCollector(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        status = self.source.status()
        retired = self.source.retired

        info = GaugeMetricFamily("fluxmix_scenario_info", "the active scenario (value 1)", labels=["name", "tag", "hash"])
        if status.scenario is not None:
            info.add_metric([status.scenario.name, status.scenario.tag or "", status.scenario.hash], 1)
        yield info
        yield GaugeMetricFamily("fluxmix_up", "the mixer process is alive", value=1)
        yield GaugeMetricFamily("fluxmix_ready", "1 when /readyz answers 200", value=1 if status.ready else 0)
        yield GaugeMetricFamily("fluxmix_uptime_seconds", "seconds since the mixer started", value=status.uptime_seconds)
        yield GaugeMetricFamily("fluxmix_paused", "1 while the sources are paused (POST /pause)",
                                value=1 if status.paused else 0)

        # gears
        gears = {name: (gear.type, gear) for name, gear in status.gears.items()}
        yield from _counter_families("gear", "type", GEAR_COUNTERS, retired.gears, gears)
        running = GaugeMetricFamily("fluxmix_gear_running", "1 when the gear is in state running", labels=["gear", "type"])
        for name, gear in status.gears.items():
            running.add_metric([name, gear.type], 1 if gear.state == "running" else 0)
        yield running

        # wires
        wires = {key: (wire.transport, wire) for key, wire in status.wires.items()}
        yield from _counter_families("wire", "transport", WIRE_COUNTERS, retired.wires, wires)
        in_queue = GaugeMetricFamily("fluxmix_wire_in_queue", "messages waiting in a memory wire's queue", labels=["wire", "transport"])
        pending = GaugeMetricFamily("fluxmix_wire_pending", "consumer lag of a durable wire", labels=["wire", "transport"])
        for key, wire in status.wires.items():
            if isinstance(wire, MemoryWireStatus):
                in_queue.add_metric([key, wire.transport], wire.in_queue)
            elif isinstance(wire, DurableWireStatus) and wire.pending is not None:  # None: no consumer info yet
                pending.add_metric([key, wire.transport], wire.pending)
        yield in_queue
        yield pending

        # reloads
        reloads = CounterMetricFamily("fluxmix_reloads", "activation attempts by outcome", labels=["outcome"])
        for outcome in ("activated", "unchanged", "rejected", "rolled-back", "failed"):
            reloads.add_metric([outcome], self.source.outcomes.get(outcome, 0))
        yield reloads
        last = status.last_reload
        if last is not None and last.gap_seconds is not None:
            yield GaugeMetricFamily(
                "fluxmix_reload_gap_seconds", "processing gap of the last reload (last old message to first new)", value=last.gap_seconds
            )
        if last is not None:
            yield GaugeMetricFamily(
                "fluxmix_last_reload_timestamp_seconds", "when the last activation attempt happened", value=last.ts.timestamp()
            )

        yield from _expectation_families(status.expectations)
        if status.fleet is not None:
            yield from _fleet_families(status.fleet, status.scenario.hash if status.scenario is not None else None)

        # brokers
        nats = status.brokers.get("standard")
        if isinstance(nats, NatsBrokerStatus):
            connection = nats.connection
            yield GaugeMetricFamily("fluxmix_nats_connected", "1 while connected to NATS",
                                    value=1.0 if connection.state == "connected" else 0.0)
            for key, help_text in _NATS_COUNTS.items():  # only ever go up: counters, not gauges
                yield CounterMetricFamily(f"fluxmix_nats_{key}", help_text, value=getattr(connection, key))
            if nats.embedded_server is not None:
                yield CounterMetricFamily("fluxmix_nats_embedded_restarts", "times the embedded nats-server was "
                                          "restarted after it died", value=nats.embedded_server.restarts)


_NATS_COUNTS = {
    "disconnects": "times the NATS connection was lost",
    "reconnects": "times the NATS connection was re-established",
    "errors": "errors reported by the NATS client",
}


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _expectation_families(expectations: list[dict[str, Any]]) -> Iterator[Metric]:
    """A gauge per `expect:` line of the running scenario: passing (1/0), state (one-hot), value."""
    passing = GaugeMetricFamily("fluxmix_expectation_passing", "1 while the expectation passes", labels=["expectation"])
    state = GaugeMetricFamily("fluxmix_expectation_state", "1 for the expectation's current state",
                              labels=["expectation", "state"])
    value = GaugeMetricFamily("fluxmix_expectation_value", "the expectation's last measured value", labels=["expectation"])
    for exp in expectations:
        passing.add_metric([exp["expect"]], 1 if exp["state"] == "passing" else 0)
        for name in ("pending", "passing", "failing"):
            state.add_metric([exp["expect"], name], 1 if exp["state"] == name else 0)
        if _num(exp.get("value")) is not None:
            value.add_metric([exp["expect"]], float(exp["value"]))
    yield passing
    yield state
    yield value


FLEET_CLAIM_RESULTS = {  # fluxmix.fleet.claims.SinkClaims.stats, counted since this process started
    "claimed": "claims this member created before writing",
    "committed": "claims this member committed (the line is done fleet-wide)",
    "skipped": "messages skipped because another member had done them",
    "taken_over": "claims taken over from a member that was gone",
    "lost": "commits refused because this member was presumed gone",
    "waits": "waits for a live member's pending claim",
}


def _fleet_families(fleet: Mapping[str, Any], active_hash: str | None) -> Iterator[Metric]:
    """With --fleet: the fleet connection, its members, this member's leases and claims, and
    whether this member runs the fleet's desired scenario (all from FleetMember.status())."""
    connection = fleet.get("connection") or {}
    yield GaugeMetricFamily("fluxmix_fleet_connected", "1 while the fleet's KV answers this member's heartbeats",
                            value=1 if connection.get("ready") else 0)
    members = fleet.get("members") or []
    yield GaugeMetricFamily("fluxmix_fleet_members", "members registered in the fleet (as last seen)",
                            value=len(members))
    yield GaugeMetricFamily("fluxmix_fleet_members_in_sync", "members that run the desired scenario",
                            value=sum(1 for m in members if m.get("in_sync")))
    held = {lease["lease"] for lease in fleet.get("held_here") or []}
    yield GaugeMetricFamily("fluxmix_fleet_leases_held", "source leases this member holds", value=len(held))
    lease_held = GaugeMetricFamily("fluxmix_fleet_lease_held", "1 when this member holds the source lease",
                                   labels=["lease"])
    for lease in sorted(held | {entry["lease"] for entry in fleet.get("leases") or []}):
        lease_held.add_metric([lease], 1 if lease in held else 0)
    yield lease_held
    claims = CounterMetricFamily("fluxmix_fleet_claims", "fleet-wide sink claims by what became of them",
                                 labels=["result"])
    counts = fleet.get("claims") or {}
    for result in FLEET_CLAIM_RESULTS:
        claims.add_metric([result], counts.get(result, 0))
    yield claims
    desired = fleet.get("desired")
    yield GaugeMetricFamily("fluxmix_fleet_desired_match",
                            "1 when this member runs the fleet's desired scenario (same SHA-256)",
                            value=1 if desired and active_hash == desired["hash"] else 0)


def render(source: MetricsSource) -> bytes:
    """Exposition text for one scrape (a private registry: no process-global state in tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MixerCollector(source))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    return generate_latest(registry)
