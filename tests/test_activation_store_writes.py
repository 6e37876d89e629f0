"""What an activation writes to the store, and how a partial reload shares the GIL while it runs
(issue 17's reload targets: one store transaction at the end, the loop first meanwhile)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from fluxmix.mixer.activation import ACTIVATION_SWITCH_INTERVAL, Activator
from fluxmix.store import Store, open_store
from fluxmix.transports.registry import Brokers
from tests.support import runtime as h
from tests.support.polling import wait_until

SCENARIO = """\
name: demo
version: {version}
gears:
  - {{name: src, type: t-counter, config: {{checkpoint_every: 5}}}}
  - {{name: sink, type: t-collect{sink}}}
wires:
  - {{from: src.out, to: sink.in, transport: memory, queue_size: 8}}
"""


def scenario(tmp_path: Path, version: str, sink: str = "") -> str:
    path = tmp_path / f"demo-{version}.yaml"
    path.write_text(SCENARIO.format(version=version, sink=sink))
    return str(path)


@pytest.fixture(autouse=True)
def _clean() -> None:
    h.reset()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture(params=["partial", "full"])
async def activator(request: Any, store: Store) -> AsyncIterator[Activator]:
    act = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10, reload_mode=request.param)
    yield act
    await act.shutdown()


class Spy:
    """Counts the store's writes of the active scenario, alone and with a journal row."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.alone = 0
        self.with_row = 0
        set_active, record = store.set_active, store.record_activation

        def spy_set_active(*args: Any, **kwargs: Any) -> None:
            self.alone += 1
            set_active(*args, **kwargs)

        def spy_record(entry: Any, **kwargs: Any) -> int:
            self.with_row += kwargs.get("active") is not None
            return record(entry, **kwargs)

        monkeypatch.setattr(store, "set_active", spy_set_active)
        monkeypatch.setattr(store, "record_activation", spy_record)


async def test_the_active_scenario_is_written_with_the_journal_row(tmp_path: Path, store: Store, activator: Activator,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(store, monkeypatch)
    first, second = scenario(tmp_path, "1.0.0"), scenario(tmp_path, "1.1.0", ", config: {tag: b}")
    for path in (first, second):
        entry = await activator.activate(path, trigger="api")
        if path == first:  # nothing to wait for: one transaction
            assert (spy.alone, spy.with_row) == (0, 1)
        assert entry.outcome == "activated", entry.reason
        state = store.mixer_state()
        assert (state.active_hash, state.active_ref, state.last_known_good_hash) == (entry.to_hash, path, entry.to_hash)
        assert store.journal()[0].id == entry.id
    # once per activation: with its journal row, or alone while the first message was awaited
    assert spy.alone + spy.with_row == 2


async def test_a_rolled_back_start_leaves_the_previous_scenario_active(tmp_path: Path, store: Store,
                                                                       activator: Activator) -> None:
    good = await activator.activate(scenario(tmp_path, "1.0.0"), trigger="api")
    await wait_until(lambda: len(h.SEEN.get("sink", [])) >= 5)
    bad = await activator.activate(scenario(tmp_path, "1.1.0", ", config: {fail_start: true}"), trigger="api")
    assert bad.outcome == "rolled-back", bad.reason
    state = store.mixer_state()
    assert (state.active_hash, state.last_known_good_hash) == (good.to_hash, good.to_hash)


async def test_the_active_scenario_is_still_written_when_the_journal_write_fails(
        tmp_path: Path, store: Store, activator: Activator, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> int:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store, "record_activation", refuse)
    path = scenario(tmp_path, "1.0.0")
    entry = await activator.activate(path, trigger="api")
    assert entry.outcome == "activated" and entry.id is None
    assert store.mixer_state().active_ref == path  # a restart resumes what runs


async def test_the_switch_interval_is_short_during_a_partial_reload_and_restored_after(
        tmp_path: Path, store: Store, activator: Activator, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sys.getswitchinterval()
    seen: list[float] = []
    seed = Activator._seed_globals

    async def spy(self: Activator, *args: Any) -> None:  # runs in both modes, before the new gears
        seen.append(sys.getswitchinterval())
        await seed(self, *args)

    monkeypatch.setattr(Activator, "_seed_globals", spy)
    await activator.activate(scenario(tmp_path, "1.0.0"), trigger="api")
    assert seen == [pytest.approx(before)]  # a first activation: nothing keeps running
    entry = await activator.activate(scenario(tmp_path, "1.1.0", ", config: {tag: b}"), trigger="api")
    assert entry.outcome == "activated", entry.reason
    # only where gears keep running through the reload (--reload partial)
    expected = min(ACTIVATION_SWITCH_INTERVAL, before) if activator.reload_mode == "partial" else before
    assert len(seen) == 2 and seen[1] == pytest.approx(expected)
    assert sys.getswitchinterval() == pytest.approx(before)


async def test_a_reload_without_initial_values_skips_the_globals_seed(tmp_path: Path, store: Store,
                                                                       activator: Activator,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxmix.globals_state import ScenarioGlobals

    seeds: list[str] = []
    seed = ScenarioGlobals.seed

    def spy(self: ScenarioGlobals, **kwargs: Any) -> None:
        seeds.append(self.scenario)
        seed(self, **kwargs)

    monkeypatch.setattr(ScenarioGlobals, "seed", spy)
    await activator.activate(scenario(tmp_path, "1.0.0"), trigger="api")
    assert seeds == ["demo"]  # the first activation of a name reads its snapshot
    entry = await activator.activate(scenario(tmp_path, "1.1.0", ", config: {tag: b}"), trigger="api")
    assert entry.outcome == "activated" and seeds == ["demo"]  # nothing declared, snapshot held: no store trip
    with_initial = SCENARIO.format(version="1.2.0", sink="") + "globals:\n  limit: {initial: 3}\n"
    (tmp_path / "with-initial.yaml").write_text(with_initial)
    entry = await activator.activate(str(tmp_path / "with-initial.yaml"), trigger="api")
    assert entry.outcome == "activated", entry.reason
    assert seeds == ["demo", "demo"] and activator.globals.for_scenario("demo").get("limit") == 3


STANDARD = """\
name: {name}
version: {version}
gears:
  - {{name: src, type: t-counter, config: {{checkpoint_every: 5}}}}
  - {{name: mid, type: t-pass}}
  - {{name: sink, type: t-collect}}
wires:
  - {{from: src.out, to: mid.in, transport: standard}}
  - {{from: mid.out, to: sink.in, transport: standard}}
"""


async def test_a_full_reload_closes_the_old_wires_after_the_new_gears_started_and_loses_nothing(
        tmp_path: Path, store: Store, nats_url: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real nats-server: the old runtime's drained standard wires are closed once the new one
    runs (off the reload's gap); every seq reaches the sink once across the reloads."""
    from fluxmix.runtime import Runtime
    from fluxmix.transports.registry import NatsSettings

    events: list[str] = []
    start, release = Runtime.start, Runtime.release

    async def spy_start(self: Runtime) -> None:
        await start(self)
        events.append(f"started {self.scenario.version}")

    async def spy_release(self: Runtime) -> None:
        if not self._released:
            events.append(f"closed {self.scenario.version}")
        await release(self)

    monkeypatch.setattr(Runtime, "start", spy_start)
    monkeypatch.setattr(Runtime, "release", spy_release)
    brokers = Brokers(store.home, NatsSettings(servers=[nats_url]))
    activator = Activator(store, h.catalog(), brokers, stop_timeout=10, reload_mode="full")
    try:
        versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
        for version in versions:
            path = tmp_path / f"s-{version}.yaml"
            path.write_text(STANDARD.format(name=unique_name, version=version))
            entry = await activator.activate(str(path), trigger="api")
            assert entry.outcome == "activated", entry.reason
            old = activator.current
            await wait_until(lambda: len(h.SEEN.get("sink", [])) >= 20 * (versions.index(version) + 1))
            assert old is not None and not old._released
        await activator.shutdown()
    finally:
        await brokers.close()
    # each old runtime's wires closed only after its successor started
    for before, after in zip(versions, versions[1:]):
        assert events.index(f"started {after}") < events.index(f"closed {before}"), events
    seqs = [b["seq"] for b in h.SEEN["sink"]]
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), "a seq lost or delivered twice across the reloads"
