"""Watch one scenario file and call back when its content may have changed.

Editors save atomically (write a temp file, rename it over the original), which detaches a
watch placed on the file itself after the first save. So we watch the file's DIRECTORY and keep
only events for its name (see pitfalls.md, watchfiles). watchfiles batches a burst of events;
`debounce_ms` adds a quiet period on top so a save made of several writes triggers one reload.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Awaitable, Callable

from watchfiles import Change, awatch

log = logging.getLogger("fluxmix.mixer.watch")


class FileWatcher:
    def __init__(self, path: Path, on_change: Callable[[Path], Awaitable[None]], *, debounce_ms: int = 300) -> None:
        self.path = Path(path).resolve()
        self._on_change = on_change
        self._debounce = max(debounce_ms, 0) / 1000
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._callback: asyncio.Future[None] | None = None  # the change callback while it runs
        self._ready = asyncio.Event()

    def _wanted(self, change: Change, path: str) -> bool:
        return Path(path).name == self.path.name

    async def start(self) -> None:
        """Begin watching; returns once the watch is in place, so no change is missed after it."""
        self._task = asyncio.create_task(self._run(), name=f"watch {self.path}")
        await self._ready.wait()

    async def stop(self) -> None:
        """Stop watching. Safe to call twice, concurrently, and from the change callback itself:
        a reload started by this watcher re-syncs the watch when it ends, which stops this very
        watcher if the mixer is stopping meanwhile (SIGTERM during a reload). Waiting there for
        our own task deadlocked until the 5 s bound, and the second stop then failed the shutdown."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None or asyncio.current_task() in (task, self._callback):
            return  # called by the callback: the loop ends on the stop event once it returns
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            task.cancel()

    async def _run(self) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            log.warning("not watching %s: directory %s does not exist", self.path, directory)
            self._ready.set()
            return
        log.info("watching %s for changes", self.path, extra={"path": str(self.path)})
        try:
            watcher = awatch(directory, watch_filter=self._wanted, stop_event=self._stop, recursive=False, step=50)
            self._ready.set()
            async for changes in watcher:
                if self._debounce:
                    await self._quiet_period(watcher)
                if self._stop.is_set():
                    return
                if not self.path.exists():
                    log.warning("%s was removed; keeping the current scenario", self.path)
                    continue
                log.info("%s changed", self.path, extra={"changes": sorted(c.name for c, _ in changes)})
                # A task of its own, shielded: a stop that gives up waiting must not cut a reload
                # in the middle, and a stop called by the reload itself knows it by this task.
                self._callback = asyncio.ensure_future(self._on_change(self.path))
                try:
                    await asyncio.shield(self._callback)
                except Exception:  # a failing callback must not end the watch
                    log.exception("reload after a change of %s failed", self.path)
                finally:
                    self._callback = None
        except Exception:
            log.exception("watching %s stopped", self.path)
        finally:
            self._ready.set()

    async def _quiet_period(self, watcher: object) -> None:
        """Wait until no further change of the file for `debounce` seconds (bounded to 10 rounds)."""
        for _ in range(10):
            mtime = _mtime(self.path)
            try:
                await asyncio.wait_for(self._stop.wait(), self._debounce)
                return
            except asyncio.TimeoutError:
                pass
            if _mtime(self.path) == mtime:
                return


def _mtime(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
