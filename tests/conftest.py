"""Shared fixtures. Each transport gets its own fixture (as dramatiq does per broker)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"

# The tests' own python gears (test_gear_python:Scale, ...) live here: the operator-configured
# gears path of every fluxmix process the tests start, as FLUXMIX_GEARS_PATH would be in production.
os.environ.setdefault("FLUXMIX_GEARS_PATH", str(Path(__file__).resolve().parent))


@pytest.fixture
def fluxmix_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty fluxmix home (store + mixer state) that every command in the test uses."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FLUXMIX_HOME", str(home))
    return home


@pytest.fixture
def scenarios_dir() -> Path:
    return SCENARIOS


# Real nats-server fixtures (nats_url / nats_server, nats_embedded, nats_cluster, unique_name).
from tests.support.nats import (  # noqa: E402,F401
    nats_cluster,
    nats_embedded,
    nats_server,
    nats_url,
    unique_name,
)
# A real `fluxmix-mixer` per test (home, start_mixer).
from tests.support.mixer import home, start_mixer  # noqa: E402,F401
