"""CachedCheckpoints: reads of what this mixer wrote come from memory, every write reaches the store."""

from __future__ import annotations

from pathlib import Path

from fluxmix.mixer.checkpoint_cache import CachedCheckpoints
from fluxmix.store import open_store


class CountingStore:
    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.loads = 0

    def load_checkpoint(self, scenario_name: str, gear: str) -> object:
        self.loads += 1
        return self.inner.load_checkpoint(scenario_name, gear)  # type: ignore[attr-defined]

    def save_checkpoint(self, scenario_name: str, gear: str, value: object) -> None:
        self.inner.save_checkpoint(scenario_name, gear, value)  # type: ignore[attr-defined]


def test_a_written_position_is_read_back_without_the_store_and_is_in_the_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "home")
    try:
        counting = CountingStore(store)
        cache = CachedCheckpoints(counting)  # type: ignore[arg-type]
        assert cache.load_checkpoint("s", "src") is None and counting.loads == 1  # unknown: asks the store
        cache.save_checkpoint("s", "src", {"seq": 41, "files": ["a"]})
        value = cache.load_checkpoint("s", "src")
        assert value == {"seq": 41, "files": ["a"]} and counting.loads == 1 and cache.hits == 1
        value["files"].append("mutated by the gear")  # a reader's copy is its own
        assert cache.load_checkpoint("s", "src") == {"seq": 41, "files": ["a"]}
        assert store.load_checkpoint("s", "src") == {"seq": 41, "files": ["a"]}  # a restart resumes from it
        cache.save_checkpoint("s", "src", None)  # None deletes, in both
        assert cache.load_checkpoint("s", "src") is None and store.load_checkpoint("s", "src") is None
        assert counting.loads == 1
    finally:
        store.close()


def test_a_failed_write_is_not_remembered(tmp_path: Path) -> None:
    store = open_store(tmp_path / "home")
    try:
        cache = CachedCheckpoints(store)
        cache.save_checkpoint("s", "src", 7)
        try:
            cache.save_checkpoint("s", "src", float("nan"))  # the store refuses non-JSON values
        except ValueError:
            pass
        else:
            raise AssertionError("a NaN checkpoint was accepted")
        assert cache.load_checkpoint("s", "src") == 7 == store.load_checkpoint("s", "src")
    finally:
        store.close()
