"""The activation state machine, each failure stage, with the real store, loader and memory wires."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.support import runtime as h
from fluxmix.mixer.activation import Activator
from fluxmix.store import Store
from fluxmix.transports.registry import Brokers
from tests.support.activation import _reset_test_gears, activator, store  # noqa: F401
from tests.support.polling import wait_until

GOOD = """\
name: demo
version: {version}
gears:
  - {{name: src, type: t-counter, config: {{checkpoint_every: 5}}}}
  - {{name: mid, type: t-pass}}
  - {{name: sink, type: t-collect{sink_config}}}
wires:
  - {{from: src.out, to: mid.in, transport: memory, queue_size: 8}}
  - {{from: mid.out, to: sink.in, transport: memory, queue_size: 8}}
"""


def good(version: str = "1.0.0", sink_config: str = "") -> str:
    return GOOD.format(version=version, sink_config=sink_config)


@pytest.fixture
def reload_mode() -> str:
    # --reload full: these tests pin the whole-scenario restart (test_partial_reload.py the default)
    return "full"


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sink_seqs() -> list[int]:
    return [b["seq"] for b in h.SEEN.get("sink", [])]


async def producing(n: int) -> None:
    start = len(h.SEEN.get("sink", []))
    await wait_until(lambda: len(h.SEEN.get("sink", [])) >= start + n)


async def test_first_activation_from_a_path(tmp_path: Path, store: Store, activator: Activator) -> None:
    path = write(tmp_path, good())
    entry = await activator.activate(path, trigger="startup")
    assert entry.outcome == "activated", entry.reason
    assert (entry.from_hash, entry.to_hash, entry.trigger, entry.ref) == (None, sha(good()), "startup", path)
    assert set(entry.phases) == {"resolve", "build", "stop", "start"}
    assert entry.gap_seconds is None and entry.id is not None
    assert "demo:v1.0.0" in entry.reason
    assert activator.current is not None and activator.current.state == "running"
    assert activator.current_loaded is not None and activator.current_loaded.tag == "v1.0.0"
    state = store.mixer_state()
    assert (state.active_hash, state.active_ref, state.last_known_good_hash) == (sha(good()), path, sha(good()))
    assert store.journal()[0] == entry
    assert activator.last_reload == entry and activator.state == "running"
    await producing(5)


async def test_same_content_is_a_no_op(tmp_path: Path, store: Store, activator: Activator) -> None:
    path = write(tmp_path, good())
    await activator.activate(path, trigger="startup")
    runtime = activator.current
    entry = await activator.activate("demo:v1.0.0", trigger="api")
    assert entry.outcome == "unchanged" and "already running" in entry.reason
    assert activator.current is runtime and runtime.state == "running"
    assert store.mixer_state().active_ref == "demo:v1.0.0"  # a later reload follows the new reference
    assert [e.outcome for e in store.journal()] == ["unchanged", "activated"]


async def test_reload_drains_the_old_and_continues_from_checkpoints(tmp_path: Path, store: Store,
                                                                      activator: Activator) -> None:
    path = write(tmp_path, good())
    await activator.activate(path, trigger="startup")
    old = activator.current
    await producing(30)
    path = write(tmp_path, good("1.1.0"))
    entry = await activator.activate(path, trigger="watch")
    assert entry.outcome == "activated", entry.reason
    assert (entry.from_hash, entry.to_hash) == (sha(good()), sha(good("1.1.0")))
    assert old is not None and old.state == "stopped" and activator.current is not old
    assert entry.gap_seconds is not None and entry.gap_seconds >= 0
    assert entry.drained >= 0
    await producing(30)
    await activator.shutdown()
    seqs = sink_seqs()
    assert seqs == list(range(1, len(seqs) + 1))  # across the reload: nothing lost, nothing twice


async def test_unknown_reference_is_rejected_and_the_old_keeps_running(tmp_path: Path, store: Store,
                                                                         activator: Activator) -> None:
    await activator.activate(write(tmp_path, good()), trigger="startup")
    runtime = activator.current
    entry = await activator.activate("nosuch:v1.0.0", trigger="api")
    assert entry.outcome == "rejected" and "nosuch" in entry.reason
    assert entry.to_hash is None and entry.from_hash == sha(good())
    assert set(entry.phases) == {"resolve"}
    assert activator.current is runtime and runtime.state == "running"
    await producing(5)
    empty = await activator.activate("", trigger="api")
    assert empty.outcome == "rejected" and "empty reference" in empty.reason
    assert store.mixer_state().active_hash == sha(good())


async def test_invalid_scenario_is_rejected_with_every_problem(tmp_path: Path, store: Store,
                                                               activator: Activator) -> None:
    await activator.activate(write(tmp_path, good()), trigger="startup")
    runtime = activator.current
    bad = good("1.1.0").replace("t-pass", "no-such-type").replace("mid.out", "mdi.out")
    path = write(tmp_path, bad)
    entry = await activator.activate(path, trigger="watch")
    assert entry.outcome == "rejected"
    assert len(entry.problems) >= 2 and all(p.startswith(path) for p in entry.problems)
    assert "\n" not in entry.reason
    assert activator.current is runtime and runtime.state == "running"
    assert store.entries("scenario", "demo")[0].tag == "v1.0.0"  # the bad file was not imported


async def test_build_failure_is_rejected_and_the_old_keeps_running(tmp_path: Path, store: Store,
                                                                   activator: Activator) -> None:
    await activator.activate(write(tmp_path, good()), trigger="startup")
    runtime = activator.current
    path = write(tmp_path, good("1.1.0").replace("type: t-pass", "type: t-broken"))
    entry = await activator.activate(path, trigger="watch")
    assert entry.outcome == "rejected"
    assert entry.reason == "gear 'mid': cannot be built: ValueError: bad config for broken"
    assert set(entry.phases) == {"resolve", "build"} and entry.to_hash == sha(good("1.1.0").replace("type: t-pass", "type: t-broken"))
    assert activator.current is runtime and runtime.state == "running"
    assert store.mixer_state().active_hash == sha(good())
    await producing(5)


async def test_start_failure_rolls_back_to_the_last_known_good(tmp_path: Path, store: Store,
                                                               activator: Activator) -> None:
    await activator.activate(write(tmp_path, good()), trigger="startup")
    old = activator.current
    await producing(20)
    failing = good("1.1.0", ", config: {fail_start: true}")
    entry = await activator.activate(write(tmp_path, failing), trigger="watch")
    assert entry.outcome == "rolled-back"
    assert entry.reason.startswith("gear 'sink': start failed: RuntimeError: cannot open the thing; ")
    assert "rolled back to demo:v1.0.0" in entry.reason
    assert set(entry.phases) == {"resolve", "build", "stop", "start", "rollback"}
    assert (entry.from_hash, entry.to_hash) == (sha(good()), sha(failing))
    current = activator.current
    assert current is not None and current is not old and current.state == "running"
    assert current.scenario_hash == sha(good()) and activator.current_loaded.hash == sha(good())
    assert store.mixer_state().active_hash == sha(good())
    await producing(20)
    await activator.shutdown()
    seqs = sink_seqs()
    assert seqs == list(range(1, len(seqs) + 1))  # the restarted source continued from its checkpoint


async def test_rollback_failure_leaves_the_mixer_idle_and_failed(tmp_path: Path, store: Store,
                                                                 activator: Activator) -> None:
    await activator.activate(write(tmp_path, good()), trigger="startup")
    h.FAIL_START.add("sink")  # the known good one cannot start any more either
    entry = await activator.activate(write(tmp_path, good("1.1.0")), trigger="watch")
    assert entry.outcome == "failed"
    assert "rollback to demo:v1.0.0 failed: gear 'sink'" in entry.reason
    assert activator.current is None and activator.current_loaded is None and activator.state == "failed"
    assert store.mixer_state().active_hash == sha(good())  # a restart will try the known good one again
    h.FAIL_START.clear()
    again = await activator.activate(write(tmp_path, good("1.1.0")), trigger="api")
    assert again.outcome == "activated" and again.from_hash is None


async def test_first_start_failure_without_known_good_fails_idle(tmp_path: Path, store: Store,
                                                                 activator: Activator) -> None:
    entry = await activator.activate(write(tmp_path, good("1.0.0", ", config: {fail_start: true}")), trigger="startup")
    assert entry.outcome == "failed" and "no last known good scenario" in entry.reason
    assert activator.current is None and activator.state == "failed"
    assert store.mixer_state().active_hash is None


async def test_rollback_uses_the_stores_known_good_after_a_restart(tmp_path: Path, store: Store) -> None:
    first = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10)
    await first.activate(write(tmp_path, good()), trigger="startup")
    await first.shutdown()
    second = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10)
    try:
        entry = await second.activate(write(tmp_path, good("1.1.0", ", config: {fail_start: true}")), trigger="startup")
        assert entry.outcome == "rolled-back" and entry.from_hash is None
        assert second.current is not None and second.current.scenario_hash == sha(good())
    finally:
        await second.shutdown()


async def test_resume_and_shutdown(tmp_path: Path, store: Store) -> None:
    act = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10)
    assert await act.resume() is None
    path = write(tmp_path, good())
    await act.activate(path, trigger="startup")
    await producing(10)
    await act.shutdown()
    assert act.current is None
    assert store.mixer_state().active_hash == sha(good())  # kept, so `-s ''` resumes it
    handled = len(sink_seqs())

    again = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10)
    try:
        entry = await again.resume()
        assert entry is not None and entry.outcome == "activated" and entry.trigger == "resume"
        assert entry.ref == f"sha256:{sha(good())}"
        assert store.mixer_state().active_ref == path  # the reference a reload re-reads
        await producing(10)
    finally:
        await again.shutdown()
    seqs = sink_seqs()
    assert len(seqs) > handled and seqs == list(range(1, len(seqs) + 1))


async def test_last_reload_switches_with_the_running_scenario(tmp_path: Path, store: Store) -> None:
    """While activate() waits for the new scenario's first sink message (the reload gap), that
    scenario already runs: last_reload (what /status shows next to it) must be its attempt."""
    act = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10, gap_wait=60)
    try:
        await act.activate(write(tmp_path, good()), trigger="startup")
        await producing(5)
        v2 = good("1.1.0").replace("sink", "held")  # a new sink, held back by its gate
        h.GATES["held"] = asyncio.Event()
        task = asyncio.create_task(act.activate(write(tmp_path, v2), trigger="signal"))
        await wait_until(lambda: act.current_loaded is not None and act.current_loaded.hash == sha(v2), timeout=30)
        assert not task.done()  # still waiting for the gap
        assert act.last_reload is not None
        assert (act.last_reload.trigger, act.last_reload.outcome) == ("signal", "activated")
        assert act.last_reload.to_hash == sha(v2) and act.last_reload.id is None
        h.GATES["held"].set()
        entry = await asyncio.wait_for(task, 30)
        assert act.last_reload == entry and entry.id is not None and entry.gap_seconds is not None
        assert [e.trigger for e in store.journal()] == ["signal", "startup"]
    finally:
        h.GATES["held"].set()  # a failed assert must not leave the sink blocking the stop
        await act.shutdown()


async def test_late_first_message_fills_in_the_gap(tmp_path: Path, store: Store) -> None:
    act = Activator(store, h.catalog(), Brokers(store.home), stop_timeout=10, gap_wait=0)
    try:
        await act.activate(write(tmp_path, good()), trigger="startup")
        await producing(5)
        entry = await act.activate(write(tmp_path, good("1.1.0")), trigger="api")
        assert entry.outcome == "activated"
        await wait_until(lambda: act.last_reload is not None and act.last_reload.gap_seconds is not None)
        assert act.last_reload.id == entry.id and act.last_reload.gap_seconds >= 0
        await wait_until(lambda: store.journal(1)[0].gap_seconds is not None)
        assert store.journal(1)[0].gap_seconds == act.last_reload.gap_seconds
    finally:
        await act.shutdown()


async def test_journal_records_every_attempt_in_order(tmp_path: Path, store: Store, activator: Activator) -> None:
    await activator.activate(write(tmp_path, good()), trigger="startup")
    await activator.activate("demo:v1.0.0", trigger="api")
    await activator.activate("nosuch", trigger="api")
    await activator.activate(write(tmp_path, good("1.1.0", ", config: {fail_start: true}")), trigger="signal")
    await activator.activate(write(tmp_path, good("1.2.0")), trigger="watch")
    rows = store.journal()
    assert [r.outcome for r in rows] == ["activated", "rolled-back", "rejected", "unchanged", "activated"]
    assert [r.trigger for r in rows] == ["watch", "signal", "api", "api", "startup"]
    for row in rows:
        assert row.as_dict()["ts"] and all(v >= 0 for v in row.phases.values())


async def test_a_cancelled_reload_still_drains_the_old_scenario(tmp_path: Path, store: Store,
                                                                activator: Activator) -> None:
    """SIGTERM cancels the task running a SIGHUP reload: the reload must still finish, or the old
    scenario is left half-stopped with its memory queues neither drained nor counted."""
    gate = h.GATES["sink"] = asyncio.Event()
    await activator.activate(write(tmp_path, good()), trigger="startup")
    old = activator.current
    assert old is not None
    await wait_until(lambda: old.wires["mid.out->sink.in"].status().to_json()["in_queue"] > 0)
    reload = asyncio.create_task(activator.activate(write(tmp_path, good("1.1.0")), trigger="signal"))
    await wait_until(lambda: old.state == "stopping")
    reload.cancel()
    await asyncio.sleep(0.05)
    gate.set()
    await activator.shutdown()
    assert old.state == "stopped"
    assert all(w.stats.dropped == 0 for w in old.wires.values())
    seqs = sink_seqs()
    assert seqs == list(range(1, len(seqs) + 1))
