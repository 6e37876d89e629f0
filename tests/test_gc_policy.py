"""The mixer's collector policy (fluxmix.runtime.gc_policy): raised while it runs, restored after."""

from __future__ import annotations

import gc

import pytest

from fluxmix.runtime.gc_policy import YOUNG_THRESHOLD, throughput_gc


@pytest.fixture(autouse=True)
def _keep_thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_raises_the_young_threshold_and_restores_it() -> None:
    gc.set_threshold(700, 10, 10)
    with throughput_gc():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_never_lowers_a_higher_threshold_nor_turns_collection_back_on() -> None:
    gc.set_threshold(YOUNG_THRESHOLD * 2, 5, 5)
    with throughput_gc():
        assert gc.get_threshold() == (YOUNG_THRESHOLD * 2, 5, 5)
    gc.set_threshold(0, 10, 10)
    with throughput_gc():
        assert gc.get_threshold()[0] == 0


def test_restored_when_the_block_raises() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), throughput_gc():
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_the_mixer_runs_under_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixer.run wraps serving in the policy (what `fluxmix-mixer` runs)."""
    import asyncio

    from fluxmix.mixer import daemon

    seen: list[tuple[int, int, int]] = []

    class Stop(Exception):
        pass

    def fake_open(self: object) -> None:
        seen.append(gc.get_threshold())
        raise Stop

    monkeypatch.setattr(daemon.Mixer, "_open", fake_open)
    gc.set_threshold(700, 10, 10)
    mixer = daemon.Mixer.__new__(daemon.Mixer)
    mixer.handle_signals, mixer.fleet, mixer.http, mixer.service = False, None, None, None
    with pytest.raises(Stop):
        asyncio.run(mixer.run())
    assert seen == [(YOUNG_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)
