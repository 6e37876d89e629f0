"""An in-process Activator on a fresh store, for the activation tests (test_activation,
test_partial_reload): the test gears' shared log reset per test, the store, the activator.

A module imports the fixtures it uses; `reload_mode` is "partial" (the mixer's default) and a
module that pins the whole-scenario restart overrides it with its own `reload_mode` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fluxmix.mixer.activation import Activator
from fluxmix.store import Store, open_store
from fluxmix.transports.registry import Brokers
from tests.support import runtime as h


@pytest.fixture(autouse=True)
def _reset_test_gears() -> None:
    h.reset()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture
def reload_mode() -> str:
    return "partial"


@pytest.fixture
async def activator(store: Store, reload_mode: str) -> AsyncIterator[Activator]:
    act = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10, reload_mode=reload_mode)
    yield act
    await act.shutdown()
