"""Shared fixtures. Each transport gets its own fixture (as dramatiq does per broker)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"

# The tests' own python gears (test_gear_python:Scale, ...) live here: the operator-configured
# gears path of every fluxmix process the tests start, as FLUXMIX_GEARS_PATH would be in production.
os.environ.setdefault("FLUXMIX_GEARS_PATH", str(Path(__file__).resolve().parent))


# Hypothesis policy for the whole suite, in one place. The properties are about correctness, never
# speed: on a loaded machine (2 cores shared by several suites) generating and running an example
# can take far longer than hypothesis' 200 ms deadline or its too_slow health check allow, which
# failed test_store_refs now and then. So no deadline and no too_slow check. Under CI=true the
# examples are derandomized (a CI failure replays exactly) and no example database is written.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, database=None,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "default"))


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
