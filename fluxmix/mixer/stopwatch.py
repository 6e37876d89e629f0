"""The reload stopwatch: how long a reload interrupted the flow at the sinks, measured off the
message path by an observer the activator installs only while it measures."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from fluxmix.runtime import GearRunner, Runtime


class ReloadStopwatch:
    """Measures the interruption a reload causes at the sinks, off the message path.

    Installed on the runtimes' sinks (`Runtime.observe_sinks`) only while a reload is measured:
    it notes the last message a watched sink handled before the new gears were up (the drain of
    the old ones counts as flow) and the first one after. The gap is from the later of that last
    message and the moment the reload began, so a reload after an idle minute costs what the
    reload cost, not the minute. It removes itself at the first message after the reload.
    """

    def __init__(self, sinks: set[str] | None = None) -> None:
        self.sinks = sinks  # None: every sink
        self.began = time.time()
        self.last_before: float | None = None
        self.resumed = False
        self.first_after: float | None = None
        self.arrived = asyncio.Event()
        self._runtimes: list[Runtime] = []

    def install(self, runtime: Runtime) -> None:
        self._runtimes.append(runtime)
        runtime.observe_sinks(self)

    def __call__(self, runner: GearRunner, now: float) -> None:
        if self.sinks is not None and runner.name not in self.sinks:
            return
        if not self.resumed:
            self.last_before = now
            return
        if self.first_after is None:
            self.first_after = now
            self.arrived.set()
            self.uninstall()

    def resume(self) -> None:
        """The new gears are up: the next message at a watched sink ends the gap."""
        self.resumed = True

    def uninstall(self) -> None:
        for runtime in self._runtimes:
            runtime.observe_sinks(None)
        self._runtimes.clear()

    @property
    def gap(self) -> float | None:
        if self.first_after is None:
            return None
        start = max(self.began, self.last_before or self.began)
        return round(max(0.0, self.first_after - start), 6)


@dataclass(slots=True)
class GapWatch:
    """A reload whose new gears had handled nothing yet when its journal row was written."""

    stopwatch: ReloadStopwatch
    entry_id: int | None = None
    journaled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
