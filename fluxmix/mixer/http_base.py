"""What every HTTP route module shares: the mixer they serve (as a Protocol), JSON answers, auth.

The route modules (http, control, page, events, http_state) depend on this module and on the
typed status model, never on the daemon: the daemon builds the app and hands its service over
as a `MixerAPI`, so imports only ever point from the daemon towards the API, not back.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Protocol

from aiohttp import web

from fluxmix.errors import bound_line
from fluxmix.gears.catalog import Catalog
from fluxmix.globals_state import GlobalsHub
from fluxmix.loading import LoadedScenario
from fluxmix.mixer.events import EventBus
from fluxmix.mixer.metrics import MetricsSource
from fluxmix.mixer.settings import MixerSettings
from fluxmix.store import JournalEntry, Store

MAX_JOURNAL_LIMIT = 1000


class ActiveScenario(Protocol):
    """What the API reads of the activator: the scenario running now and the global state hub."""

    globals: GlobalsHub
    current_loaded: LoadedScenario | None


class MixerAPI(MetricsSource, Protocol):
    """The mixer as its HTTP API sees it (`fluxmix.mixer.service.MixerService` is one)."""

    settings: MixerSettings
    store: Store
    catalog: Catalog
    activator: ActiveScenario
    events: EventBus

    def readiness(self) -> tuple[bool, str]: ...

    def state(self) -> str: ...

    def view(self) -> dict[str, Any]: ...

    async def activate(self, ref: str, *, trigger: str, confined: bool = False) -> JournalEntry: ...

    async def reload(self, *, trigger: str) -> JournalEntry: ...

    async def pause_sources(self, *, trigger: str) -> dict[str, Any]: ...

    async def resume_sources(self, *, trigger: str) -> dict[str, Any]: ...


MIXER: web.AppKey[MixerAPI] = web.AppKey("mixer")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda obj: json.dumps(obj, default=str))


def error_response(status: int, message: str, **headers: str) -> web.Response:
    """Every error is JSON `{"error": "one line"}`, so clients never parse HTML."""
    return web.json_response({"error": bound_line(message)}, status=status, headers=headers or None)


def authorized(request: web.Request) -> bool:
    """The bearer token matches (or the mixer runs with --no-auth); a missing token fails closed."""
    settings = request.app[MIXER].settings
    if not settings.auth:
        return True
    token = settings.api_token
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def unauthorized() -> web.Response:
    return error_response(401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                          **{"WWW-Authenticate": "Bearer"})
