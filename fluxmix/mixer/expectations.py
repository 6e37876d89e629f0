"""The running scenario's `expect:` lines, judged continuously against its live counters.

One `ExpectationWatch` per running runtime: a task samples `runtime.status()` every `interval`
seconds and feeds an `ExpectationTracker` (fluxmix.checks.expect). The Activator starts one
when a runtime becomes current and stops it when that runtime stops; /status, /metrics and
`fluxmix mixer check` read `report()`. `verdict()` is what `--verify-within` waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from fluxmix.checks.expect import Expectation, ExpectationTracker, parse_expectation

if TYPE_CHECKING:
    from fluxmix.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.5


class ExpectationWatch:
    def __init__(self, runtime: "Runtime", expectations: list[Expectation], *, interval: float = DEFAULT_INTERVAL) -> None:
        self.runtime = runtime
        self.interval = interval
        self.tracker = ExpectationTracker(expectations, started=time.monotonic())
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_runtime(cls, runtime: "Runtime", *, interval: float = DEFAULT_INTERVAL) -> "ExpectationWatch | None":
        """A started watch over the runtime's scenario's expectations; None when it has none."""
        texts = runtime.scenario.expect
        if not texts:
            return None
        watch = cls(runtime, [parse_expectation(t) for t in texts], interval=interval)
        watch.start()
        return watch

    def start(self) -> None:
        self.sample()
        self._task = asyncio.create_task(self._loop(), name="fluxmix expectations")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def sample(self) -> None:
        try:
            self.tracker.observe(self.runtime.status().to_json())
        except Exception:  # a bug here must never touch the running scenario
            log.exception("evaluating expectations failed")
        self._changed.set()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sample()

    def report(self) -> list[dict[str, Any]]:
        return self.tracker.report()

    async def verdict(self, within: float) -> tuple[bool, list[str]]:
        """Wait until every expectation passes (True), one fails, or `within` seconds pass with
        any still pending (False); the list says which did not pass and why."""
        deadline = time.monotonic() + within
        while True:
            if self.tracker.all_passing():
                return True, []
            failing = self.tracker.failing()
            if failing:
                return False, [f"{st.expectation.text}: failing: {st.reason}" for st in failing]
            left = deadline - time.monotonic()
            if left <= 0:
                return False, [f"{st.expectation.text}: {st.state}: {st.reason}" for st in self.tracker.not_passing()]
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, self.interval * 2))
            if time.monotonic() >= deadline:
                self.sample()  # judge the window's last moment, not a sample up to `interval` old


__all__ = ["DEFAULT_INTERVAL", "ExpectationWatch"]
