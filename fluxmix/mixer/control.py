"""POST /pause and POST /resume: hold the running scenario's sources still, and let them go.

They go through the same authorisation as POST /activate (`http_base.authorized`), so whatever
protects the API's POSTs protects these too.
"""

from __future__ import annotations

from aiohttp import web

from fluxmix.errors import ActivationError
from fluxmix.mixer.http_base import MIXER, error_response, json_response


async def _toggle(request: web.Request, paused: bool) -> web.Response:
    mixer = request.app[MIXER]
    try:
        result = await (mixer.pause_sources(trigger="api") if paused else mixer.resume_sources(trigger="api"))
    except ActivationError as error:
        return error_response(503, str(error))
    return json_response(result, status=500 if result.get("error") else 200)


async def pause(request: web.Request) -> web.Response:
    """Sources stop emitting (positions checkpointed); downstream gears drain what is in flight."""
    return await _toggle(request, True)


async def resume(request: web.Request) -> web.Response:
    return await _toggle(request, False)


def setup(app: web.Application) -> None:
    app.router.add_post("/pause", pause)
    app.router.add_post("/resume", resume)
