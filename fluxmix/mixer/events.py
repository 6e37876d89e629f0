"""`GET /events`: the mixer's state changes as a Server-Sent Events stream.

Event kinds (each `data:` is one JSON object; `id:` counts up from 1 per mixer process):

| event                  | when                                                                  |
|------------------------|-----------------------------------------------------------------------|
| `hello`                | first, to each new client: the full `/status` and the drawable layout  |
| `activation-started`   | an activation begins (trigger, ref)                                    |
| `activation-finished`  | it ended: the journal entry                                            |
| `gear-state`           | a gear's state changed (running, finished, failed, paused, ...)        |
| `backpressure`         | a memory wire's queue became full (`on`) or has room again (`off`)     |
| `nats`                 | the NATS connection changed state (connected, disconnected, closed)    |
| `paused` / `resumed`   | POST /pause or /resume took effect                                     |
| `counters`             | every second: gears and wires counters, readiness, paused, expectations|
| `expectation`          | an `expect:` line changed state (pending, passing, failing): why, value |
| `global-changed`       | an operator changed global state (PUT/DELETE /state...): who, old, new |
| `globals`              | a scenario's global state moved (e.g. set-global gears); at most 1/s   |

Publishing never waits: each client has a bounded queue, and a client whose queue is full (it
reads slower than the mixer produces, or not at all) is dropped (its connection closed), so a
stuck browser tab can never slow the mixer or grow its memory. Changes are found by comparing
status snapshots (the same ones `/status` serves), so nothing on the message path is touched;
the poll only runs while someone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

log = logging.getLogger("fluxmix.mixer.events")

CLIENT_QUEUE = 256  # events a client may be behind before it is dropped
MAX_CLIENTS = 64  # more at once is refused with 503
POLL_INTERVAL = 0.25  # seconds between snapshots compared for state changes
COUNTERS_EVERY = 4  # polls per counters event (one a second)
HEARTBEAT = 15.0  # an SSE comment when nothing was sent for this long (keeps proxies from timing out)


@dataclass(eq=False)
class Subscriber:
    """One connected client: its bounded queue, and how to cut it off."""

    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    dropped: bool = False
    close: Callable[[], None] = lambda: None

    def end(self) -> None:
        """Cut the client off: its connection is aborted (a write in progress fails at once) and
        a handler waiting for the next event wakes up (the empty frame) and sees `dropped`."""
        self.dropped = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(b"")
        with contextlib.suppress(Exception):
            self.close()


def encode(event_id: int, kind: str, data: Any) -> bytes:
    payload = json.dumps(data, default=str, separators=(",", ":"))
    return f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n".encode()


class EventBus:
    """Fans events out to subscribers without ever waiting on one."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]] | None = None, *, queue_size: int = CLIENT_QUEUE,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.snapshot = snapshot  # the /status dict; None: nothing is polled (tests of the bus alone)
        self.queue_size = queue_size
        self.poll_interval = poll_interval
        self.subscribers: set[Subscriber] = set()
        self.dropped_total = 0
        self.closed = False  # the mixer is stopping: no new clients
        self._ids = itertools.count(1)
        self._poller: asyncio.Task[None] | None = None
        self._last: dict[str, Any] | None = None

    # ---- publishing ----

    def publish(self, kind: str, data: Any) -> None:
        """Queue the event for every client; a client with a full queue is dropped."""
        frame = encode(next(self._ids), kind, data)
        for sub in list(self.subscribers):
            try:
                sub.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        sub.dropped = True
        self.subscribers.discard(sub)
        self.dropped_total += 1
        log.warning("dropping an /events client that fell %d events behind", self.queue_size)
        sub.end()

    # ---- subscribers ----

    def subscribe(self, close: Callable[[], None]) -> Subscriber:
        sub = Subscriber(queue=asyncio.Queue(self.queue_size), close=close)
        self.subscribers.add(sub)
        if self.snapshot is not None and (self._poller is None or self._poller.done()):
            self._last = None
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="fluxmix events poll")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def close(self) -> None:
        """End every stream (so the HTTP server's shutdown does not wait on open streams)."""
        self.closed = True
        for sub in list(self.subscribers):
            self.unsubscribe(sub)
            sub.end()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    # ---- change detection ----

    async def _poll(self) -> None:
        assert self.snapshot is not None
        for tick in itertools.count():
            try:
                status = self.snapshot()
                self._compare(self._last, status)
                self._last = status
                if tick % COUNTERS_EVERY == 0:
                    self.publish("counters", counters(status))
            except Exception:  # a bad snapshot must not end the stream for everyone
                log.exception("reading the mixer's status for /events failed")
            await asyncio.sleep(self.poll_interval)

    def _compare(self, before: dict[str, Any] | None, now: dict[str, Any]) -> None:
        if before is None:
            return
        old_gears, new_gears = before.get("gears") or {}, now.get("gears") or {}
        same_scenario = (before.get("scenario") or {}).get("hash") == (now.get("scenario") or {}).get("hash")
        for name, gear in new_gears.items():
            was = old_gears.get(name, {}).get("state") if same_scenario else None
            if gear.get("state") != was:
                self.publish("gear-state", {"gear": name, "state": gear.get("state"), "was": was,
                                            "last_error": gear.get("last_error")})
        old_wires = (before.get("wires") or {}) if same_scenario else {}
        for key, wire in (now.get("wires") or {}).items():
            full, was_full = _is_full(wire), _is_full(old_wires.get(key) or {})
            if full != was_full:
                self.publish("backpressure", {"wire": key, "state": "on" if full else "off",
                                              "in_queue": wire.get("in_queue"), "capacity": wire.get("capacity")})
        old_nats = ((before.get("brokers") or {}).get("standard") or {}).get("state")
        nats = (now.get("brokers") or {}).get("standard") or {}
        old_expect = {e.get("expect"): e.get("state") for e in before.get("expectations") or []} if same_scenario else {}
        for expectation in now.get("expectations") or []:
            was = old_expect.get(expectation.get("expect"))
            if expectation.get("state") != was:
                self.publish("expectation", {**expectation, "was": was})
        if nats and nats.get("state") != old_nats:
            self.publish("nats", {"state": nats.get("state"), "was": old_nats, "url": nats.get("connected_url"),
                                  "last_error": nats.get("last_error")})


def _is_full(wire: dict[str, Any]) -> bool:
    """Backpressure is observable on memory wires: a full queue blocks the producer."""
    capacity, depth = wire.get("capacity"), wire.get("in_queue")
    return isinstance(capacity, int) and isinstance(depth, int) and capacity > 0 and depth >= capacity


def counters(status: dict[str, Any]) -> dict[str, Any]:
    """The part of /status that moves: what the page and `mixer top` redraw every second."""
    return {
        "state": status.get("state"),
        "ready": status.get("ready"),
        "reason": status.get("reason"),
        "paused": status.get("paused", False),
        "uptime_seconds": status.get("uptime_seconds"),
        "scenario": (status.get("scenario") or {}).get("hash"),
        "gears": status.get("gears") or {},
        "wires": status.get("wires") or {},
        "nats": ((status.get("brokers") or {}).get("standard") or {}).get("state"),
        "expectations": status.get("expectations") or [],
    }


# ---- the HTTP side ----

EVENTS: web.AppKey[EventBus] = web.AppKey("events", EventBus)


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /events: `hello`, then every event as it happens, until the client leaves or is dropped."""
    bus = request.app[EVENTS]
    if bus.closed:
        return web.json_response({"error": "the mixer is stopping"}, status=503)
    if len(bus.subscribers) >= MAX_CLIENTS:
        return web.json_response({"error": f"too many /events clients (at most {MAX_CLIENTS})"}, status=503)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    })
    await response.prepare(request)
    transport = request.transport
    sub = bus.subscribe(close=transport.abort if transport is not None else (lambda: None))
    try:
        hello = request.app.get(HELLO)
        await response.write(encode(0, "hello", hello() if hello is not None else {}))
        while not sub.dropped:
            try:
                frame = await asyncio.wait_for(sub.queue.get(), HEARTBEAT)
            except TimeoutError:
                frame = b": keepalive\n\n"
            if sub.dropped:
                break
            await response.write(frame)
    except (ConnectionError, RuntimeError):
        pass  # the client went away, or was dropped (its transport aborted)
    finally:
        bus.unsubscribe(sub)
    return response


HELLO: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("events_hello")


def setup(app: web.Application, bus: EventBus, hello: Callable[[], dict[str, Any]] | None = None) -> None:
    """Register GET /events on `app`."""
    app[EVENTS] = bus
    if hello is not None:
        app[HELLO] = hello
    app.router.add_get("/events", stream)
