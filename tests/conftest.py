"""Shared fixtures. Each transport gets its own fixture (as dramatiq does per broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


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
