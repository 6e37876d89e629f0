"""Transports that carry messages between gears: `memory` (asyncio queues) and `standard` (NATS JetStream)."""

from fluxmix.transports.base import Broker, Delivery, Wire, WireStats

__all__ = ["Broker", "Delivery", "Wire", "WireStats"]
