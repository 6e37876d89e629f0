"""Global state: the store's tables, the cached snapshot, expressions, the set-global gear,
the `globals:` section's validation, and journal retention."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path

import pytest

import fluxmix.store._globals as store_globals
from fluxmix.errors import ExpressionSyntaxError, GlobalsError
from fluxmix.gears.catalog import Catalog
from fluxmix.gears.expressions import compile_expression
from fluxmix.gears.testing import GearHarness
from fluxmix.globals_state import MemoryBackend, ScenarioGlobals, use
from fluxmix.store import JournalEntry, open_store
from fluxmix.store._state import now
from fluxmix.validation import validate_scenario

DECLARED = {"threshold": {"initial": 100, "schema": {"type": "integer", "minimum": 0}},
            "blocked": {"initial": [], "schema": {"type": "array", "items": {"type": "string"}}}}


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_store(tmp_path / "home") as opened:
        yield opened


# ---------------------------------------------------------------- the store's tables


def test_store_values_survive_reopening_and_every_change_is_journaled(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.globals.set("s", "threshold", 100, who="a") == (None, 1)
        old, change = store.globals.set("s", "threshold", 150, who="b")
        assert old == 100 and change == 2
        store.globals.set("other", "threshold", 1, who="c")  # per scenario name
    with open_store(tmp_path) as store:
        assert store.globals.snapshot("s") == (2, {"threshold": 150})
        assert store.globals.delete("s", "threshold", who="d")[0] == 150
        assert store.globals.delete("s", "threshold", who="d") == (None, None)
        changes = store.globals.changes("s")
        assert [(c.op, c.who, c.old_value, c.new_value) for c in changes] == [
            ("delete", "d", 150, None), ("set", "b", 100, 150), ("set", "a", None, 100)]
        assert store.globals.snapshot("other")[1] == {"threshold": 1}


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("bad key", 1, "must be 1-128 characters"),
        ("", 1, "must be 1-128 characters"),
        ("k", float("nan"), "not a JSON value"),
        ("k", {1, 2}, "not a JSON value"),
        ("k", "x" * (store_globals.MAX_VALUE_BYTES + 1), "at most"),
    ],
)
def test_bad_keys_and_values_are_refused_and_nothing_is_written(store, key, value, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GlobalsError, match=reason):
        store.globals.set("s", key, value, who="t")
    assert store.globals.snapshot("s") == (0, {})


def test_key_count_is_bounded_per_scenario(store, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(store_globals, "MAX_KEYS", 3)
    for key in "abc":
        store.globals.set("s", key, 1, who="t")
    store.globals.set("s", "a", 2, who="t")  # an existing key may still change
    with pytest.raises(GlobalsError, match="already has 3 keys"):
        store.globals.set("s", "d", 1, who="t")
    store.globals.set("other", "d", 1, who="t")
    assert store.globals.snapshot("s")[1] == {"a": 2, "b": 1, "c": 1}


def test_two_store_handles_writing_distinct_keys_at_once_lose_nothing(tmp_path: Path) -> None:
    stores = [open_store(tmp_path), open_store(tmp_path)]
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for i in range(100):
                stores[index].globals.set("s", f"w{index}-{i}", i, who=f"w{index}")
                stores[index].globals.set("s", "shared", f"w{index}-{i}", who=f"w{index}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    values = stores[0].globals.snapshot("s")[1]
    assert len(values) == 201
    assert values["shared"] == stores[0].globals.changes("s", limit=1)[0].new_value  # last writer wins
    for opened in stores:
        opened.close()


# ---------------------------------------------------------------- the snapshot readers use


def test_schema_violation_is_refused_with_nothing_changed(store) -> None:  # type: ignore[no-untyped-def]
    view = ScenarioGlobals("s", store.globals, DECLARED)
    view.seed(who="initial")
    assert view.values() == {"threshold": 100, "blocked": []}
    with pytest.raises(GlobalsError, match=r"global threshold: violates the scenario's schema"):
        view.set("threshold", -1, who="t")
    with pytest.raises(GlobalsError, match=r"global blocked\[0\]: violates"):
        view.set("blocked", [3], who="t")
    assert view.values() == {"threshold": 100, "blocked": []}
    assert store.globals.snapshot("s")[1] == {"threshold": 100, "blocked": []}
    assert len(store.globals.changes("s")) == 2  # the two initial values only


def test_seed_never_overwrites_an_operators_value(store) -> None:  # type: ignore[no-untyped-def]
    store.globals.set("s", "threshold", 7, who="operator")
    view = ScenarioGlobals("s", store.globals, DECLARED)
    view.seed(who="initial")
    assert view.get("threshold") == 7 and view.get("blocked") == []


def test_writes_through_the_view_are_seen_at_once_and_other_writers_after_refresh(tmp_path: Path) -> None:
    with open_store(tmp_path) as mixer_store, open_store(tmp_path) as other_process:
        view = ScenarioGlobals("s", mixer_store.globals)
        view.refresh()
        view.set("a", 1, who="api")
        assert view.get("a") == 1  # write-through: the next message sees it
        other_process.globals.set("s", "b", 2, who="elsewhere")
        assert view.get("b") is None  # not yet: seen on the next refresh (REFRESH_SECONDS)
        assert view.refresh() is True and view.get("b") == 2
        assert view.refresh() is False  # nothing new: no re-read
        other_process.globals.set("s", "c", 3, who="elsewhere")
        view.set("d", 4, who="api")  # a gap in the change ids: the view re-reads everything
        assert view.values() == {"a": 1, "b": 2, "c": 3, "d": 4}


# ---------------------------------------------------------------- expressions


def test_expressions_read_the_running_scenarios_globals() -> None:
    passes = compile_expression('amount > globals.get("threshold", 100) and merchant not in globals.get("blocked", [])')
    body = {"amount": 150, "merchant": "acme"}
    token = use(None)
    try:
        assert passes.evaluate(body) is True  # no globals: the defaults
        view = ScenarioGlobals("s", MemoryBackend())
        use(view)
        view.set("threshold", 200, who="t")
        assert passes.evaluate(body) is False
        view.set("threshold", 10, who="t")
        view.set("blocked", ["acme"], who="t")
        assert passes.evaluate(body) is False
        view.delete("blocked", who="t")
        assert passes.evaluate(body) is True
    finally:
        from fluxmix.globals_state import _CURRENT

        _CURRENT.reset(token)


@pytest.mark.parametrize("text", ["globals.keys()", "body.get('x')", "globals.get.x", "get.globals('x')"])
def test_only_globals_get_is_an_allowed_dotted_call(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError, match="attribute access"):
        compile_expression(text)


# ---------------------------------------------------------------- the set-global gear


def test_set_global_gear_writes_then_passes_the_message_on() -> None:
    async def scenario() -> None:
        async with GearHarness("set-global", {"key": 'f"seen-{merchant}"', "value": "amount"}) as harness:
            await harness.send({"merchant": "acme", "amount": 3})
            assert harness.ctx.globals.get("seen-acme") == 3
            assert harness.ctx.bodies("out") == [{"merchant": "acme", "amount": 3}]
            with pytest.raises(Exception, match="not a string"):
                await GearHarness("set-global", {"key": "amount", "value": "1"}).send({"amount": 3})

    asyncio.run(scenario())


# ---------------------------------------------------------------- the globals: section


def test_globals_section_problems_are_reported_with_every_other_problem() -> None:
    raw = {
        "name": "s",
        "globals": {
            "threshold": {"initial": -1, "schema": {"type": "integer", "minimum": 0}},
            "bad key": {"initial": 1},
            "listy": {"schema": {"type": "nope"}},
            "typo": {"intial": 1},
            "flat": 3,
        },
        "gears": [{"name": "g", "type": "no-such-type"}],
        "wires": [],
    }
    problems = [str(p) for p in validate_scenario(raw, catalog=Catalog.default())]
    assert any(p.startswith("gears[0]") for p in problems)
    assert any(p.startswith("globals.threshold.initial: does not match its schema") for p in problems)
    assert any(p.startswith("globals.bad key: global key") for p in problems)
    assert any(p.startswith("globals.listy.schema: not a valid JSON Schema") for p in problems)
    assert any(p.startswith("globals.typo.intial: unknown key; did you mean 'initial'?") for p in problems)
    assert any(p.startswith("globals.flat: must be a mapping") for p in problems)


def test_a_valid_globals_section_builds_into_the_scenario() -> None:
    from fluxmix.scenario import build_scenario

    raw = {"name": "s", "globals": DECLARED, "gears": [{"name": "g", "type": "generate", "config": {"count": 1}}],
           "wires": []}
    assert validate_scenario(raw, catalog=Catalog.default()) == []
    assert build_scenario(raw).globals == DECLARED


# ---------------------------------------------------------------- journal retention


def _entry(to_hash: str, age: timedelta) -> JournalEntry:
    return JournalEntry(ts=now() - age, trigger="api", ref="r", from_hash=None, to_hash=to_hash,
                        outcome="activated", reason="")


def test_retention_keeps_the_newest_the_young_and_the_active_and_known_good(store) -> None:  # type: ignore[no-untyped-def]
    old = timedelta(days=60)
    active, good, stale = "a" * 64, "b" * 64, "c" * 64
    ids = {name: store.record_activation(_entry(digest, old)) for name, digest in
           (("good", good), ("active", active), ("stale1", stale), ("stale2", stale))}
    young = store.record_activation(_entry(stale, timedelta(seconds=1)))
    newest = store.record_activation(_entry(stale, old))
    store.set_active(good, "r", known_good=True)
    store.set_active(active, "r", known_good=False)  # active differs from last known good
    removed = store.prune_journal(keep_last=1, keep_seconds=86400)
    kept = {e.id for e in store.journal(limit=100)}
    assert kept == {ids["good"], ids["active"], young, newest}
    assert removed == 2


def test_retention_of_global_changes_keeps_each_keys_newest_change(store) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        store.globals.set("s", "a", i, who="t")
    store.globals.set("s", "b", 1, who="t")
    store.prune_journal(keep_last=0, keep_seconds=0)
    assert [(c.key, c.new_value) for c in store.globals.changes("s")] == [("b", 1), ("a", 4)]
    assert store.globals.snapshot("s")[0] == 6  # the change counter never goes back


def test_scenario_tests_run_against_the_declared_initial_values(tmp_path: Path) -> None:
    from tests.support.mixer import run_fluxmix

    path = tmp_path / "gated.yaml"
    path.write_text("""\
name: gated
globals:
  threshold: {initial: 5, schema: {type: integer}}
gears:
  - {name: src, type: generate, config: {count: 1}}
  - {name: gate, type: filter, config: {where: 'seq % 10 < globals.get("threshold", 10)'}}
  - {name: sink, type: log}
wires:
  - {from: src.out, to: gate.in, transport: memory}
  - {from: gate.out, to: sink.in, transport: memory}
tests:
  - name: below passes, above is rejected
    inputs: [{at: gate.in, bodies: [{seq: 3}, {seq: 7}]}]
    outputs:
      - {from: sink.in, bodies: [{seq: 3}]}
      - {from: gate.rejected, bodies: [{seq: 7}]}
""")
    done = run_fluxmix(tmp_path / "home", tmp_path, "scenario", "test", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 1 test passed" in done.stdout
