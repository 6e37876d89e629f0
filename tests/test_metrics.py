"""Prometheus metrics read the typed status model: every wire and gear series has a value."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fluxmix.mixer import metrics
from fluxmix.mixer.metrics import GEAR_COUNTERS, WIRE_COUNTERS, MetricsSource, RetiredCounters
from fluxmix.status import DurableWireStatus, EmbeddedServerStatus, GearStatus, MemoryBrokerStatus
from fluxmix.status import MemoryWireStatus, MixerStatus, NatsBrokerStatus, NatsConnectionStatus, RuntimeStatus
from fluxmix.status import WireStatus

MEMORY_WIRE = "src.out->mid.in"
DURABLE_WIRE = "mid.out->sink.in"


def _status(wires: dict[str, WireStatus], gears: dict[str, GearStatus] | None = None) -> MixerStatus:
    nats = NatsBrokerStatus("standard", connection=NatsConnectionStatus("connected", disconnects=1, reconnects=1),
                            embedded_server=EmbeddedServerStatus(1, "nats://x", True, 2, None))
    return MixerStatus(
        state="running", ready=True, reason="running", paused=False, scenario=None, following=None,
        watching=None, gears=gears or {}, wires=wires,
        brokers={"memory": MemoryBrokerStatus("memory"), "standard": nats}, uptime_seconds=1.0,
        started_at="2026-01-01T00:00:00+00:00", last_reload=None, expectations=[], store="/s", pid=1, version="0",
    )


@dataclass
class _Source:
    """A MetricsSource without a daemon: the narrow interface metrics needs is all there is."""

    current: MixerStatus
    retired: RetiredCounters = field(default_factory=RetiredCounters)
    outcomes: Counter[str] = field(default_factory=Counter)

    def status(self) -> MixerStatus:
        return self.current


def _samples(source: MetricsSource) -> dict[str, list[Any]]:
    text = metrics.render(source).decode()
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _wires() -> dict[str, WireStatus]:
    return {
        MEMORY_WIRE: MemoryWireStatus("src.out", "mid.in", "memory", sent=5, received=4, in_queue=1, capacity=8),
        DURABLE_WIRE: DurableWireStatus("mid.out", "sink.in", "standard", sent=4, received=3, pending=1),
    }


def test_every_wire_metric_has_a_value_for_every_wire() -> None:
    samples = _samples(_Source(_status(_wires())))
    for counter in WIRE_COUNTERS:
        labelled = {s.labels["wire"]: s.value for s in samples[f"fluxmix_wire_{counter}_total"]}
        assert set(labelled) == {MEMORY_WIRE, DURABLE_WIRE}, counter
    assert {s.labels["wire"]: s.value for s in samples["fluxmix_wire_sent_total"]} == {MEMORY_WIRE: 5, DURABLE_WIRE: 4}
    # The backlog gauge of each wire comes from its transport's own field, never a guessed key.
    assert [(s.labels["wire"], s.value) for s in samples["fluxmix_wire_in_queue"]] == [(MEMORY_WIRE, 1.0)]
    assert [(s.labels["wire"], s.value) for s in samples["fluxmix_wire_pending"]] == [(DURABLE_WIRE, 1.0)]


def test_a_durable_wire_without_consumer_info_yet_reports_no_lag_rather_than_zero() -> None:
    wires = {DURABLE_WIRE: DurableWireStatus("mid.out", "sink.in", "standard")}
    assert "fluxmix_wire_pending" not in _samples(_Source(_status(wires)))


def test_every_gear_metric_has_a_value_and_retired_runtimes_keep_counters_monotonic() -> None:
    gears = {"src": GearStatus("generate", "running", True, False, emitted=5)}
    source = _Source(_status({}, gears))
    retired_gear = GearStatus("generate", "stopped", True, False, emitted=7)
    retired_wire = MemoryWireStatus("src.out", "mid.in", "memory", sent=7)
    source.retired.fold(RuntimeStatus("s", "f" * 64, "stopped", gears={"src": retired_gear},
                                      wires={MEMORY_WIRE: retired_wire}))
    samples = _samples(source)
    for counter in GEAR_COUNTERS:
        assert [s.labels["gear"] for s in samples[f"fluxmix_gear_{counter}_total"]] == ["src"], counter
    assert samples["fluxmix_gear_emitted_total"][0].value == 12
    assert samples["fluxmix_wire_sent_total"][0].value == 7  # the retired wire stays exported
    assert samples["fluxmix_gear_running"][0].value == 1


def test_nats_connection_numbers_are_counters() -> None:
    samples = _samples(_Source(_status(_wires())))
    assert samples["fluxmix_nats_connected"][0].value == 1
    assert samples["fluxmix_nats_disconnects_total"][0].value == 1
    assert samples["fluxmix_nats_reconnects_total"][0].value == 1
    assert samples["fluxmix_nats_errors_total"][0].value == 0
    assert samples["fluxmix_nats_embedded_restarts_total"][0].value == 2
