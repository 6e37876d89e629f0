"""The one retry / dead-letter policy (fluxmix/retry.py) on its own: options, delays, outcomes."""

from __future__ import annotations

from fluxmix.message import Message
from fluxmix.retry import RetryPolicy
from fluxmix.scenario import Endpoint, Scenario, WireSpec
from fluxmix.transports.base import Delivery, WireStats
from fluxmix.transports.memory import MemoryBroker


def _delivery(answer: bool | None = True, *, raises: bool = False) -> tuple[Delivery, list[Message]]:
    dead: list[Message] = []

    async def handle(message: Message) -> None: ...

    async def dead_letter(message: Message, exc: BaseException) -> bool | None:
        if raises:
            raise RuntimeError("error port refused")
        dead.append(message)
        return answer

    async def flush() -> None: ...

    return Delivery(handle, dead_letter, flush), dead


def test_defaults_are_the_ones_each_transport_had() -> None:
    assert RetryPolicy.from_options({}, durable=False) == RetryPolicy(5, 0.05, 5.0)
    assert RetryPolicy.from_options({}, durable=True) == RetryPolicy(5, 0.5, 0.5)
    assert RetryPolicy.from_options({"max_deliver": 2, "retry_delay": 7}, durable=False) == RetryPolicy(2, 7.0, 7.0)


def test_memory_backs_off_and_durable_waits_a_fixed_delay() -> None:
    memory = RetryPolicy.from_options({"retry_delay": 0.05}, durable=False)
    assert [memory.backoff(n) for n in (1, 2, 3, 30, 10_000)] == [0.05, 0.1, 0.2, 5.0, 5.0]
    durable = RetryPolicy.from_options({"retry_delay": 0.25}, durable=True)
    assert [durable.backoff(n) for n in (1, 2, 9)] == [0.25, 0.25, 0.25]


def test_the_wire_carries_the_policy_from_its_options() -> None:
    spec = WireSpec(Endpoint("a", "out"), Endpoint("b", "in"), "memory", {"max_deliver": 3, "retry_delay": 0})
    wire = MemoryBroker().wire(Scenario("s", (), ()), "h", spec)
    assert wire.retry == RetryPolicy(3, 0.0, 5.0)
    assert (wire.status().max_deliver, wire.status().retry_delay) == (3, 0.0)


async def test_an_attempt_before_the_last_is_retried_after_the_backoff() -> None:
    delivery, dead = _delivery()
    stats = WireStats()
    policy = RetryPolicy(3, 0.1, 5.0)
    assert await policy.settle_failure(delivery, Message(id="m", body={}), ValueError(), 2, stats, "w") == 0.2
    assert dead == [] and (stats.failed, stats.dead_lettered, stats.received) == (1, 0, 0)


async def test_the_last_attempt_is_dead_lettered_or_counted_as_dropped() -> None:
    for answer, dropped in ((True, 0), (None, 0), (False, 1)):
        delivery, dead = _delivery(answer)
        stats = WireStats()
        # attempts past max (a durable redelivery after a failed dead-lettering) dead-letter too
        for attempt in (3, 4):
            assert await RetryPolicy(3, 0.0, 0.0).settle_failure(delivery, Message(id="m", body={}), ValueError(),
                                                                 attempt, stats, "w") is None
        assert len(dead) == 2
        assert (stats.failed, stats.dead_lettered, stats.dropped, stats.received) == (2, 2, 2 * dropped, 2)


async def test_a_dead_letter_that_raises_keeps_the_message_for_a_later_try() -> None:
    delivery, _ = _delivery(raises=True)
    stats = WireStats()
    delay = await RetryPolicy(1, 0.0, 0.0).settle_failure(delivery, Message(id="m", body={}), ValueError(), 1, stats, "w")
    assert delay is not None and delay >= 1.0
    assert (stats.failed, stats.dead_lettered, stats.dropped, stats.received) == (1, 0, 0, 0)
