"""The one retry / dead-letter policy every wire applies to a message whose handling raised.

Modelled on dramatiq's Retries middleware: the transport only reports what happened (the
message, the error, which attempt it was) and carries out the answer; the policy alone decides
whether to try again after a delay or to give up and dead-letter, and dead-lettering (to the
gear's `error` port, or a counted drop) happens here and nowhere else. A memory wire answers a
retry by sleeping and handling the message again in its place; a durable wire NAKs it with the
delay and JetStream redelivers it (its consumer has no `max_deliver` of its own, so the server
never drops a message before this policy decides).

A `dead_letter` that raises (the error port's wire refused it) keeps the message: it is retried
later, like a failed attempt, on every transport. Nothing is lost because its error path failed
once; a memory wire closed before that retry counts it as dropped, as it does anything in hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from fluxmix.message import Message
    from fluxmix.transports.base import Delivery, WireStats

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 5
# A memory retry is cheap and in place, so it starts soon and backs off; a durable retry goes
# through the server, so it waits longer and stays fixed (the defaults wires had before).
MEMORY_RETRY_DELAY = 0.05
DURABLE_RETRY_DELAY = 0.5
# Memory retries back off exponentially up to this (or the delay itself when larger): long enough
# to ride out a short outage downstream, short enough that a drain stays bounded.
MAX_BACKOFF = 5.0
# The least wait before trying a failed dead-lettering again: its cause (an error wire refusing)
# is rarely gone within milliseconds.
MIN_DEAD_LETTER_RETRY = 1.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a message is tried (`max_attempts`, the wire's `max_deliver`) and how long to
    wait before the next try: `delay` doubling per attempt up to `max_delay` (equal: fixed)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    delay: float = MEMORY_RETRY_DELAY
    max_delay: float = MAX_BACKOFF

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, durable: bool) -> "RetryPolicy":
        """From a wire's `max_deliver` / `retry_delay` options (validated by the scenario checks)."""
        max_attempts = max(1, int(options.get("max_deliver", DEFAULT_MAX_ATTEMPTS)))
        delay = max(0.0, float(options.get("retry_delay", DURABLE_RETRY_DELAY if durable else MEMORY_RETRY_DELAY)))
        return cls(max_attempts, delay, delay if durable else max(delay, MAX_BACKOFF))

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        if self.max_delay <= self.delay:
            return self.delay
        return min(self.delay * (2 ** min(attempt - 1, 62)), self.max_delay)

    async def settle_failure(self, delivery: "Delivery", message: "Message", exc: BaseException, attempt: int,
                             stats: "WireStats", label: str) -> float | None:
        """Attempt `attempt` of `message` raised `exc`: returns the delay before the transport
        tries it again, or None when it is finished (dead-lettered or dropped, and counted)."""
        stats.failed += 1
        if attempt < self.max_attempts:
            return self.backoff(attempt)
        try:
            forwarded = await delivery.dead_letter(message, exc)
        except Exception as dl_exc:  # the error port refused it: keep the message, try again later
            log.error("wire %s: dead-lettering message %s failed (%s); it is retried", label, message.id, dl_exc,
                      extra={"wire": label})
            return max(self.delay, MIN_DEAD_LETTER_RETRY)
        stats.dead_lettered += 1
        if forwarded is False:  # no `error` wire: counted here, logged by the runtime
            stats.dropped += 1
        stats.received += 1
        return None
