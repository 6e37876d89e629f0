"""The mixer's set of brokers: created on first need and kept for the mixer's whole life.

A memory-only scenario never touches NATS; the first scenario with a standard wire connects to
`--nats-url`, or starts an embedded nats-server under the fluxmix home when no URL was given.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fluxmix.errors import ActivationError
from fluxmix.scenario import Scenario
from fluxmix.status import BrokerStatus, NatsBrokerStatus
from fluxmix.transports.base import Broker

log = logging.getLogger(__name__)


@dataclass(slots=True)
class NatsSettings:
    """How to reach NATS. No servers means: embedded nats-server under `home`."""

    servers: list[str] = field(default_factory=list)
    connect_options: dict[str, Any] = field(default_factory=dict)  # user/password/token/creds/tls
    replicas: int = 1
    # Seconds before JetStream redelivers a message fetched but not acked (a crashed mixer's batch).
    ack_wait: float = 30.0
    # Seconds JetStream remembers a Nats-Msg-Id. It must exceed ack_wait + a source's checkpoint
    # interval, so a replay or redelivery re-publishes ids the stream still recognises.
    # None: ack_wait + a restart allowance (nats.provisioning.duplicate_window_for).
    duplicate_window: float | None = None
    max_bytes: int | None = None  # per stream; None = unlimited. Full: publishers wait, nothing is dropped
    # Messages a wire may hold before its producer waits (JetStream max_msgs_per_subject); None = unbounded.
    wire_backlog: int | None = 100_000


class Brokers:
    def __init__(self, home: Path, nats: NatsSettings | None = None, *, memory_queue_size: int = 1024) -> None:
        self.home = Path(home)
        self.nats = nats or NatsSettings()
        self.memory_queue_size = memory_queue_size
        self._brokers: dict[str, Broker] = {}
        self._embedded: Any = None
        self._lock = asyncio.Lock()

    async def for_scenario(self, scenario: Scenario) -> Mapping[str, Broker]:
        """Brokers for every transport the scenario uses, connected. Raises ActivationError."""
        async with self._lock:
            for kind in sorted(scenario.transports):
                if kind not in self._brokers:
                    self._brokers[kind] = await self._create(kind)
            return dict(self._brokers)

    async def _create(self, kind: str) -> Broker:
        if kind == "memory":
            from fluxmix.transports.memory import MemoryBroker

            return MemoryBroker(queue_size=self.memory_queue_size)
        if kind == "standard":
            from fluxmix.transports.embedded import EmbeddedNats
            from fluxmix.transports.nats import NatsBroker

            servers = list(self.nats.servers)
            if not servers:
                self._embedded = EmbeddedNats(self.home / "nats")
                servers = [await self._embedded.start()]
                self._embedded.supervise()
                log.info("started embedded nats-server at %s (store %s)", servers[0], self._embedded.store_dir)
            broker = NatsBroker(
                servers,
                connect_options=self.nats.connect_options,
                replicas=self.nats.replicas,
                ack_wait=self.nats.ack_wait,
                duplicate_window=self.nats.duplicate_window,
                max_bytes=-1 if self.nats.max_bytes is None else self.nats.max_bytes,
                wire_backlog=-1 if self.nats.wire_backlog is None else self.nats.wire_backlog,
            )
            await broker.connect()
            return broker
        raise ActivationError(f"unknown transport {kind!r}")

    def get(self, kind: str) -> Broker | None:
        return self._brokers.get(kind)

    def status(self) -> dict[str, BrokerStatus]:
        status = {kind: broker.status() for kind, broker in sorted(self._brokers.items())}
        standard = status.get("standard")
        if self._embedded is not None and isinstance(standard, NatsBrokerStatus):
            standard.embedded_server = self._embedded.status()
        return status

    @property
    def ready(self) -> tuple[bool, str]:
        for kind, broker in sorted(self._brokers.items()):
            ok, why = broker.ready
            if not ok:
                return False, f"{kind}: {why}"
        return True, ""

    async def close(self) -> None:
        for broker in self._brokers.values():
            try:
                await broker.close()
            except Exception:  # closing must go on for the others
                log.exception("closing %s broker failed", broker.kind)
        self._brokers.clear()
        if self._embedded is not None:
            await self._embedded.stop()
            self._embedded = None
