"""A fleet source whose lease is lost mid-run: its next emit is refused (LeaseLostError), and that
is not a failure of the gear (no error counted, no "failed" state, no restart backoff): the
source stops and waits for its lease again."""

from __future__ import annotations

import asyncio

from tests.support import runtime as h
from fluxmix.runtime import MemoryCheckpoints, Runtime
from fluxmix.transports.memory import MemoryBroker
from tests.support.polling import wait_until


class OneLease:
    """The runtime's SourceGuard protocol with a lease the test takes away: granted once, then
    never again (a second acquire waits until the source is stopped)."""

    def __init__(self) -> None:
        self.ok = True
        self.acquired = 0
        self.event = asyncio.Event()

    async def acquire(self, scenario: str, gear: str, stopping: asyncio.Event) -> bool:
        self.acquired += 1
        if self.acquired == 1:
            return True
        await stopping.wait()
        return False

    def valid(self, scenario: str, gear: str) -> bool:
        return self.ok

    def lost(self, scenario: str, gear: str) -> asyncio.Event:
        return self.event

    async def release(self, scenario: str, gear: str) -> None:
        return None


async def test_an_emit_refused_for_a_lost_lease_is_not_counted_as_a_gear_failure() -> None:
    h.reset()
    guard = OneLease()
    scen = h.scenario("lease", [("src", "t-counter", {}), ("sink", "t-collect", {})], [("src.out", "sink.in")])
    rt = Runtime(scen, "f" * 64, catalog=h.catalog(), brokers={"memory": MemoryBroker(queue_size=8)},
                 checkpoints=MemoryCheckpoints(), source_guard=guard)
    await rt.build()
    await rt.start()
    try:
        await wait_until(lambda: len(h.SEEN["sink"]) >= 20)
        guard.ok = False  # the local deadline passed: emits are refused before `lost` is set
        await asyncio.sleep(0.2)
        assert rt.status().to_json()["gears"]["src"]["state"] == "running"  # waiting, not "failed"
        guard.event.set()
        await wait_until(lambda: guard.acquired == 2)  # stopped, waiting for the lease again
        src = rt.status().to_json()["gears"]["src"]
        assert src["errors"] == 0 and src["last_error"] is None and src["restarts"] == 0
        assert src["state"] == "standby"
    finally:
        await rt.stop()
