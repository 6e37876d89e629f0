"""The one way tests wait for something: poll a condition until it holds, with a bound.

A correctness wait, never a timing assertion: the bound only decides how long a broken run
takes to fail, and the failure names what was awaited. `wait_until` is for async tests
(it yields to the loop between polls); `block_until` is for tests that drive subprocesses
(a mixer): it also fails at once, with the process's output, when that process has exited.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import Any, Protocol

import pytest

WAIT = 30.0  # upper bound of every poll; a healthy run needs a fraction of it
INTERVAL = 0.01  # first pause between polls; block_until backs off from it
MAX_INTERVAL = 0.25


class Watched(Protocol):
    """A process a poll watches (tests.support.mixer.MixerProcess)."""

    proc: subprocess.Popen[Any]

    def output(self) -> str: ...


async def wait_until(predicate: Callable[[], Any], what: str = "the condition", *, timeout: float = WAIT) -> Any:
    """Poll `predicate` on the running loop until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(INTERVAL)


def block_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT, proc: Watched | None = None) -> Any:
    """Poll `predicate` (blocking) until it returns something truthy; fail with `what` (and the
    log of `proc`) after `timeout`, or as soon as `proc` has exited."""
    deadline = time.monotonic() + timeout
    delay = INTERVAL * 2
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            pytest.fail(f"mixer exited ({proc.proc.returncode}) while waiting for {what}\n{proc.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f"\n{proc.output()}" if proc else ""))
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_INTERVAL)
