"""GET /: the live data-flow page, served from files shipped in the package (no CDN).

The page (static/index.html, app.js, style.css: hand-written, no framework) draws the running
scenario's gears and wires from `GET /view`, then follows `GET /events` to move the counters,
gear states, wire rates and queue depths without reloading. It only reads, except for a reload
button shown when the mixer has an --api-token and the page was opened with `#token=...`
(a fragment never reaches the server or its access log).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from fluxmix.mixer.http_base import MIXER, json_response

FILES = {  # what may be served, and as what: nothing else under static/ is reachable
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
HEADERS = {
    # Only our own files; no inline script; not framed (the reload button must not be clickjacked).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("fluxmix.mixer").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_read("index.html"), content_type=FILES["index.html"], charset="utf-8", headers=HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound(reason=f"no such file: /static/{name[:64]}")
    return web.Response(body=_read(name), content_type=FILES[name], charset="utf-8", headers=HEADERS)


async def view(request: web.Request) -> web.Response:
    """GET /view: /status plus the scenario's layout (columns and rows), for drawing."""
    return json_response(request.app[MIXER].view())


def setup(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/view", view)
    app.router.add_get("/static/{name}", asset)
