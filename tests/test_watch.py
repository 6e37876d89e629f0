"""The scenario file watcher's stop: it must hold when the stop meets a reload the watcher started."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fluxmix.mixer.watch import FileWatcher
from tests.support.polling import wait_until


async def test_a_stop_during_a_reload_that_stops_the_watcher_again_ends_cleanly(tmp_path: Path) -> None:
    """SIGTERM during a watch-triggered reload: the mixer's shutdown stops the watcher while the
    reload is running, and the reload then re-syncs the watch, which stops the same watcher from
    inside its own callback. That used to wait for itself, be cancelled, and fail the shutdown
    (the mixer exited 1)."""
    path = tmp_path / "scenario.yaml"
    path.write_text("a: 1\n")
    entered, release = asyncio.Event(), asyncio.Event()
    calls: list[Path] = []

    async def reload(changed: Path) -> None:  # what MixerService._file_changed + sync_watch do
        calls.append(changed)
        entered.set()
        await release.wait()
        await watcher.stop()

    watcher = FileWatcher(path, reload, debounce_ms=0)
    await watcher.start()
    path.write_text("a: 2\n")
    await wait_until(entered.is_set, "the reload to start")

    shutdown = asyncio.create_task(watcher.stop())
    await asyncio.sleep(0)  # the shutdown's stop is now waiting for the watcher
    release.set()
    await shutdown  # raised AttributeError after a 5 s deadlock before the fix
    assert calls == [path.resolve()]
    await watcher.stop()  # and once more: a no-op


async def test_stop_before_start_and_twice_is_harmless(tmp_path: Path) -> None:
    async def reload(changed: Path) -> None:
        raise AssertionError("no change was made")

    watcher = FileWatcher(tmp_path / "none.yaml", reload)
    await watcher.stop()
    await watcher.start()
    await asyncio.gather(watcher.stop(), watcher.stop())


async def test_the_reload_itself_stops_the_watcher_without_waiting_for_itself(tmp_path: Path) -> None:
    """A reload that stops its own watcher (the watch re-synced to nothing) returns at once: the
    watcher's task is not left waiting for the reload and then cancelled."""
    path = tmp_path / "scenario.yaml"
    path.write_text("a: 1\n")
    stopped = asyncio.Event()

    async def reload(changed: Path) -> None:
        await watcher.stop()
        stopped.set()

    watcher = FileWatcher(path, reload, debounce_ms=0)
    await watcher.start()
    task = watcher._task
    assert task is not None
    path.write_text("a: 2\n")
    await wait_until(stopped.is_set, "the reload to stop its watcher")
    await asyncio.wait_for(task, 5)  # ends on its own once the reload returned
    assert not task.cancelled()
