"""`transport: standard` — durable wires on NATS JetStream, one job per module:

- naming: stream / subject / consumer / msg-id names (stable across versions);
- connection: the one client, its state, `wait_connected()` / `jetstream()`, reconnect notices;
- provisioning: streams and consumers, created or updated, never purged;
- publisher: pipelined publishes with a result per message (refusals leave the wire);
- consumer: callback-driven pull with credit, heartbeats and a fenced, one-round-trip stop;
- errors: how nats errors and JetStream replies map onto fluxmix's;
- wire / broker: the Wire and Broker of the transport contract (fluxmix.transports.base).
"""

from fluxmix.transports.nats.broker import NatsBroker
from fluxmix.transports.nats.connection import CONNECT_OPTION_KEYS
from fluxmix.transports.nats.connection import connect_kwargs as _connect_kwargs
from fluxmix.transports.nats.naming import consumer_name, scenario_token, stream_name, stream_subjects, wire_subject
from fluxmix.transports.nats.wire import NatsWire

__all__ = [
    "CONNECT_OPTION_KEYS",
    "NatsBroker",
    "NatsWire",
    "_connect_kwargs",
    "consumer_name",
    "scenario_token",
    "stream_name",
    "stream_subjects",
    "wire_subject",
]
