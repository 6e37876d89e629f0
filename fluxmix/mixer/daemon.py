"""The `fluxmix-mixer` process: `Mixer(settings).run()` until stopped (arq's `Worker` is the model).

`run()` opens the store, checks the startup reference, starts the HTTP API and the first
activation, serves until `stop()` (SIGTERM/SIGINT, or a test that runs the mixer in-process),
then drains the running scenario and releases everything. SIGHUP reloads. The mixer's state and
its activations are `MixerService` (fluxmix.mixer.service), which the API serves.

Startup errors the operator can fix (a bad file, an unknown reference, a busy port) are raised
as FluxmixError before anything runs, so the CLI prints one line and exits non-zero. After
startup nothing a scenario does makes the process exit: the Activator keeps the last known good
scenario and the journal says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Coroutine

from aiohttp import web

from fluxmix import __version__
from fluxmix.errors import ActivationError, StoreError
from fluxmix.gears.catalog import Catalog
from fluxmix.mixer.http import start_http
from fluxmix.mixer.service import MixerService, normalize_ref, path_of
from fluxmix.mixer.settings import MixerSettings, is_loopback
from fluxmix.runtime.gc_policy import throughput_gc
from fluxmix.transports.registry import Brokers

log = logging.getLogger("fluxmix.mixer")


def preflight(store: Any, catalog: Catalog, ref: str, shown: str) -> None:
    """Check the startup reference before anything starts; raises UserError (exit 2) with the
    file, field and reason. A path is parsed and validated (spec references included) but not
    imported: the activation imports it."""
    from fluxmix.loading import parse_scenario, read_document, resolve_scenario

    path = path_of(ref)
    if path is None:
        resolve_scenario(store, ref, catalog=catalog)  # NotFoundError, ValidationError, CorruptBlobError
        return
    shown_path = path_of(shown) or path  # errors name the file as the operator wrote it
    data = read_document(shown_path)
    parse_scenario(data, str(shown_path), catalog=catalog, store=store)


def require_writable(home: Path) -> None:
    """Refuse a store this user cannot write: the mixer imports, journals and checkpoints in it.

    Without this, every activation ends in an SQLite 'readonly database' traceback in the log.
    """
    for path in (home, home / "blobs", home / "index.sqlite3"):
        if path.exists() and not os.access(path, os.W_OK):
            raise StoreError(f"{path}: not writable by this user; the mixer records scenarios, its journal and checkpoints in the store")


def _register_secrets(settings: MixerSettings) -> None:
    """Mask the API token and NATS credentials in every log line and journal row."""
    from fluxmix.redact import register_secret

    register_secret(settings.api_token)
    for key in ("password", "token"):
        value = settings.nats.connect_options.get(key)
        register_secret(value if isinstance(value, str) else None)


class Mixer:
    """The mixer process: settings in, `run()` until `stop()`; returns the exit status.

    With `handle_signals` (the default, as `fluxmix-mixer` runs it) SIGTERM and SIGINT stop it,
    a second SIGINT exits at once without draining, and SIGHUP reloads; without, only `stop()`
    does (tests run it in-process that way). `service` is the MixerService once the store is
    open; `started` is set once the startup activation (or resume) is done and it serves.
    """

    def __init__(self, settings: MixerSettings, *, handle_signals: bool = True) -> None:
        self.settings = settings
        self.handle_signals = handle_signals
        self.service: MixerService | None = None
        self.started = asyncio.Event()
        self.http: web.AppRunner | None = None  # its `addresses` say where the API listens
        self._stop = asyncio.Event()
        self._interrupts = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hup_while_starting = False
        self.fleet: Any = None  # a fluxmix.fleet.FleetMember with --fleet

    def stop(self, why: str = "stop requested") -> None:
        """Drain and stop (idempotent); run() returns once the scenario has drained."""
        if not self._stop.is_set():
            log.info("%s: draining and stopping (up to %ss)", why, self.settings.stop_timeout)
            self._stop.set()

    def _on_signal(self, signame: str) -> None:
        self._interrupts += 1
        if self._interrupts > 1 and signame == "SIGINT":
            log.error("second interrupt: exiting now without draining")
            logging.shutdown()
            os._exit(130)
        if not self._stop.is_set():
            log.info("%s received: draining and stopping (up to %ss; press Ctrl-C again to force)", signame,
                     self.settings.stop_timeout)
            self._stop.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> None:
        """What SIGHUP does: re-read the followed reference (after startup, if it is still going)."""
        service = self.service
        if service is None or service.phase == "starting":
            # The operator may have imported a new tag after the startup reference was resolved:
            # dropping the signal would leave the old one running. Reload once startup is done.
            if not self._hup_while_starting:
                log.info("SIGHUP received while starting: reloading once startup has finished")
            self._hup_while_starting = True
            return
        if service.phase != "serving":
            log.warning("SIGHUP ignored while %s", service.phase)
            return
        log.info("SIGHUP received: reloading %s", service.following or "the active scenario")
        try:
            await service.reload(trigger="signal")
        except ActivationError as error:
            log.warning("%s", error)

    async def run(self) -> int:
        """Serve until stopped; returns the process exit status (0 after a clean drain).

        Raises FluxmixError for startup problems (before any gear or server has started)."""
        loop = asyncio.get_running_loop()
        if self.handle_signals:
            # Installed before anything slow (store, pre-flight, activation): until then SIGHUP's
            # default action would kill the process, and SIGTERM would skip the graceful stop.
            loop.add_signal_handler(signal.SIGTERM, self._on_signal, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self._on_signal, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload(), "sighup"))
        try:
            with throughput_gc():  # see fluxmix.runtime.gc_policy: the collector cost more than the gears
                return await self._serve(self._open())
        finally:
            if self.handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(signum)
            if self.fleet is not None:  # after the drain: what is left released, deregistered
                await self.fleet.leave()
                self.fleet = None
            if self.http is not None:
                await self.http.cleanup()
                self.http = None
            if self.service is not None:
                await self.service.brokers.close()
                self.service.store.close()

    def _open(self) -> MixerService:
        """Store, pre-flight check of the startup reference, token, brokers, activator."""
        from fluxmix.mixer.activation import Activator
        from fluxmix.store import open_store

        settings = self.settings
        store = open_store(settings.home)
        try:
            require_writable(store.home)
            catalog = Catalog.default()
            ref = (settings.ref or "").strip()
            if ref:
                preflight(store, catalog, normalize_ref(ref), shown=ref)
            if settings.http_enabled and settings.auth and not settings.api_token:
                from fluxmix.mixer.token import load_or_create_token, token_path

                settings = dataclasses.replace(settings, api_token=load_or_create_token(store.home))
                log.info("the API token is in %s (`fluxmix mixer` reads it from there)", token_path(store.home))
            _register_secrets(settings)
            brokers = Brokers(store.home, settings.nats, memory_queue_size=settings.memory_queue_size)
            activator = Activator(store, catalog, brokers, stop_timeout=settings.stop_timeout,
                                  verify_within=settings.verify_within, journal_keep=settings.journal_keep,
                                  journal_keep_seconds=settings.journal_keep_seconds, reload_mode=settings.reload_mode)
            activator.paused = store.mixer_state().paused  # POST /pause survives a restart
        except BaseException:
            store.close()
            raise
        self.settings = settings
        self.service = MixerService(settings, store, catalog, brokers, activator)
        return self.service

    async def _join_fleet(self, service: MixerService) -> None:
        """--fleet: join before the first activation, so it already runs as a member."""
        from fluxmix.fleet import FleetMember

        settings = self.settings
        self.fleet = FleetMember(settings.fleet, settings.nats.servers, settings.nats.connect_options,
                                 replicas=settings.nats.replicas, home=service.store.home, store=service.store)
        await self.fleet.join()
        self.fleet.attach(service)

    async def _serve(self, service: MixerService) -> int:
        settings = self.settings
        t0 = time.monotonic()
        ref = (settings.ref or "").strip()
        startup_ref = normalize_ref(ref) if ref else ""
        log.info(
            "fluxmix-mixer %s starting",
            __version__,
            extra={"store": str(service.store.home), "pid": os.getpid(), "ref": startup_ref or None},
        )
        if settings.http_enabled:
            if not is_loopback(settings.http_host) and not settings.auth:
                log.warning(
                    "the HTTP API listens on %s with --no-auth: anyone who can reach it can activate scenarios",
                    settings.http_host,
                )
            self.http = await start_http(service, settings.http_host, settings.http_port)

        if settings.fleet is not None:
            await self._join_fleet(service)
        started = time.monotonic()
        if self._stop.is_set():  # stopped while opening the store or checking the reference
            entry = None
        elif startup_ref:
            entry = await service.activate(startup_ref, trigger="startup")
        else:
            entry = await service.resume()
        service.phase = "serving"
        if self.fleet is not None:
            await self.fleet.start()
        self.started.set()
        if entry is not None and entry.outcome == "activated":
            log.debug("startup took %.3fs (activation %.3fs)", time.monotonic() - t0, time.monotonic() - started)
        if self._hup_while_starting and not self._stop.is_set():  # a stop asked for meanwhile wins
            self._hup_while_starting = False
            self._spawn(self.reload(), "sighup")
        if settings.follow_latest:
            self._spawn(service.follow_latest(settings.follow_latest), "follow-latest")
        self._spawn(service.refresh_globals(), "refresh-globals")
        self._spawn(service.activator.prune_journal(), "journal-retention")

        await self._stop.wait()
        code = 0
        for task in list(self._tasks):
            task.cancel()
        try:
            await asyncio.wait_for(service.shutdown(), settings.stop_timeout + 10)
        except asyncio.TimeoutError:
            log.error("could not stop within %ss: exiting anyway", settings.stop_timeout + 10)
            code = 1
        log.info("stopped", extra={"uptime_seconds": round(service.uptime, 3)})
        return code


async def serve(settings: MixerSettings) -> int:
    """Run the mixer until SIGTERM/SIGINT (what `fluxmix-mixer` does); returns the exit status."""
    return await Mixer(settings).run()
