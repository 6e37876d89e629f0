"""The transport interface: a long-lived Broker per transport kind, a Wire per scenario wire.

The mixer keeps one Broker of each kind for its whole life (a NATS connection outlives every
activation); each activation asks it for a Wire per scenario wire. The runtime sends on a wire
and lets the wire drive the downstream gear through a `Delivery`; each transport decides when to
acknowledge, and every wire applies one retry / dead-letter policy (`fluxmix.retry`), while the
contract stays the same:

- `send()` waits under backpressure; it never drops and never buffers without bound.
- `flush()` returns once everything sent is as safe as the transport makes it
  (in the queue for memory, acknowledged by JetStream for standard).
- `consume()` calls `delivery.handle(msg)` (or `delivery.handle_batch(msgs)` for several at
  once), then `delivery.flush_downstream()`, and only then acknowledges. A message whose handling raised is reported, with its attempt number,
  to the wire's `RetryPolicy`, which answers "again after this delay" (memory: handled again in
  its place; durable: NAKed with the delay) or dead-letters it through `delivery.dead_letter()`.
- `send_batch()` sends several messages in order; the default sends them one by one, so a
  wire only overrides it when it can do better (one queue operation, one encode per batch).
- a message the transport refuses for good is handed to `on_refused` (the sending gear's
  `error` port) and counted; the wire keeps flowing.
- `detach()` stops the consumer after what is in hand and keeps the rest (queue or stream) for
  the next `consume()` on the same wire, while senders go on (a partial reload).
- `drain()` stops taking new work, finishes what is in hand, and returns how many messages it
  handled while draining. A memory wire empties its queue first; a durable wire leaves the rest
  in its stream for the next consumer.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, ClassVar, Sequence

from fluxmix.message import Message
from fluxmix.retry import RetryPolicy
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.status import BrokerStatus, WireStatus


@dataclass(slots=True)
class WireStats:
    sent: int = 0
    received: int = 0  # handled by the downstream gear (successfully or dead-lettered)
    failed: int = 0  # handling attempts that raised
    redelivered: int = 0
    dead_lettered: int = 0
    dropped: int = 0  # never silently: every drop is counted here and logged

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BatchCursor:
    """How far the downstream gear got in a batch a wire handed over: `started` messages.

    The gear's side sets `started` as it takes each message, so a wire can count those not yet
    started as still queued (its bound, and its backpressure, stay per message)."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = 0

    def advance_to(self, started: int) -> None:
        self.started = started


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a wire hands messages to its downstream gear (built by the runtime)."""

    handle: Callable[[Message], Awaitable[None]]
    # Returns True when the message went to the gear's `error` port, False when it had nowhere
    # to go and was dropped (the runtime counts and logs it; the wire counts it as `dropped`).
    dead_letter: Callable[[Message, BaseException], Awaitable[bool | None]]
    flush_downstream: Callable[[], Awaitable[None]]
    # Handles messages in order and stops at the first that fails: returns how many were
    # handled and the failure of the next one (None when all were). The wire then retries that
    # one alone (`handle`) and hands the rest over again, so per-wire order holds and the
    # neighbours of a failing message are neither failed nor repeated. None: per message only.
    handle_batch: Callable[[Sequence[Message], BatchCursor], Awaitable[tuple[int, Exception | None]]] | None = None


class Wire(abc.ABC):
    """One scenario wire, for one activation."""

    # A durable wire keeps what its consumer has not taken (in its stream) for the next consumer,
    # so the runtime may stop its consumer at any moment; a memory wire must be emptied first.
    durable: ClassVar[bool] = False
    # The transport can run its consumer in the sender's task (operator chaining,
    # fluxmix.runtime.chaining); the runtime then sets `chained` per wire.
    chainable: ClassVar[bool] = False
    chained: bool = False

    # Set by the runtime: where a message the transport refused for good goes (the sending gear's
    # `error` port when it has one; returns False when it was dropped and counted instead). A
    # transport that can refuse one message (JetStream: too large, ...) calls it, counts it and
    # keeps the wire flowing; None: the wire itself counts the refused message as dropped.
    on_refused: Callable[[Message, BaseException], Awaitable[bool | None]] | None = None

    def __init__(self, spec: WireSpec) -> None:
        self.spec = spec
        self.stats = WireStats()
        # from the wire's max_deliver / retry_delay; the one place a failing message is decided on
        self.retry = RetryPolicy.from_options(spec.options, durable=type(self).durable)

    @abc.abstractmethod
    async def send(self, message: Message) -> None: ...

    async def send_batch(self, messages: Sequence[Message]) -> None:
        """Send in order; waits under backpressure. Per message unless the wire does better."""
        for message in messages:
            await self.send(message)

    @abc.abstractmethod
    async def flush(self) -> None: ...

    @abc.abstractmethod
    async def consume(self, delivery: Delivery) -> None:
        """Run until `drain()` or `close()`; returns when consuming has stopped."""

    @abc.abstractmethod
    async def drain(self) -> int: ...

    async def detach(self) -> None:
        """Stop consuming after what is in hand, keep the rest for a later `consume()` on this same
        wire: a partial reload restarts the downstream gear while the upstream keeps sending.
        A transport that cannot hand its consumer over says so; the reload then restarts more."""
        raise NotImplementedError(f"{type(self).__name__} cannot hand its consumer over")

    async def close(self) -> None:
        """Release resources without draining (used when an activation is abandoned)."""

    def status(self) -> WireStatus:
        """Counters; a transport returns its own subclass with its state (queue depth, lag, ...)."""
        return WireStatus(**self.status_fields())

    def status_fields(self) -> dict[str, Any]:
        """The fields every WireStatus has: its ends, its transport and its counters."""
        return {"source": str(self.spec.source), "target": str(self.spec.target), "transport": self.spec.transport,
                **self.stats.as_dict()}


class Broker(abc.ABC):
    """A transport kind, alive for the mixer's whole life."""

    kind: ClassVar[str]

    async def connect(self) -> None:
        """Idempotent; called before the first activation that uses this kind."""

    async def prepare(self, scenario: Scenario, scenario_hash: str, wires: list[WireSpec]) -> None:
        """Create what the wires need (streams, consumers). Failing here fails the activation
        before the old scenario is touched."""

    @abc.abstractmethod
    def wire(self, scenario: Scenario, scenario_hash: str, spec: WireSpec) -> Wire: ...

    async def close(self) -> None:
        """Called once when the mixer exits."""

    def status(self) -> BrokerStatus:
        return BrokerStatus(self.kind)

    @property
    def ready(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz; a disconnected NATS broker says why."""
        return True, ""
