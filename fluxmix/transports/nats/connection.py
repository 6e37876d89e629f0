"""One NATS connection for the mixer's whole life: connect options, state, reconnect notices.

Wires never read nats-py's private members: they ask this object for the client
(`client()`), the JetStream context (`jetstream()`), wait on `wait_connected()` (the
backpressure while NATS is down), and register for `on_reconnect` so consumers re-pull at once
instead of waiting for a silence watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fluxmix.errors import NatsUnavailableError, TransportError
from fluxmix.redact import redact
from fluxmix.status import NatsConnectionStatus
from fluxmix.transports.nats.errors import describe

log = logging.getLogger("fluxmix.transports.nats")

# Keys NatsBroker accepts in connect_options (the daemon maps its --nats-* flags onto these).
CONNECT_OPTION_KEYS = frozenset(
    {
        "user",
        "password",
        "token",
        "user_credentials",  # path of a .creds file (JWT + nkey seed)
        "nkeys_seed",  # path of an nkey seed file
        "tls_ca",  # CA bundle path: verify the server
        "tls_cert",  # client certificate path (mutual TLS)
        "tls_key",  # client key path
        "tls_hostname",  # server name to verify when connecting by IP
        "tls",  # a ready ssl.SSLContext (programmatic use)
        "name",  # connection name shown in NATS monitoring
        "connect_timeout",
        "reconnect_time_wait",
        "ping_interval",
        "max_outstanding_pings",
        "pending_size",
        "flush_timeout",  # how long a publish waits for a forced flush of the client's buffer
        "inbox_prefix",
    }
)


def connect_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """nats.connect() keyword arguments from the operator's options; refuses unknown keys."""
    unknown = sorted(set(options) - CONNECT_OPTION_KEYS)
    if unknown:
        raise TransportError(f"unknown NATS connect option(s): {', '.join(unknown)}")
    kwargs = {k: v for k, v in options.items() if v is not None and not k.startswith("tls_")}
    kwargs.pop("tls", None)
    tls: ssl.SSLContext | None = options.get("tls")
    ca, cert, key = options.get("tls_ca"), options.get("tls_cert"), options.get("tls_key")
    if tls is None and (ca or cert):
        try:
            tls = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=ca)
            if cert:
                tls.load_cert_chain(certfile=cert, keyfile=key)
        except (OSError, ssl.SSLError) as exc:
            raise NatsUnavailableError(f"NATS TLS setup failed: {exc}") from exc
    if tls is not None:
        kwargs["tls"] = tls
    if options.get("tls_hostname"):
        kwargs["tls_hostname"] = options["tls_hostname"]
    return kwargs


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


class NatsConnection:
    """The client, its state (new|connected|disconnected|closed) and who to tell on reconnect."""

    def __init__(
        self,
        servers: list[str],
        connect_options: dict[str, Any],
        *,
        api_timeout: float,
        initial_connect_timeout: float,
    ) -> None:
        self.servers = servers
        self.api_timeout = api_timeout
        self.initial_connect_timeout = initial_connect_timeout
        self._kwargs = connect_kwargs(connect_options)  # validate early
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.state = "new"
        self.down_since: float | None = None
        self.connected_since: float | None = None
        self.disconnects = 0
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self.closing = False
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._listeners: set[Callable[[], None]] = set()

    async def connect(self) -> None:
        async with self._lock:
            if self.nc is not None and not self.nc.is_closed:
                return
            self.closing = False
            kwargs = {"connect_timeout": 2, "reconnect_time_wait": 1, "name": "fluxmix-mixer", **self._kwargs}
            # Every subject this connection publishes or subscribes to is built by naming.py from
            # [A-Za-z0-9_-] tokens, or is an inbox or ack subject the client or server made, so
            # nats-py's per-publish subject regex (two per message: subject and reply) is skipped.
            kwargs["skip_subject_validation"] = True
            deadline = time.monotonic() + self.initial_connect_timeout
            while True:
                try:
                    self.nc = await asyncio.wait_for(
                        nats.connect(
                            servers=self.servers,
                            max_reconnect_attempts=-1,
                            allow_reconnect=True,
                            disconnected_cb=self._on_disconnected,
                            reconnected_cb=self._on_reconnected,
                            error_cb=self._on_error,
                            closed_cb=self._on_closed,
                            **kwargs,
                        ),
                        timeout=max(1.0, self.initial_connect_timeout),
                    )
                    break
                except (TimeoutError, nats.errors.Error, OSError) as exc:
                    if time.monotonic() >= deadline:
                        raise NatsUnavailableError(
                            f"cannot connect to NATS at {', '.join(self.servers)}: "
                            f"{self.last_error or describe(exc)}"
                        ) from exc
                    await asyncio.sleep(0.5)
            self.js = self.nc.jetstream(timeout=self.api_timeout)
            self.state = "connected"
            self.connected_since = time.time()
            self.down_since = None
            self._connected.set()
            log.info("connected to NATS at %s", self.url_netloc())

    def url_netloc(self) -> str:
        return self.nc.connected_url.netloc if self.nc is not None and self.nc.connected_url else "?"

    # callbacks from nats-py --------------------------------------------------------------------
    async def _on_disconnected(self) -> None:
        if self.closing:
            return
        if self.state != "disconnected":
            self.disconnects += 1
            self.down_since = time.time()
            log.warning("NATS disconnected; reconnecting (gears on standard wires wait)")
        self.state = "disconnected"
        self._connected.clear()

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.state = "connected"
        self.connected_since = time.time()
        down = time.time() - self.down_since if self.down_since else 0.0
        self.down_since = None
        self._connected.set()
        log.warning("NATS reconnected to %s after %.1fs", self.url_netloc(), down)
        self._notify()

    async def _on_error(self, exc: Exception) -> None:
        self.errors += 1
        text = describe(exc)
        if text != self.last_error:
            log.warning("NATS error: %s", text)
        self.last_error = text

    async def _on_closed(self) -> None:
        self._connected.clear()
        self.state = "closed"
        if self.closing:
            return
        # with unlimited reconnects this only happens on a fatal error (e.g. authorization)
        self.down_since = self.down_since or time.time()
        log.error("NATS connection closed for good: %s", self.last_error or "unknown reason")
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    # what wires use ------------------------------------------------------------------------------
    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` on every reconnect and on a final close; returns the unregister call."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    @property
    def is_connected(self) -> bool:
        return self.state == "connected" and self.nc is not None and self.nc.is_connected

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (the backpressure while NATS is down); raise once closed for good.

        With `timeout`, raise TimeoutError when still disconnected after that many seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_connected:
            if self.state == "closed" or self.nc is None:
                raise NatsUnavailableError(f"NATS connection closed: {self.last_error or 'not connected'}")
            step = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if step <= 0:
                raise TimeoutError
            if self._connected.is_set():
                # nats-py lost the socket but has not called disconnected_cb yet: never spin
                await asyncio.sleep(min(0.05, step))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._connected.wait(), step)

    def client(self) -> NatsClient:
        if self.nc is None:
            raise NatsUnavailableError("NATS broker is not connected (connect() was not called)")
        return self.nc

    def jetstream(self) -> JetStreamContext:
        if self.js is None or self.nc is None:
            raise NatsUnavailableError("NATS broker is not connected (connect() was not called)")
        return self.js

    async def close(self) -> None:
        self.closing = True
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5.0)
        self.state = "closed"
        self._connected.clear()

    def status(self) -> NatsConnectionStatus:
        url = None
        if self.nc is not None and self.nc.connected_url is not None:
            url = f"{self.nc.connected_url.scheme}://{self.nc.connected_url.netloc}"
        return NatsConnectionStatus(
            state=self.state,
            servers=[redact(server) for server in self.servers],  # no password in /status
            connected_url=redact(url) if url else None,
            connected_since=iso(self.connected_since),
            down_since=iso(self.down_since),
            disconnects=self.disconnects,
            reconnects=self.reconnects,
            errors=self.errors,
            last_error=self.last_error,
        )

    @property
    def ready(self) -> tuple[bool, str]:
        if self.state == "connected":
            return True, ""
        if self.state == "disconnected":
            return False, f"NATS disconnected since {iso(self.down_since)}"
        if self.state == "closed":
            return False, f"NATS connection closed: {self.last_error or 'closed'}"
        return False, "NATS not connected yet"


def split_servers(servers: Iterable[str] | str) -> list[str]:
    return [servers] if isinstance(servers, str) else list(servers)
