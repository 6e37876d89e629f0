"""The running mixer's state and its one entry point for activations (`MixerService`).

Every trigger (startup, the file watcher, SIGHUP, the `name:latest` poller, the HTTP API) goes
through `MixerService.activate()`, which runs one activation at a time, so a file save, a SIGHUP
and an API call arriving together are applied in order instead of racing. It also answers what
the API reports (`status()`, `readiness()`), as the typed model of fluxmix.status.

The process around it (store, signals, HTTP, stop) is `fluxmix.mixer.daemon.Mixer`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fluxmix import __version__
from fluxmix.errors import ActivationError, FluxmixError, NothingToReload, excerpt
from fluxmix.gears.catalog import Catalog
from fluxmix.mixer import events
from fluxmix.mixer.metrics import RetiredCounters
from fluxmix.mixer.settings import MixerSettings
from fluxmix.mixer.watch import FileWatcher
from fluxmix.refs import short_hash
from fluxmix.status import MixerStatus, ScenarioInfo
from fluxmix.transports.registry import Brokers

log = logging.getLogger("fluxmix.mixer")

OK_OUTCOMES = ("activated", "unchanged")


def normalize_ref(ref: str) -> str:
    """Path references become absolute, so the journal and `active_ref` mean the same thing
    whatever the mixer's working directory is later; other references pass unchanged (a bad
    one is left for the Activator to reject and journal)."""
    from fluxmix.store import PathRef, parse_ref

    try:
        parsed = parse_ref(ref)
    except FluxmixError:
        return ref
    if isinstance(parsed, PathRef):
        return str(Path(os.path.expanduser(str(parsed.path))).resolve())
    return ref


def path_of(ref: str | None) -> Path | None:
    if not ref:
        return None
    from fluxmix.store import PathRef, parse_ref

    try:
        parsed = parse_ref(ref)
    except FluxmixError:
        return None
    return Path(parsed.path) if isinstance(parsed, PathRef) else None


def allowed_scenario_dirs(settings: MixerSettings, startup_ref: str) -> tuple[Path, ...]:
    """Where POST /activate may name files: --scenario-dir, plus the directory of the -s file."""
    dirs = list(settings.scenario_dirs)
    startup_path = path_of(startup_ref)
    if startup_path is not None:
        dirs.append(startup_path.parent)
    return tuple(dict.fromkeys(Path(d).resolve() for d in dirs))


def outside_allowed_dirs(ref: str, allowed: tuple[Path, ...]) -> str | None:
    """Why a path reference must not be read on behalf of the API (None: not a path, or allowed).

    `ref` is normalised (absolute); resolving it follows symlinks without opening the file, so a
    link inside an allowed directory that points elsewhere is refused too.
    """
    path = path_of(ref)
    if path is None:
        return None
    real = path.resolve()
    if any(real.is_relative_to(directory) for directory in allowed):
        return None
    where = ", ".join(str(d) for d in allowed) if allowed else "none: the mixer was not started with -s FILE"
    return (
        f"{excerpt(str(path), 200)}: not inside a directory the API may activate files from ({where}); "
        "start the mixer with --scenario-dir DIR to allow one (the file was not read)"
    )


class MixerService:
    """The daemon's state and its one entry point for activations."""

    def __init__(self, settings: MixerSettings, store: Any, catalog: Catalog, brokers: Brokers, activator: Any) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.brokers = brokers
        self.activator = activator
        self.started_at = datetime.now(timezone.utc)
        self._t0 = time.monotonic()
        self.phase = "starting"  # starting | serving | stopping
        self.following: str | None = None  # the reference SIGHUP / watch / poll re-read
        self.outcomes: Counter[str] = Counter()
        self.retired = RetiredCounters()
        self._last_entry: Any = None
        self.failure: str | None = None  # set while nothing runs although something should
        self._lock = asyncio.Lock()
        self._watch_lock = asyncio.Lock()
        self.watcher: FileWatcher | None = None
        self._last_polled_hash: str | None = None
        # GET /events; publishing never waits on a client. The poll reads what /status serves.
        self.events = events.EventBus(lambda: self.status().to_json())
        self.allowed_dirs: tuple[Path, ...] = allowed_scenario_dirs(settings, normalize_ref(settings.ref or ""))
        self.fleet: Any = None  # a fluxmix.fleet.FleetMember with --fleet (it sets itself here)

    # ---- activations ----

    async def activate(self, ref: str, *, trigger: str, confined: bool = False) -> Any:
        """Activate `ref` (serialised with every other trigger); returns the journal entry.

        `confined` (a reference from the API): a path outside `allowed_dirs` is refused and
        journaled without being read."""
        ref = normalize_ref(ref)
        async with self._lock:
            if self.phase == "stopping":
                raise ActivationError("the mixer is stopping")
            if self.phase == "starting" and trigger == "api":
                raise ActivationError("the mixer is still starting; try again when /readyz answers")
            before = self.activator.current
            started = time.monotonic()
            self.events.publish("activation-started", {"trigger": trigger, "ref": ref})
            refusal = outside_allowed_dirs(ref, self.allowed_dirs) if confined else None
            if refusal is not None:
                entry = await self.activator.refuse(ref, trigger=trigger, reason=refusal)
            else:
                entry = await self.activator.activate(ref, trigger=trigger)
            self._record(entry, before, ref, time.monotonic() - started)
            self.events.publish("activation-finished", entry.as_dict())
        if self.fleet is not None:
            await self.fleet.after_activation(entry)  # the operator's activation becomes the fleet's
        await self.sync_watch()
        return entry

    async def resume(self) -> Any:
        async with self._lock:
            started = time.monotonic()
            entry = await self.activator.resume()
            if entry is not None:  # nothing to resume is no activation: no events
                self.events.publish("activation-started", {"trigger": "resume", "ref": entry.ref})
                self.events.publish("activation-finished", entry.as_dict())
            if entry is None:
                log.info(
                    "no active scenario to resume: idle, waiting for an activation "
                    "(POST /activate, `fluxmix mixer activate REF`, or restart with -s REF)"
                )
                return None
            followed = getattr(self.activator, "current_ref", None) or self.store.mixer_state().active_ref
            self._record(entry, None, followed, time.monotonic() - started)
        return await self._catch_up_with_file(entry, followed) or entry

    async def _catch_up_with_file(self, resumed: Any, followed: str | None) -> Any:
        """After a resume by hash: when the followed file now holds other bytes (edited while the
        mixer was down), activate the file as the watcher would have, and log both hashes.

        The resumed bytes run first, as the contract says; the file then goes through the normal
        path (validate, build, roll back), journaled as a `watch` trigger, so an invalid edit is
        rejected and the resumed scenario keeps running. A resume that did not come up is
        followed by the file too (it may hold the fix). With --no-watch only the warning is
        logged. Returns the file's journal entry, or None when nothing was activated.
        """
        import hashlib

        from fluxmix.loading import read_document

        path = path_of(followed)
        running = resumed.to_hash
        if path is None or not running:
            await self.sync_watch()
            return None
        try:
            data = await asyncio.to_thread(read_document, path)
        except FluxmixError as error:
            log.warning("resumed sha256:%s, last activated from %s; cannot compare it with the file now: %s",
                        running, path, error)
            await self.sync_watch()
            return None
        on_disk = hashlib.sha256(data).hexdigest()
        if on_disk == running:
            await self.sync_watch()
            return None
        fields = {"resumed_hash": running, "file_hash": on_disk, "path": str(path)}
        if not self.settings.watch:
            log.warning("resumed sha256:%s from the store, but %s now holds sha256:%s (edited while the mixer "
                        "was down); --no-watch: not activating it (SIGHUP or POST /activate does)",
                        running, path, on_disk, extra=fields)
            await self.sync_watch()
            return None
        log.warning("resumed sha256:%s from the store, but %s now holds sha256:%s (edited while the mixer was "
                    "down): activating the file", running, path, on_disk, extra=fields)
        return await self.activate(str(path), trigger="watch")

    async def reload(self, *, trigger: str) -> Any:
        """Re-read what the mixer follows: a path is re-read, `name`/`name:latest` re-resolved."""
        ref = self.following or self.store.mixer_state().active_ref
        if not ref:
            raise NothingToReload("nothing to reload: no scenario has been activated")
        return await self.activate(ref, trigger=trigger)

    def _record(self, entry: Any, before: Any, ref: str | None, elapsed: float) -> None:
        self._last_entry = entry
        self.outcomes[entry.outcome] += 1
        current = self.activator.current
        if before is not None and current is not before:
            try:
                self.retired.fold(before.status())
            except Exception:  # metrics must never break an activation
                log.exception("could not read the counters of the replaced runtime")
        elif current is not None:  # a partial reload: fold what it took out for good
            self.retired.fold(current.take_retired())
        # Why nothing runs, when something should: a failed start, or a startup/resume that did
        # not come up. A rejected API call while idle changes nothing, so it leaves readiness be.
        if current is not None:
            self.failure = None
        elif entry.outcome in ("failed", "rolled-back") or entry.trigger in ("startup", "resume"):
            self.failure = f"last activation {entry.outcome}: {entry.reason}"
        if entry.outcome in OK_OUTCOMES and ref:
            self.following = ref
        elif entry.trigger == "startup" and self.following is None and ref:
            # Nothing else to follow: keep watching the file the operator named, so fixing it
            # is enough to bring the mixer up.
            self.following = ref
        fields = {
            "trigger": entry.trigger,
            "ref": entry.ref,
            "outcome": entry.outcome,
            "from_hash": short_hash(entry.from_hash) if entry.from_hash else None,
            "to_hash": short_hash(entry.to_hash) if entry.to_hash else None,
        }
        if entry.outcome in OK_OUTCOMES:
            log.info("%s %s: %s", entry.outcome, ref, entry.reason or "ok", extra=fields)
        else:
            log.error(
                "activation %s: %s: %s", entry.outcome, ref, entry.reason, extra={**fields, "problems": list(entry.problems)}
            )
            for problem in entry.problems:
                log.error("  %s", problem)
        if entry.outcome == "activated" or (entry.outcome == "rolled-back" and current is not None):
            self._log_ready(elapsed)

    def _log_ready(self, elapsed: float) -> None:
        loaded = self.activator.current_loaded
        if loaded is None:
            return
        scenario = loaded.scenario
        log.info(
            "ready: %s:%s (%s), %d gears, %d wires, in %.3fs",
            loaded.name,
            loaded.tag or "-",
            short_hash(loaded.hash),
            len(scenario.gears),
            len(scenario.wires),
            elapsed,
            extra={
                "scenario": loaded.name,
                "tag": loaded.tag,
                "hash": loaded.hash,
                "gears": len(scenario.gears),
                "wires": len(scenario.wires),
                "ready_seconds": round(elapsed, 6),
            },
        )

    # ---- pause / resume ----

    @property
    def paused(self) -> bool:
        return bool(getattr(self.activator, "paused", False))

    async def pause_sources(self, *, trigger: str) -> dict[str, Any]:
        """Hold every source still; the rest of the pipeline drains. Remembered in the store
        (a reload or restart comes back paused) and journaled when it changes something."""
        return await self._set_paused(True, trigger=trigger)

    async def resume_sources(self, *, trigger: str) -> dict[str, Any]:
        return await self._set_paused(False, trigger=trigger)

    async def _set_paused(self, paused: bool, *, trigger: str) -> dict[str, Any]:
        from fluxmix.store import JournalEntry

        async with self._lock:
            if self.phase == "stopping":
                raise ActivationError("the mixer is stopping")
            if self.phase == "starting" and trigger == "api":
                raise ActivationError("the mixer is still starting; try again when /readyz answers")
            changed = self.paused != paused
            # Stored first: should the process die halfway, it comes back in the state asked for.
            await asyncio.to_thread(self.store.set_paused, paused)
            self.activator.paused = paused
            runtime = self.activator.current
            loaded = self.activator.current_loaded
            verb = "paused" if paused else "resumed"
            problem = None
            names: list[str] = []
            if runtime is not None:
                try:
                    names = await (runtime.pause_sources(timeout=self.settings.stop_timeout) if paused
                                   else runtime.resume_sources())
                except FluxmixError as error:
                    problem = str(error)
            if runtime is None:
                reason = f"sources {verb}: no scenario runs; the next one starts {'paused' if paused else 'normally'}"
            else:
                reason = f"sources {verb}: {', '.join(names) if names else 'none were running'}"
            if problem:
                reason += f"; {problem}"
            entry = None
            if changed or problem:
                digest = loaded.hash if loaded is not None else None
                entry = JournalEntry(ts=datetime.now(timezone.utc), trigger=trigger, ref=self.following,
                                     from_hash=digest, to_hash=digest, outcome=verb,  # type: ignore[arg-type]
                                     reason=reason)
                try:
                    entry.id = await asyncio.to_thread(self.store.record_activation, entry)
                except Exception:
                    log.exception("could not journal %s", verb)
                (log.error if problem else log.info)("%s", reason, extra={"paused": paused, "sources": names})
            result = {"paused": paused, "changed": changed, "sources": names, "reason": reason,
                      "error": problem, "entry": entry.as_dict() if entry is not None else None}
            self.events.publish(verb, result)
            return result

    # ---- triggers: file watch and name:latest polling ----

    async def sync_watch(self) -> None:
        """Watch the followed file when it is a path (and --watch), nothing otherwise."""
        async with self._watch_lock:
            wanted = path_of(self.following) if self.settings.watch and self.phase != "stopping" else None
            if wanted is not None:
                wanted = wanted.resolve()
            if self.watcher is not None and self.watcher.path == wanted:
                return
            if self.watcher is not None:
                await self.watcher.stop()
                self.watcher = None
            if wanted is not None:
                self.watcher = FileWatcher(wanted, self._file_changed, debounce_ms=self.settings.watch_debounce_ms)
                await self.watcher.start()

    async def _file_changed(self, path: Path) -> None:
        if self.phase == "stopping" or path_of(self.following) is None:
            return
        await self.activate(str(path), trigger="watch")

    async def refresh_globals(self) -> None:
        """Pick up global state written by another process within REFRESH_SECONDS (see globals_state)."""
        from fluxmix.globals_state import REFRESH_SECONDS

        # The baseline is what is loaded now, before gears write: a name first seen later (a new
        # scenario's globals) gets one event, so watchers never miss writes that all landed
        # before this loop first looked.
        published: dict[str, int] = dict(self.activator.globals.versions())
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await asyncio.to_thread(self.activator.globals.refresh_all)
            except Exception:  # a locked or broken store must not stop the loop: log and retry
                log.exception("could not refresh global state from the store")
            # Gears may write many times a second: watchers get one `globals` event a second at most.
            for name, version in self.activator.globals.versions().items():
                if published.get(name) != version:
                    self.events.publish("globals", {"scenario": name, "version": version})
                published[name] = version

    async def follow_latest(self, every: float) -> None:
        """Poll the store: a new highest tag of a followed `name`/`name:latest` is activated."""
        from fluxmix.store import NameRef, parse_ref

        while True:
            await asyncio.sleep(every)
            ref = self.following
            try:
                parsed = parse_ref(ref) if ref else None
                if not isinstance(parsed, NameRef) or parsed.tag is not None:
                    continue
                resolved = self.store.resolve(parsed)
            except FluxmixError as error:
                log.warning("polling %s failed: %s", ref, error)
                continue
            loaded = self.activator.current_loaded
            if (loaded is None or resolved.hash != loaded.hash) and resolved.hash != self._last_polled_hash:
                self._last_polled_hash = resolved.hash
                log.info("new latest tag for %s: %s", parsed.name, resolved.tag)
                try:
                    await self.activate(ref, trigger="tag")  # type: ignore[arg-type]
                except ActivationError as error:
                    log.warning("%s", error)

    # ---- what the API reports ----

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._t0

    def last_entry(self) -> Any:
        return getattr(self.activator, "last_reload", None) or self._last_entry

    def state(self) -> str:
        if self.phase != "serving":
            return self.phase
        runtime = self.activator.current
        if runtime is not None:
            return str(runtime.state)
        return "failed" if self.failure else "idle"

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): running, or idle by choice; otherwise why not."""
        if self.phase == "starting":
            return False, "starting"
        if self.phase == "stopping":
            return False, "stopping"
        if self.fleet is not None:  # a member that cannot reach the fleet's KV must not take traffic
            ok, why = self.fleet.readiness()
            if not ok:
                return False, why
        runtime = self.activator.current
        if runtime is None:
            if self.failure:
                return False, f"no scenario is running: {self.failure}"
            return True, "idle"
        if runtime.state != "running":
            return False, f"scenario is {runtime.state}"
        ok, why = self.brokers.ready
        if not ok:
            return False, why
        # Paused by the operator is still ready: the API answers and what is in flight drains.
        return True, "running, sources paused" if self.paused else "running"

    def scenario_info(self) -> ScenarioInfo | None:
        loaded = self.activator.current_loaded
        if loaded is None:
            return None
        return ScenarioInfo(
            name=loaded.name,
            tag=loaded.tag,
            hash=loaded.hash,
            ref=self.following,
            version=loaded.scenario.version,
            description=loaded.scenario.description,
            path=str(loaded.path) if loaded.path else None,
        )

    def view(self) -> dict[str, Any]:
        """What the live page and `hello` event draw: /status plus the scenario's layout."""
        from fluxmix.graph import layout

        loaded = self.activator.current_loaded
        return {"status": self.status().to_json(), "layout": layout(loaded.scenario) if loaded is not None else None,
                "can_reload": bool(self.settings.api_token)}

    def status(self) -> MixerStatus:
        runtime = self.activator.current
        current = runtime.status() if runtime is not None else None
        ready, reason = self.readiness()
        return MixerStatus(
            state=self.state(),
            ready=ready,
            reason=reason,
            paused=self.paused,
            scenario=self.scenario_info(),
            following=self.following,
            watching=str(self.watcher.path) if self.watcher is not None else None,
            gears=current.gears if current is not None else {},
            wires=current.wires if current is not None else {},
            brokers=self.brokers.status(),
            uptime_seconds=round(self.uptime, 3),
            started_at=self.started_at.isoformat(),
            last_reload=self.last_entry(),
            expectations=self.expectations(),
            store=str(self.store.home),
            pid=os.getpid(),
            version=__version__,
            fleet=self.fleet.status() if self.fleet is not None else None,
        )

    def expectations(self) -> list[dict[str, Any]]:
        """The running scenario's `expect:` lines: state (pending/passing/failing), since, value, why."""
        watch = getattr(self.activator, "expectations", None)
        return watch.report() if watch is not None else []

    # ---- stop ----

    async def shutdown(self) -> None:
        """Drain and stop the running scenario (after any activation in progress)."""
        self.phase = "stopping"
        await self.events.close()
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
        try:
            await asyncio.wait_for(self._lock.acquire(), self.settings.stop_timeout)
        except asyncio.TimeoutError:
            log.warning("an activation is still in progress after %ss; stopping anyway", self.settings.stop_timeout)
        else:
            self._lock.release()
        before = self.activator.current
        await self.activator.shutdown()
        if before is not None:
            try:
                self.retired.fold(before.status())
            except Exception:
                pass
