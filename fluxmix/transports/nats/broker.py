"""The `standard` transport's Broker: one connection, streams per scenario name, a wire per spec."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig

from fluxmix.errors import NatsUnavailableError
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.status import NatsBrokerStatus
from fluxmix.transports.base import Broker
from fluxmix.transports.nats.connection import NatsConnection, iso, split_servers
from fluxmix.transports.nats.errors import CONNECTION_ERRORS, api_error
from fluxmix.transports.nats.provisioning import (
    StreamSettings,
    consumer_config,
    duplicate_window_for,
    ensure_consumer,
    ensure_stream,
    stream_config,
)
from fluxmix.transports.nats.wire import NatsWire

import nats.js.errors


class NatsBroker(Broker):
    """One NATS connection for the mixer's whole life; a JetStream stream per scenario name.

    `batch_size` is a consumer's credit: how many messages one wire may have requested or in
    hand at once; `max_in_flight` is a publisher's window of messages awaiting their PubAck;
    `batched` lets a run of messages emitted at once go out as one fast-ingest batch."""

    kind = "standard"

    def __init__(
        self,
        servers: Iterable[str] | str,
        *,
        connect_options: dict[str, Any] | None = None,
        replicas: int = 1,
        duplicate_window: float | None = None,
        max_bytes: int = -1,
        wire_backlog: int = -1,
        ack_wait: float = 30.0,
        ack_timeout: float = 5.0,
        api_timeout: float = 5.0,
        max_in_flight: int = 1024,
        batch_size: int = 512,
        initial_connect_timeout: float = 10.0,
        batched: bool = True,
    ) -> None:
        self.servers = split_servers(servers)
        self.connect_options = dict(connect_options or {})
        self.replicas = int(replicas)
        # None: sized from what de-duplication must cover (provisioning.duplicate_window_for)
        self.duplicate_window = duplicate_window if duplicate_window is not None else duplicate_window_for(ack_wait)
        self.max_bytes = max_bytes
        self.ack_wait = ack_wait
        self.ack_timeout = ack_timeout
        self.api_timeout = api_timeout
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.initial_connect_timeout = initial_connect_timeout
        self.settings = StreamSettings(
            replicas=self.replicas,
            duplicate_window=self.duplicate_window,
            max_bytes=max_bytes,
            ack_wait=ack_wait,
            max_ack_pending=max(1000, batch_size * 4),
            wire_backlog=wire_backlog,
            batched=batched,
        )
        self.connection = NatsConnection(
            self.servers,
            self.connect_options,
            api_timeout=api_timeout,
            initial_connect_timeout=initial_connect_timeout,
        )
        self._streams: dict[str, StreamConfig] = {}
        self._wires: set[NatsWire] = set()
        # what this connection already created or checked, with the config it has: a reload of a
        # scenario whose wires did not change makes no API call (a removed consumer is still noticed
        # by its wire, and a reconnect -- maybe to a fresh server -- forgets all of it)
        self._ensured: dict[tuple[str, str], Any] = {}
        self.connection.on_change(self._ensured.clear)

    # connection -------------------------------------------------------------------------------
    async def connect(self) -> None:
        await self.connection.connect()

    @property
    def nc(self) -> NatsClient | None:
        return self.connection.nc

    @property
    def js(self) -> JetStreamContext | None:
        return self.connection.js

    @property
    def state(self) -> str:
        return self.connection.state

    @property
    def is_connected(self) -> bool:
        return self.connection.is_connected

    async def wait_connected(self) -> None:
        await self.connection.wait_connected()

    def jetstream(self) -> JetStreamContext:
        return self.connection.jetstream()

    # streams and consumers ----------------------------------------------------------------------
    def stream_config(self, scenario_name: str) -> StreamConfig:
        return stream_config(self.settings, scenario_name)

    def consumer_config(self, scenario_name: str, spec: WireSpec) -> ConsumerConfig:
        return consumer_config(self.settings, scenario_name, spec)

    async def prepare(self, scenario: Scenario, scenario_hash: str, wires: list[WireSpec]) -> None:
        js = self.jetstream()
        wanted = self.stream_config(scenario.name)
        if self._ensured.get(("stream", wanted.name or "")) != wanted:
            config = await self._api(ensure_stream(js, self.settings, scenario.name), "create the stream")
            self._streams[config.name or ""] = config
            self._ensured[("stream", wanted.name or "")] = wanted
        missing = []
        for spec in wires:
            if spec.transport == self.kind:
                config = self.consumer_config(scenario.name, spec)
                if self._ensured.get(("consumer", f"{wanted.name}/{config.durable_name}")) != config:
                    missing.append((spec, config))
        # one API round trip for all consumers rather than one after the other (a reload waits for it)
        await asyncio.gather(*(
            self._api(ensure_consumer(js, self.settings, scenario.name, spec), f"create the consumer for wire {spec.key}")
            for spec, _ in missing
        ))
        for spec, config in missing:
            self._ensured[("consumer", f"{wanted.name}/{config.durable_name}")] = config

    async def _api(self, coro: Any, what: str) -> Any:
        """Run a JetStream API call, waiting (bounded) for the connection first."""
        try:
            await self.connection.wait_connected(timeout=self.initial_connect_timeout)
        except TimeoutError:
            coro.close()
            raise NatsUnavailableError(
                f"cannot {what}: NATS disconnected since {iso(self.connection.down_since) or '?'}"
            ) from None
        try:
            return await coro
        except nats.js.errors.APIError as exc:
            raise api_error(exc, what) from exc
        except CONNECTION_ERRORS as exc:
            raise api_error(exc, what) from exc

    # wires --------------------------------------------------------------------------------------
    def wire(self, scenario: Scenario, scenario_hash: str, spec: WireSpec) -> NatsWire:
        wire = NatsWire(self, scenario.name, spec)
        self._wires.add(wire)
        return wire

    def _forget(self, wire: NatsWire) -> None:
        self._wires.discard(wire)

    async def close(self) -> None:
        self.connection.closing = True
        for wire in list(self._wires):
            with contextlib.suppress(Exception):
                await wire.close()
        await self.connection.close()

    def status(self) -> NatsBrokerStatus:
        return NatsBrokerStatus(self.kind, connection=self.connection.status(), replicas=self.replicas,
                                streams=sorted(self._streams))

    @property
    def ready(self) -> tuple[bool, str]:
        return self.connection.ready


__all__ = ["NatsBroker"]
