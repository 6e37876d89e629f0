"""The mixer's HTTP API (aiohttp, on the daemon's own event loop).

| method | path      | answer                                                           |
|--------|-----------|------------------------------------------------------------------|
| GET    | /healthz  | 200 {"status": "ok"} while the process is alive                  |
| GET    | /readyz   | 200 running or idle by choice; 503 {"status", "reason"} if not   |
| GET    | /status   | scenario, state, gears, wires, brokers, uptime, last reload      |
| GET    | /journal  | activation attempts, newest first (?limit=1..1000, default 50)   |
| GET    | /metrics  | Prometheus text exposition                                       |
| POST   | /activate | {"ref": "..."} -> the journal entry of the attempt               |
| POST   | /reload   | re-read the followed reference -> the journal entry              |
| GET    | /, /view, /static/* | the live page (mixer/page.py) and what it draws        |
| GET    | /events   | Server-Sent Events of state changes (mixer/events.py)            |
| POST   | /pause, /resume | hold the sources still / let them go (mixer/control.py)    |
| *      | /state... | global state: see fluxmix.mixer.http_state (PUT/DELETE need auth)|

What the API trusts (one middleware, `_guard`, so every route added later inherits it):
- No request a browser marks as coming from another site: `Sec-Fetch-Site` other than
  same-origin/none (except a GET that navigates a tab to the page), or an `Origin` that is not
  this API's own, is refused (403). When the API
  listens on loopback, a `Host` that is not a loopback name is refused too (DNS rebinding).
- Every POST must be `Content-Type: application/json`, which a page cannot send cross-site
  without a CORS preflight (415 otherwise); every POST/PUT/DELETE must carry
  `Authorization: Bearer <token>` (401) unless the mixer runs with --no-auth.
Every error is JSON `{"error": "one line"}`, so clients never parse HTML.
"""

from __future__ import annotations

import errno
import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from fluxmix.errors import ActivationError, NothingToReload, UserError, excerpt
from fluxmix.mixer import control, events, metrics, page
from fluxmix.mixer.http_base import (
    MAX_JOURNAL_LIMIT,
    MIXER,
    MixerAPI,
    authorized,
    error_response,
    json_response,
    unauthorized,
)
from fluxmix.mixer.http_state import add_state_routes
from fluxmix.mixer.settings import is_loopback

log = logging.getLogger("fluxmix.mixer.http")

MAX_REF = 4096  # characters; PATH_MAX on Linux, far above any name:tag
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE = frozenset({"same-origin", "none"})  # none: typed in the address bar, or not a browser
# HTTP status of an activation attempt, by journal outcome.
OUTCOME_STATUS = {"activated": 200, "unchanged": 200, "rejected": 422, "rolled-back": 422, "failed": 500}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404/405/413 pages are HTML: answer JSON like every other endpoint."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason or str(exc))
    except Exception as exc:  # a bug: log it with the traceback, answer one line
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API's trust boundary (see the module docstring), for every route, present or future."""
    refusal = _foreign(request)
    if refusal is not None:
        log.warning("refused %s %s: %s", request.method, request.path, refusal)
        return error_response(403, refusal)
    if request.method not in SAFE_METHODS:
        # POST is the one unsafe method a page may send cross-site without a CORS preflight, as
        # long as its body is a "simple" type (text/plain, a form): require JSON. PUT and DELETE
        # always need a preflight, which this API never grants.
        if request.method == "POST" and request.content_type != "application/json":
            return error_response(415, f"{request.method} needs Content-Type: application/json (got {excerpt(request.content_type)})")
        if not authorized(request):
            return unauthorized()
    return await handler(request)


def _foreign(request: web.Request) -> str | None:
    """Why the request comes from another site (or through a rebinding DNS name), else None."""
    site = request.headers.get("Sec-Fetch-Site")
    # A link from another site to the live page opens it in the user's own tab, which that site
    # cannot read: let GET navigations through; every fetch the page then makes is same-origin.
    navigation = request.method in SAFE_METHODS and request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate"
    if site is not None and site.strip().lower() not in SAME_SITE and not navigation:
        return f"cross-site request refused (Sec-Fetch-Site: {excerpt(site)})"
    host = request.headers.get("Host", "")
    origin = request.headers.get("Origin")
    if origin is not None and origin.strip().lower() != f"{request.scheme}://{host}".lower():
        return f"cross-origin request refused (Origin: {excerpt(origin)})"
    if is_loopback(request.app[MIXER].settings.http_host) and not is_loopback(_hostname(host)):
        return f"request for host {excerpt(host)} refused: this API answers only to a loopback address"
    return None


def _hostname(host: str) -> str:
    """`127.0.0.1:8470` -> `127.0.0.1`, `[::1]:8470` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    mixer = request.app[MIXER]
    ready, reason = mixer.readiness()
    if ready:
        return json_response({"status": "ready", "state": mixer.state(), "reason": reason})
    return json_response({"status": "not ready", "state": mixer.state(), "reason": reason}, status=503)


async def status(request: web.Request) -> web.Response:
    return json_response(request.app[MIXER].status().to_json())


async def journal(request: web.Request) -> web.Response:
    raw = request.query.get("limit", "50")
    if raw == "all":  # everything retention kept (`fluxmix mixer journal --all`)
        return json_response({"entries": [e.as_dict() for e in request.app[MIXER].store.journal(limit=2**31 - 1)]})
    try:
        limit = int(raw)
    except ValueError:
        return error_response(400, f"limit: expected an integer, got {raw!r}")
    if not 1 <= limit <= MAX_JOURNAL_LIMIT:
        return error_response(400, f"limit: must be between 1 and {MAX_JOURNAL_LIMIT}")
    entries = request.app[MIXER].store.journal(limit=limit)
    return json_response({"entries": [entry.as_dict() for entry in entries]})


async def metrics_view(request: web.Request) -> web.Response:
    body = metrics.render(request.app[MIXER])
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def _entry_response(entry: Any) -> web.Response:
    return json_response(entry.as_dict(), status=OUTCOME_STATUS.get(entry.outcome, 500))


async def activate(request: web.Request) -> web.Response:
    try:
        payload = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return error_response(400, f"request body is not valid JSON: {error}")
    except RecursionError:
        return error_response(400, "request body is not valid JSON: nested too deeply")
    if not isinstance(payload, dict):
        return error_response(400, 'request body must be a JSON object like {"ref": "name:tag"}')
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref.strip():
        return error_response(400, 'ref: required, a non-empty string (name:tag, name, sha256:..., or an absolute path)')
    if len(ref) > MAX_REF:
        return error_response(400, f"ref: {len(ref)} characters is longer than the {MAX_REF}-character limit")
    unknown = sorted(set(payload) - {"ref"})
    if unknown:
        return error_response(400, f"unknown field(s): {', '.join(excerpt(k) for k in unknown[:5])}")
    try:
        entry = await request.app[MIXER].activate(ref.strip(), trigger="api", confined=True)
    except ActivationError as error:
        return error_response(503, str(error))
    return _entry_response(entry)


async def reload(request: web.Request) -> web.Response:
    try:
        entry = await request.app[MIXER].reload(trigger="api")
    except NothingToReload as error:
        return error_response(409, str(error))
    except ActivationError as error:
        return error_response(503, str(error))
    return _entry_response(entry)


def create_app(mixer: MixerAPI) -> web.Application:
    app = web.Application(middlewares=[_json_errors, _guard], client_max_size=64 * 1024)
    app[MIXER] = mixer
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/journal", journal)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_post("/activate", activate)
    app.router.add_post("/reload", reload)
    events.setup(app, mixer.events, hello=mixer.view)
    page.setup(app)
    control.setup(app)
    add_state_routes(app)
    return app


async def start_http(mixer: MixerAPI, host: str, port: int) -> web.AppRunner:
    """Listen on host:port; a busy or forbidden address is the operator's to fix (UserError)."""
    runner = web.AppRunner(create_app(mixer), access_log=log.getChild("access"), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        reason = "address already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise UserError(f"--http {host}:{port}: cannot listen: {reason}") from None
    for address in runner.addresses:
        log.info("HTTP API listening on http://%s", _format_address(address), extra={"address": _format_address(address)})
    return runner


def _format_address(address: Any) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
