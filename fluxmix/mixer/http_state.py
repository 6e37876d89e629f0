"""The mixer's global state endpoints (registered by fluxmix.mixer.http.create_app).

| method | path            | answer                                                              |
|--------|-----------------|---------------------------------------------------------------------|
| GET    | /state          | {"scenario", "version", "values", "declared"} (idle: scenario null) |
| GET    | /state/{key}    | {"scenario", "key", "value"}; 404 when the key has no value         |
| PUT    | /state/{key}    | body: the JSON value -> {"scenario", "key", "old_value", "value"}   |
| DELETE | /state/{key}    | {"scenario", "key", "old_value"}; 404 when the key has no value     |
| DELETE | /state          | clear every key -> {"scenario", "cleared": N}                       |
| GET    | /state-changes  | the change journal, newest first (?limit=1..1000, default 50)       |

Every route takes `?scenario=NAME`; the default is the active scenario's name. PUT and DELETE go
through the same authorization as POST /activate (the bearer token), so whatever guards the
API's writes guards them too. A write that breaks the scenario's `globals:` schema, a bad key or
an oversized value is refused with 422 and changes nothing. The caller may name itself with the
`X-Fluxmix-Who` header (e.g. `cli:alice`); the journal records `api:<that>`.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fluxmix.errors import FluxmixError, GlobalsError, UserError
from fluxmix.globals_state import ScenarioGlobals
from fluxmix.mixer import http_base
from fluxmix.mixer.http_base import MIXER, error_response, json_response

MAX_WHO_HEADER = 80


def add_state_routes(app: web.Application) -> None:
    app.router.add_get("/state", list_state)
    app.router.add_delete("/state", clear_state)
    app.router.add_get("/state/{key}", get_state)
    app.router.add_put("/state/{key}", put_state)
    app.router.add_delete("/state/{key}", delete_state)
    app.router.add_get("/state-changes", state_changes)


class _NoScenario(Exception):
    pass


async def _globals(request: web.Request) -> ScenarioGlobals:
    """The ScenarioGlobals of ?scenario=NAME, or of the active scenario."""
    from fluxmix.refs import NAME_RE

    mixer = request.app[MIXER]
    hub = mixer.activator.globals
    loaded = mixer.activator.current_loaded
    name = request.query.get("scenario")
    if name is None:
        if loaded is None:
            raise _NoScenario("no scenario is active: name one (?scenario=NAME; fluxmix state --scenario NAME)")
        return hub.for_scenario(loaded.scenario.name, loaded.scenario.globals)
    if not NAME_RE.fullmatch(name):
        raise GlobalsError(f"scenario: {name[:40]!r} is not a scenario name")
    if loaded is not None and loaded.scenario.name == name:
        return hub.for_scenario(name, loaded.scenario.globals)
    # Not the active one: its newest stored version's declarations (schemas) apply, if stored.
    declared = await asyncio.to_thread(_stored_declarations, mixer, name)
    scenario_globals = hub.for_scenario(name, declared)
    await asyncio.to_thread(scenario_globals.refresh)
    return scenario_globals


def _stored_declarations(mixer: http_base.MixerAPI, name: str) -> dict[str, Any]:
    from fluxmix.loading import resolve_scenario

    try:
        return dict(resolve_scenario(mixer.store, name, catalog=mixer.catalog).scenario.globals)
    except FluxmixError:
        return {}


def _announce(request: web.Request, found: ScenarioGlobals, op: str, key: str | None, old: Any, new: Any,
              who: str) -> None:
    """An operator's change on the event stream (GET /events), as `global-changed`."""
    request.app[MIXER].events.publish("global-changed", {
        "scenario": found.scenario, "version": found.version, "op": op, "key": key, "old_value": old,
        "new_value": new, "who": who})


def _who(request: web.Request) -> str:
    given = request.headers.get("X-Fluxmix-Who", "").strip()[:MAX_WHO_HEADER]
    given = "".join(ch for ch in given if ch.isprintable())
    return f"api:{given}" if given else "api"


GlobalsHandler = Callable[[web.Request, ScenarioGlobals], Awaitable[web.Response]]


def _with_globals(handler: GlobalsHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A route on one scenario's globals: resolves ?scenario= (default: the active scenario) and
    hands it to `handler`, or answers 409 (none active, none named) or 400 (a bad name)."""

    @functools.wraps(handler)
    async def route(request: web.Request) -> web.Response:
        try:
            found = await _globals(request)
        except _NoScenario as error:
            return error_response(409, str(error))
        except UserError as error:
            return error_response(400, str(error))
        return await handler(request, found)

    return route


async def list_state(request: web.Request) -> web.Response:
    mixer = request.app[MIXER]
    if "scenario" not in request.query and mixer.activator.current_loaded is None:
        return json_response({"scenario": None, "version": 0, "values": {}, "declared": {}})  # idle: nothing to show
    return await _list_resolved(request)


@_with_globals
async def _list_resolved(request: web.Request, found: ScenarioGlobals) -> web.Response:
    declared = {k: {f: v for f, v in spec.items() if f != "initial"} for k, spec in found.declared().items()
                if isinstance(spec, dict)}
    return json_response({"scenario": found.scenario, "version": found.version, "values": found.values(),
                  "declared": declared})


@_with_globals
async def get_state(request: web.Request, found: ScenarioGlobals) -> web.Response:
    key = request.match_info["key"]
    if key not in found:
        return error_response(404, f"global {key[:60]!r} has no value in scenario {found.scenario}")
    return json_response({"scenario": found.scenario, "key": key, "value": found.get(key)})


@_with_globals
async def put_state(request: web.Request, found: ScenarioGlobals) -> web.Response:
    key = request.match_info["key"]
    try:
        value = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return error_response(400, f"request body is not a JSON value: {error}")
    who = _who(request)
    try:
        old = await asyncio.to_thread(found.set, key, value, who=who)
    except GlobalsError as error:
        return error_response(422, str(error))
    _announce(request, found, "set", key, old, found.get(key), who)
    return json_response({"scenario": found.scenario, "key": key, "old_value": old, "value": found.get(key)})


@_with_globals
async def delete_state(request: web.Request, found: ScenarioGlobals) -> web.Response:
    key = request.match_info["key"]
    who = _who(request)
    try:
        old, existed = await asyncio.to_thread(found.delete, key, who=who)
    except GlobalsError as error:
        return error_response(422, str(error))
    if not existed:
        return error_response(404, f"global {key[:60]!r} has no value in scenario {found.scenario}")
    _announce(request, found, "delete", key, old, None, who)
    return json_response({"scenario": found.scenario, "key": key, "old_value": old})


@_with_globals
async def clear_state(request: web.Request, found: ScenarioGlobals) -> web.Response:
    who = _who(request)
    count = await asyncio.to_thread(found.clear, who=who)
    _announce(request, found, "clear", None, None, None, who)
    return json_response({"scenario": found.scenario, "cleared": count})


@_with_globals
async def state_changes(request: web.Request, found: ScenarioGlobals) -> web.Response:
    raw = request.query.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        return error_response(400, f"limit: expected an integer, got {raw[:20]!r}")
    if not 1 <= limit <= http_base.MAX_JOURNAL_LIMIT:
        return error_response(400, f"limit: must be between 1 and {http_base.MAX_JOURNAL_LIMIT}")
    changes = await asyncio.to_thread(request.app[MIXER].store.globals.changes, found.scenario, limit)
    return json_response({"scenario": found.scenario, "changes": [c.as_dict() for c in changes]})
