"""Activation: the state machine that swaps one running scenario for another without losing the mixer.

    resolve + validate -> build -> stop the old (drain) -> start the new
          |                 |                                  |
       rejected          rejected                   stop the new, restart the last
    (old untouched)   (old untouched)               known good: rolled-back (or failed)

Everything that can be checked is checked before the old scenario is touched, so a bad file or
a gear that refuses its config costs nothing. Only a failure in `start()` happens after the old
one stopped; then the last known good scenario is started again from the exact bytes that ran
before, and its sources continue from their checkpoints. Every attempt is journaled in the store.

With `--reload partial` (the default) a running scenario of the same name is not replaced: only
the gears and wires the change touches are built, stopped and started (fluxmix.runtime.reload),
and a failed start brings back the previous gears (the flipped diff) rather than the whole
known good scenario. The journal entry says what restarted and what was kept.

The processing gap of a reload is measured by a `ReloadStopwatch` (fluxmix.mixer.stopwatch)
installed on the sinks while the reload runs. The journal row is written when the activation
ends; to fill in its gap, `activate()` waits up to `gap_wait` seconds for the first message after
the reload. A first message that comes later updates `last_reload` and the row
(`update_activation_gap`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from fluxmix.errors import FluxmixError, GearError, UserError, ValidationError, bound_message
from fluxmix.gears.catalog import Catalog
from fluxmix.globals_state import GlobalsHub
from fluxmix.loading import LoadedScenario, resolve_scenario
from fluxmix.mixer.checkpoint_cache import CachedCheckpoints
from fluxmix.mixer.expectations import DEFAULT_INTERVAL, ExpectationWatch
from fluxmix.mixer.stopwatch import GapWatch, ReloadStopwatch
from fluxmix.redact import redact, redact_value
from fluxmix.refs import short_hash
from fluxmix.runtime import DEFAULT_STOP_TIMEOUT, Runtime
from fluxmix.runtime.reload import ReloadPlan, ReloadRolledBack, plan_reload
from fluxmix.runtime.reload import apply as apply_reload, prepare as prepare_reload
from fluxmix.store import JournalEntry, Store
from fluxmix.transports.registry import Brokers

log = logging.getLogger(__name__)

DEFAULT_GAP_WAIT = 1.0
RELOAD_MODES = ("partial", "full")  # --reload: restart what a change touches, or every gear


# An activation's CPU-heavy steps (parse and validate, the store's writes) run in threads, but a
# thread holding the GIL keeps it up to sys.getswitchinterval() (5 ms by default) each time the
# event loop asks for it back: the gears that keep running through a partial reload stalled for
# whole milliseconds per message. While a
# partial reload runs the loop gets the GIL back within this much. Not with --reload full, nor
# for a first activation: nothing keeps running there, and the activation's own threads finish
# sooner without it.
ACTIVATION_SWITCH_INTERVAL = 0.0005
_loop_first_state = {"users": 0, "saved": 0.0}  # activations in progress; the interval to restore


@contextlib.contextmanager
def _loop_first() -> Iterator[None]:
    """Shorten the GIL switch interval while at least one activation runs."""
    state = _loop_first_state
    if state["users"] == 0:
        state["saved"] = sys.getswitchinterval()
        sys.setswitchinterval(min(ACTIVATION_SWITCH_INTERVAL, state["saved"]))
    state["users"] += 1
    try:
        yield
    finally:
        state["users"] -= 1
        if state["users"] == 0:
            sys.setswitchinterval(state["saved"])


def _describe(exc: BaseException) -> str:
    """One line for the journal: our own errors speak for themselves, others get their type."""
    if isinstance(exc, ValidationError):
        return str(exc.args[0]) if exc.args else "invalid scenario"
    if isinstance(exc, FluxmixError):
        return str(exc)
    return bound_message(f"{type(exc).__name__}: {exc}")


def _full_summary(old: LoadedScenario, new: LoadedScenario, why: str | None) -> dict[str, object]:
    """The journal's reload summary of a full restart: every gear restarts."""
    old_names = [g.name for g in old.scenario.gears]
    new_names = [g.name for g in new.scenario.gears]
    return {
        "mode": "full",
        "gears_total": len(new_names),
        "gears_restarted": sorted(n for n in new_names if n in old_names),
        "gears_added": [n for n in new_names if n not in old_names],
        "gears_removed": [n for n in old_names if n not in new_names],
        "gears_kept": [],
        "reasons": [f"{why}: every gear restarts"] if why else [],
    }


def _kind(exc: BaseException) -> str:
    """`user` when the operator can fix the input (bad file, unknown ref), else `failure`."""
    return "user" if isinstance(exc, UserError) else "failure"


def _build_rejected(attempt: "_Attempt", loaded: LoadedScenario, exc: Exception) -> JournalEntry:
    """Building the new gears failed: nothing was touched, so the attempt is rejected."""
    attempt.lap("build")
    if not isinstance(exc, FluxmixError):
        log.exception("building %s failed unexpectedly", loaded.ref)
    return attempt.entry("rejected", _describe(exc) if isinstance(exc, GearError) else f"build failed: {_describe(exc)}",
                         error_kind=_kind(exc))


class _Attempt:
    """Bookkeeping of one activation attempt: phase timings and the journal entry it becomes."""

    def __init__(self, ref: str | None, trigger: str, from_hash: str | None) -> None:
        self.ts = datetime.now(timezone.utc)
        self.ref = ref
        self.trigger = trigger
        self.from_hash = from_hash
        self.to_hash: str | None = None
        self.phases: dict[str, float] = {}
        self.drained = 0
        self.reload: dict[str, object] | None = None  # what a reload restarted and kept (journal)
        self._t = time.monotonic()

    def lap(self, phase: str) -> None:
        t = time.monotonic()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + (t - self._t), 6)
        self._t = t

    def entry(self, outcome: str, reason: str, *, problems: list[str] | None = None,
              gap: float | None = None, error_kind: str | None = None) -> JournalEntry:
        if error_kind is None and outcome not in ("activated", "unchanged"):
            error_kind = "failure"
        return JournalEntry(
            ts=self.ts,
            trigger=self.trigger,
            ref=self.ref,
            from_hash=self.from_hash,
            to_hash=self.to_hash,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            problems=list(problems or []),
            phases=dict(self.phases),
            drained=self.drained,
            gap_seconds=gap,
            error_kind=error_kind,
            reload=self.reload,
        )


class Activator:
    """Owns the running Runtime; one activation at a time."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        brokers: Brokers,
        *,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        gap_wait: float = DEFAULT_GAP_WAIT,
        verify_within: float | None = None,
        expect_interval: float = DEFAULT_INTERVAL,
        journal_keep: int | None = None,
        journal_keep_seconds: float = 0.0,
        reload_mode: str = "partial",
    ) -> None:
        if reload_mode not in RELOAD_MODES:
            raise ValueError(f"reload mode must be one of {', '.join(RELOAD_MODES)}, not {reload_mode!r}")
        self.reload_mode = reload_mode
        self.store = store
        # Global state per scenario name, shared by the runtimes of that name (fluxmix.globals_state).
        self.globals = GlobalsHub(store.globals)
        self.journal_keep = journal_keep  # None: keep everything (retention off)
        self.journal_keep_seconds = journal_keep_seconds
        self.catalog = catalog
        self.brokers = brokers
        self.stop_timeout = stop_timeout
        self.gap_wait = gap_wait
        # --verify-within: a new scenario with `expect:` lines must have them all passing this
        # many seconds after it started, or it is rolled back like one that failed to start.
        self.verify_within = verify_within
        self.expect_interval = expect_interval
        self.expectations: ExpectationWatch | None = None  # of the current runtime
        self.current: Runtime | None = None
        self.current_loaded: LoadedScenario | None = None
        self.current_ref: str | None = None  # the reference the running scenario was activated by
        self.last_reload: JournalEntry | None = None
        self.known_good: LoadedScenario | None = None  # the rollback target
        self._known_good_ref: str | None = None
        self.paused = False  # every runtime this builds starts with its sources paused (POST /pause)
        # A fleet member (fluxmix.fleet) sets these: checkpoints in KV, sources under leases,
        # sinks claiming message ids fleet-wide. None: the local store, no leases, no claims.
        self.checkpoints: Any = None
        # Otherwise the store's, with what this mixer wrote answered from memory: a reload's new
        # source reads back the position its predecessor wrote a moment ago without the store.
        self.stored_checkpoints = CachedCheckpoints(store)
        self.source_guard: Any = None
        self.claims: Any = None
        self._lock = asyncio.Lock()
        self._gap: GapWatch | None = None  # the running scenario's pending gap, if any
        self._fresh_gap: GapWatch | None = None  # ... created by the attempt in progress
        self._pending_active: tuple[str, str] | None = None  # (hash, ref) for the attempt's journal row
        self._releasing: asyncio.Future[None] | None = None  # closing the replaced runtime's wires

    @property
    def busy(self) -> bool:
        """True while an activation or shutdown is in progress."""
        return self._lock.locked()

    # ---- public API ----

    async def activate(self, ref: str, *, trigger: str, active_ref: str | None = None) -> JournalEntry:
        """Bring up `ref`; returns the journal entry. Never raises for a bad scenario.

        `active_ref` is what the store remembers as the active reference (default: `ref`);
        resume passes the original one so a later reload re-reads the file or tag it came from.

        Cancelling the caller (SIGTERM while a SIGHUP reload runs, an HTTP client hanging up) does
        not cancel the activation: stopped halfway, the old runtime would be left neither running
        nor drained. It runs to its end under the lock, and shutdown() waits for it.
        """
        return await asyncio.shield(
            asyncio.ensure_future(self._activate_locked(ref, trigger=trigger, active_ref=active_ref or ref))
        )

    async def _activate_locked(self, ref: str, *, trigger: str, active_ref: str) -> JournalEntry:
        async with self._lock:
            keeps_running = self.reload_mode == "partial" and self.current is not None
            with _loop_first() if keeps_running else contextlib.nullcontext():
                self._fresh_gap = None
                self._pending_active = None
                try:
                    entry = await self._activate(ref, trigger=trigger, active_ref=active_ref)
                except BaseException:
                    await self._write_pending_active()
                    raise
                finally:
                    await self._released()
                entry = await self._journal(entry)
            self.last_reload = entry
            if self._fresh_gap is not None:
                self._fresh_gap.entry_id = entry.id
                self._fresh_gap.journaled.set()
                self._fresh_gap = None
            return entry

    async def refuse(self, ref: str, *, trigger: str, reason: str) -> JournalEntry:
        """Journal a reference refused before anything was read (the operator's mistake)."""
        async with self._lock:
            current = self.current_loaded.hash if self.current is not None and self.current_loaded else None
            entry = await self._journal(_Attempt(ref, trigger, current).entry("rejected", reason, error_kind="user"))
            self.last_reload = entry
            return entry

    async def resume(self) -> JournalEntry | None:
        """Activate what the store says was active (by hash); None when nothing was."""
        state = await asyncio.to_thread(self.store.mixer_state)
        if not state.active_hash:
            return None
        return await self.activate(f"sha256:{state.active_hash}", trigger="resume",
                                   active_ref=state.active_ref or f"sha256:{state.active_hash}")

    async def shutdown(self) -> None:
        """Drain and stop the running scenario; the active pointer stays so a restart resumes it."""
        async with self._lock:
            self._cancel_gap_watch()
            await self._unwatch()
            if self.current is not None:
                runtime, self.current = self.current, None
                report = await runtime.stop(timeout=self.stop_timeout)
                log.info("stopped %s: drained %d message(s)%s", self.current_loaded.ref if self.current_loaded else "-",
                         report.drained, " (timed out)" if report.timed_out else "",
                         extra={"drained": report.drained, "timed_out": report.timed_out})

    # ---- the state machine ----

    async def _activate(self, ref: str, *, trigger: str, active_ref: str) -> JournalEntry:
        old, old_loaded = self.current, self.current_loaded
        attempt = _Attempt(ref, trigger, old_loaded.hash if old is not None and old_loaded is not None else None)

        # 1. resolve + validate: nothing touched yet
        try:
            loaded = await asyncio.to_thread(resolve_scenario, self.store, ref, catalog=self.catalog)
        except ValidationError as exc:
            attempt.lap("resolve")
            return attempt.entry("rejected", _describe(exc), problems=exc.lines(), error_kind="user")
        except Exception as exc:
            attempt.lap("resolve")
            if not isinstance(exc, FluxmixError):
                log.exception("resolving %s failed unexpectedly", ref)
            return attempt.entry("rejected", _describe(exc), error_kind=_kind(exc))
        attempt.lap("resolve")
        attempt.to_hash = loaded.hash

        if old is not None and old_loaded is not None and old_loaded.hash == loaded.hash and old.state == "running":
            self._remember_active(loaded.hash, active_ref)
            self.current_ref = active_ref
            return attempt.entry("unchanged", f"{loaded.ref} ({short_hash(loaded.hash)}) is already running")

        if self.reload_mode == "partial" and old is not None and old_loaded is not None and old.state == "running":
            await asyncio.sleep(0)  # let the running gears take their turn between the reload's steps
            plan = plan_reload(old_loaded.scenario, loaded.scenario)
            await asyncio.sleep(0)
            if not plan.full:
                return await self._activate_partial(attempt, old, loaded, plan, active_ref)
            attempt.reload = plan.summary(len(loaded.scenario.gears))
        elif old is not None and old_loaded is not None:
            attempt.reload = _full_summary(old_loaded, loaded, "--reload full" if self.reload_mode == "full" else None)

        # 2. build: instantiate every gear, prepare every wire; still nothing touched
        try:
            new = await self._build(loaded)
        except Exception as exc:
            return _build_rejected(attempt, loaded, exc)
        attempt.lap("build")
        await asyncio.sleep(0)

        # 3. stop the old one, draining its memory wires
        self._cancel_gap_watch()
        stopwatch: ReloadStopwatch | None = None
        stop_note = ""
        if old is not None:
            self.current = None
            await self._unwatch()
            stopwatch = ReloadStopwatch()
            stopwatch.install(old)
            report = await old.stop(timeout=self.stop_timeout, release=False)  # its wires: closed below
            stopwatch.uninstall()
            attempt.drained = report.drained
            if report.timed_out:
                stop_note = f"; stopping {old_loaded.ref if old_loaded else 'the old scenario'} timed out after {self.stop_timeout:g}s"
        attempt.lap("stop")

        # 4. start the new one
        if stopwatch is not None:
            stopwatch.resume()
            stopwatch.install(new)
        try:
            await new.start()
        except Exception as exc:
            attempt.lap("start")
            if old is not None:
                await old.release()
            reason = (_describe(exc) if isinstance(exc, GearError) else f"start failed: {_describe(exc)}") + stop_note
            await new.stop(timeout=self.stop_timeout)
            return await self._roll_back(attempt, reason, loaded, stopwatch)
        except BaseException:
            if old is not None:
                await old.release()
            raise
        attempt.lap("start")
        if old is not None:  # drained and idle: closed while the new gears' first messages travel
            self._releasing = asyncio.ensure_future(old.release())
        sc = loaded.scenario
        reason = f"started {loaded.ref}: {len(sc.gears)} gears, {len(sc.wires)} wires{stop_note}"
        if self.verify_within is not None and sc.expect and self.paused:
            # Paused sources emit nothing: expectations on flow would fail and roll back a good scenario.
            reason += "; not verified: the sources are paused"
        elif self.verify_within is not None and sc.expect:
            verified, why = await self._verify(new, loaded, active_ref)
            attempt.lap("verify")
            if not verified:
                await self._unwatch()
                self.current = self.current_loaded = self.current_ref = None
                await new.stop(timeout=self.stop_timeout)
                reason = f"{loaded.ref} started but its expectations did not pass within {self.verify_within:g}s: {'; '.join(why)}"
                entry = await self._roll_back(attempt, reason, loaded, stopwatch)
                return dataclasses.replace(entry, problems=list(why))
            reason += f"; verified: {len(sc.expect)} expectation(s) passing"
        self._set_current(new, loaded, active_ref, attempt.entry("activated", reason))
        self._remember_active(loaded.hash, active_ref)
        gap = await self._measure_gap(stopwatch)
        return attempt.entry("activated", reason, gap=gap)

    async def _activate_partial(self, attempt: _Attempt, runtime: Runtime, loaded: LoadedScenario, plan: ReloadPlan,
                                active_ref: str) -> JournalEntry:
        """Restart only what the change touches (fluxmix.runtime.reload); the rest never stops."""
        attempt.reload = plan.summary(len(loaded.scenario.gears))
        try:
            # a version that declares new initial values has them written before anything changes
            await self._seed_globals(loaded, self.globals.for_scenario(loaded.scenario.name))
            prepared = await prepare_reload(runtime, loaded.scenario, loaded.hash, plan)
        except Exception as exc:
            return _build_rejected(attempt, loaded, exc)
        attempt.lap("build")
        await asyncio.sleep(0)  # the last turn of the running gears before some of them stop
        self._cancel_gap_watch()
        stopwatch: ReloadStopwatch | None = None
        if not plan.empty:
            stopwatch = ReloadStopwatch(set(plan.watch_sinks))
            stopwatch.install(runtime)
        await self._unwatch()
        restarted = len(plan.gears_restarted) + len(plan.gears_added)
        try:
            def stopped() -> None:  # the affected gears stopped: the rest of the phase is starting
                attempt.lap("stop")
                if stopwatch is not None:
                    stopwatch.resume()

            timed_out = await apply_reload(runtime, prepared, on_stopped=stopped, stop_timeout=self.stop_timeout)
        except ReloadRolledBack as exc:
            attempt.lap("start")
            if stopwatch is not None:
                stopwatch.resume()
            self._watch(runtime)
            reason = f"{exc}; rolled back to the previous gears of {self.current_loaded.ref if self.current_loaded else '-'}"
            return attempt.entry("rolled-back", reason, gap=await self._measure_gap(stopwatch))
        except Exception as exc:
            # The previous gears could not come back either: stop what is left and start the
            # last known good scenario whole.
            attempt.lap("start")
            log.error("partial reload of %s failed and could not be undone: %s", loaded.ref, _describe(exc))
            self.current = None
            await runtime.stop(timeout=self.stop_timeout)
            if stopwatch is not None:
                stopwatch.uninstall()
            return await self._roll_back(attempt, _describe(exc), loaded, None)
        attempt.lap("start")
        total = len(loaded.scenario.gears)
        verified_note = ""
        sc = loaded.scenario
        if self.verify_within is not None and sc.expect and self.paused:
            verified_note = "; not verified: the sources are paused"
        elif self.verify_within is not None and sc.expect:
            previous, previous_ref = self.current_loaded, self.current_ref
            verified, why = await self._verify(runtime, loaded, active_ref)
            attempt.lap("verify")
            if not verified:
                await self._unwatch()
                reason = f"{loaded.ref} started but its expectations did not pass within {self.verify_within:g}s: {'; '.join(why)}"
                entry = await self._partial_back(attempt, runtime, loaded, previous, previous_ref, reason, stopwatch)
                return dataclasses.replace(entry, problems=list(why))
            verified_note = f"; verified: {len(sc.expect)} expectation(s) passing"
        if plan.empty:
            reason = f"activated {loaded.ref}: nothing to restart (no gear or wire changed); 0 of {total} gears restarted"
            gap: float | None = 0.0
        else:
            names = ", ".join(sorted((*plan.gears_restarted, *plan.gears_added)))
            reason = f"reloaded {loaded.ref}: restarted {restarted} of {total} gears ({names})"
            if plan.gears_removed:
                reason += f", removed {', '.join(plan.gears_removed)}"
            if plan.reasons:
                reason += "; " + "; ".join(plan.reasons)
            gap = None
        if timed_out:
            reason += f"; stopping the restarted gears timed out after {self.stop_timeout:g}s (what they had in hand was abandoned)"
        reason += verified_note
        self._set_current(runtime, loaded, active_ref, attempt.entry("activated", reason))
        self._remember_active(loaded.hash, active_ref)
        if stopwatch is not None:
            gap = await self._measure_gap(stopwatch)
        return attempt.entry("activated", reason, gap=gap)

    async def _partial_back(self, attempt: _Attempt, runtime: Runtime, failed: LoadedScenario,
                            previous: LoadedScenario | None, previous_ref: str | None, reason: str,
                            stopwatch: ReloadStopwatch | None) -> JournalEntry:
        """A partial reload that started but failed verification: the same partial reload back
        to the previous version (its gears as fresh instances); the whole-scenario rollback when
        that is not possible."""
        if previous is not None:
            try:
                back = await prepare_reload(runtime, previous.scenario, previous.hash,
                                            plan_reload(failed.scenario, previous.scenario))
                await apply_reload(runtime, back, stop_timeout=self.stop_timeout)
            except Exception as exc:
                log.error("undoing the partial reload of %s failed: %s", failed.ref, _describe(exc))
            else:
                attempt.lap("rollback")
                reason = f"{reason}; rolled back to {previous.ref} ({short_hash(previous.hash)})"
                self._set_current(runtime, previous, previous_ref or previous.ref, attempt.entry("rolled-back", reason))
                self._remember_active(previous.hash, previous_ref or previous.ref)
                return attempt.entry("rolled-back", reason, gap=await self._measure_gap(stopwatch))
        self.current = self.current_loaded = self.current_ref = None
        await runtime.stop(timeout=self.stop_timeout)
        if stopwatch is not None:
            stopwatch.uninstall()
        return await self._roll_back(attempt, reason, failed, None)

    async def _build(self, loaded: LoadedScenario) -> Runtime:
        brokers = await self.brokers.for_scenario(loaded.scenario)
        # The shared snapshot of this name; its schemas switch only when the runtime becomes current
        # (_set_current), so a rejected version's schemas never judge the running one's writes.
        scenario_globals = self.globals.for_scenario(loaded.scenario.name)
        await self._seed_globals(loaded, scenario_globals)
        runtime = Runtime(
            loaded.scenario, loaded.hash, catalog=self.catalog, brokers=brokers,
            checkpoints=self.checkpoints or self.stored_checkpoints, globals_=scenario_globals,
            source_guard=self.source_guard, claims=self.claims,
        )
        runtime.sources_paused = self.paused
        try:
            await runtime.build()
        except BaseException:
            await runtime.stop(timeout=self.stop_timeout)
            raise
        return runtime

    async def _seed_globals(self, loaded: LoadedScenario, scenario_globals: Any) -> None:
        """Declared initial values for keys without one; an operator's value survives reloads.

        With none declared and the snapshot already read (the running version of this name reads
        it too, and the mixer refreshes it from the store every few seconds) there is nothing to
        do: a reload then spares a store round trip on a thread."""
        declared = loaded.scenario.globals
        has_initial = any(isinstance(spec, Mapping) and "initial" in spec for spec in (declared or {}).values())
        if has_initial or scenario_globals.version < 0:
            await asyncio.to_thread(scenario_globals.seed, who=f"scenario {loaded.scenario.name}@{short_hash(loaded.hash)}",
                                    declared=declared)

    async def _roll_back(self, attempt: _Attempt, reason: str, failed: LoadedScenario,
                         stopwatch: ReloadStopwatch | None) -> JournalEntry:
        """The new scenario did not start: bring the last known good one back, from its bytes."""
        target, target_ref = self.known_good, self._known_good_ref
        if target is None or target.hash == failed.hash:
            target, target_ref = await self._stored_known_good(exclude=failed.hash)
        if target is None:
            attempt.lap("rollback")
            self._set_idle()
            log.error("%s; no last known good scenario to roll back to: the mixer is idle", reason)
            return attempt.entry("failed", f"{reason}; no last known good scenario to roll back to")
        if stopwatch is not None:
            stopwatch.uninstall()
        try:
            runtime = await self._build(target)
            if stopwatch is not None:
                stopwatch.install(runtime)
            try:
                await runtime.start()
            except BaseException:
                await runtime.stop(timeout=self.stop_timeout)
                raise
        except Exception as exc:
            attempt.lap("rollback")
            self._set_idle()
            log.error("%s; rolling back to %s failed too: %s: the mixer is idle", reason, target.ref, _describe(exc))
            return attempt.entry("failed", f"{reason}; rollback to {target.ref} failed: {_describe(exc)}")
        attempt.lap("rollback")
        ref = target_ref or target.ref
        reason = f"{reason}; rolled back to {target.ref} ({short_hash(target.hash)})"
        self._set_current(runtime, target, ref, attempt.entry("rolled-back", reason))
        self._remember_active(target.hash, ref)
        gap = await self._measure_gap(stopwatch)
        return attempt.entry("rolled-back", reason, gap=gap)

    async def _stored_known_good(self, *, exclude: str) -> tuple[LoadedScenario | None, str | None]:
        """The store's last known good (from an earlier mixer run), when this process has none."""
        try:
            state = await asyncio.to_thread(self.store.mixer_state)
            digest = state.last_known_good_hash
            if not digest or digest == exclude:
                return None, None
            loaded = await asyncio.to_thread(resolve_scenario, self.store, f"sha256:{digest}", catalog=self.catalog)
        except Exception as exc:
            log.error("cannot load the last known good scenario from the store: %s", _describe(exc))
            return None, None
        ref = state.active_ref if state.active_hash == digest and state.active_ref else loaded.ref
        return loaded, ref

    async def _verify(self, runtime: Runtime, loaded: LoadedScenario, ref: str) -> tuple[bool, list[str]]:
        """Run the new scenario (visible in /status, but not yet the known good one) until its
        expectations all pass, one fails, or the window ends."""
        self.current, self.current_loaded, self.current_ref = runtime, loaded, ref
        self._watch(runtime)
        assert self.verify_within is not None and self.expectations is not None
        log.info("verifying %s: %d expectation(s) must pass within %gs", loaded.ref, len(loaded.scenario.expect),
                 self.verify_within)
        return await self.expectations.verdict(self.verify_within)

    def _watch(self, runtime: Runtime) -> None:
        """Judge the expectations of `runtime` from now on (the previous watch is stopped first)."""
        if self.expectations is not None and self.expectations.runtime is runtime:
            return
        if self.expectations is not None:
            old, self.expectations = self.expectations, None
            asyncio.ensure_future(old.stop())
        self.expectations = ExpectationWatch.for_runtime(runtime, interval=self.expect_interval)

    async def _unwatch(self) -> None:
        if self.expectations is not None:
            watch, self.expectations = self.expectations, None
            await watch.stop()

    def _set_current(self, runtime: Runtime, loaded: LoadedScenario, ref: str, attempt: JournalEntry) -> None:
        """Switch to `runtime`. `last_reload` switches with it, to the attempt not yet journaled
        (no id, gap unknown), so /status never shows the new scenario next to the previous
        attempt while the journal row waits for the reload gap; activate() replaces it."""
        self.last_reload = attempt
        self.globals.for_scenario(loaded.scenario.name, loaded.scenario.globals)  # its schemas judge writes now
        self.current = runtime
        self._watch(runtime)
        self.current_loaded = loaded
        self.current_ref = ref
        self.known_good = loaded
        self._known_good_ref = ref

    def _set_idle(self) -> None:
        if self.expectations is not None:
            watch, self.expectations = self.expectations, None
            asyncio.ensure_future(watch.stop())
        self.current = None
        self.current_loaded = None
        self.current_ref = None

    async def _released(self) -> None:
        """Wait for the replaced runtime's wires to be closed (started after the new one ran)."""
        releasing, self._releasing = self._releasing, None
        if releasing is not None:
            try:
                await releasing
            except Exception:
                log.exception("closing the wires of the replaced scenario failed")

    def _remember_active(self, digest: str, ref: str) -> None:
        """What runs now (and is the rollback target), written with the attempt's journal row
        (one store transaction instead of two), or while the first message after a reload is
        awaited (_measure_gap), whichever comes first."""
        self._pending_active = (digest, ref)

    async def _write_pending_active(self) -> None:
        """The active scenario alone, when no journal row carries it (an unexpected failure)."""
        pending, self._pending_active = self._pending_active, None
        if pending is None:
            return
        try:
            await asyncio.to_thread(self.store.set_active, pending[0], pending[1], known_good=True)
        except Exception:  # the scenario runs; failing to note it must not undo that
            log.exception("could not record the active scenario %s in the store", short_hash(pending[0]))

    async def _journal(self, entry: JournalEntry) -> JournalEntry:
        """Write the attempt to the store, secrets masked (a gear's error may quote one),
        together with the active scenario when the attempt changed it."""
        entry = dataclasses.replace(
            entry,
            ref=redact(entry.ref) if entry.ref else entry.ref,
            reason=redact(entry.reason),
            problems=redact_value(list(entry.problems)),
        )
        active, self._pending_active = self._pending_active, None
        try:
            entry_id = await asyncio.to_thread(self.store.record_activation, entry, active=active)
        except Exception:
            log.exception("could not journal the activation attempt (%s: %s)", entry.outcome, entry.reason)
            self._pending_active = active
            await self._write_pending_active()
            return entry
        await self.prune_journal()
        return dataclasses.replace(entry, id=entry_id)

    async def prune_journal(self) -> None:
        """Journal retention (--journal-keep, --journal-keep-for); a failure only logs."""
        if self.journal_keep is None:
            return
        try:
            removed = await asyncio.to_thread(self.store.prune_journal, keep_last=self.journal_keep,
                                              keep_seconds=self.journal_keep_seconds)
        except Exception:
            log.exception("could not prune the journal")
            return
        if removed:
            log.info("journal retention: pruned %d entr%s", removed, "y" if removed == 1 else "ies")

    # ---- the reload gap ----

    async def _measure_gap(self, stopwatch: ReloadStopwatch | None) -> float | None:
        """The interruption the reload caused at the sinks (see ReloadStopwatch).

        Waits up to `gap_wait` for the first message after the reload so the journal row carries
        the gap; past that, a watcher fills it in on `last_reload` when it comes.
        """
        if stopwatch is None:
            return None
        if stopwatch.first_after is None and self.gap_wait > 0:
            # the store learns what runs now while the first message travels (else it rides
            # in the journal row's transaction)
            early = asyncio.ensure_future(self._write_pending_active()) if self._pending_active else None
            try:
                async with asyncio.timeout(self.gap_wait):
                    await stopwatch.arrived.wait()
            except TimeoutError:
                pass
            finally:
                if early is not None:
                    await early
        if stopwatch.first_after is not None:
            return stopwatch.gap
        watch = GapWatch(stopwatch)
        watch.task = asyncio.create_task(self._late_gap(watch), name="fluxmix reload gap")
        self._gap = self._fresh_gap = watch
        return None

    async def _late_gap(self, watch: GapWatch) -> None:
        try:
            await watch.stopwatch.arrived.wait()
        finally:
            watch.stopwatch.uninstall()
        await watch.journaled.wait()
        gap = watch.stopwatch.gap
        if gap is None:
            return
        entry = self.last_reload
        if entry is not None and watch.entry_id is not None and entry.id == watch.entry_id:
            self.last_reload = dataclasses.replace(entry, gap_seconds=gap)
        log.info("reload gap: %.3fs (first message after the activation returned)", gap, extra={"gap_seconds": gap})
        if watch.entry_id is not None:
            try:
                await asyncio.to_thread(self.store.update_activation_gap, watch.entry_id, gap)
            except Exception:
                log.exception("could not record the reload gap in the journal")

    def _cancel_gap_watch(self) -> None:
        """The running scenario is being replaced: its pending gap no longer means anything."""
        if self._gap is not None:
            if self._gap.task is not None and not self._gap.task.done():
                self._gap.task.cancel()
            self._gap.stopwatch.uninstall()
        self._gap = None

    # ---- introspection ----

    @property
    def state(self) -> str:
        """running | idle (nothing asked for) | failed (the last activation left nothing running)."""
        if self.current is not None:
            return "running"
        if self.last_reload is not None and self.last_reload.outcome == "failed":
            return "failed"
        return "idle"
