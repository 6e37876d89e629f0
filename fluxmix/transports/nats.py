"""`transport: standard` — durable wires on NATS JetStream.

Naming (stable across scenario versions, reloads and restarts, so unacked messages are never
orphaned; everything derives from the scenario *name* and the wire's endpoints, never the hash):

    stream    FLUXMIX_<scenario>                 one per scenario name
    subjects  fluxmix.<scenario>.>               the stream's only subject filter
    subject   fluxmix.<scenario>.<src-gear>.<src-port>.<dst-gear>.<dst-port>     one per wire
    consumer  <src-gear>_<src-port>__<dst-gear>_<dst-port>_<hash8>               durable, pull
    msg id    Nats-Msg-Id: <consumer>:<message id>

`<scenario>` is the scenario name when it is a valid NATS token (no dots), otherwise the name with
dots as `_` plus an 8-hex hash of the real name; gear and port tokens are sanitised the same way.
The consumer's hash suffix is over the exact wire key (`a.out->b.in`), so two wires can never share
a durable even when sanitising makes their readable parts equal. The message id is scoped to the
wire, so fan-out of one message to two wires in the same stream is not de-duplicated away.

Stream settings and why:
- work-queue retention: an acked message is removed, so the stream only ever holds what is still
  owed to a consumer; no max-age, no silent discard of old messages. A message on a wire whose
  consumer does not exist (yet) stays until one does.
- file storage, replicas from the settings (3 on a cluster), a duplicate window (2 minutes by
  default; `--nats-duplicate-window`).
- size limit: unlimited by default; with `max_bytes` set, `discard: new` makes a full stream refuse
  new messages, which the publisher turns into backpressure (it retries), never into loss.
- prepare() adds the stream, or updates it when a setting differs; it never purges or deletes a
  stream or a consumer (an operator removes consumers of wires gone for good with `nats consumer rm`).
- JetStream acks a publish once the message is in the page cache (the server's default
  `sync_interval` is 2 minutes); a process crash loses nothing, a power loss of a single node can.
  Run a replicated cluster (deploy/) or set `sync_interval: always` on the server for more.

Consumers: durable pull consumers, explicit acks, `ack_wait` (30 s by default, `--nats-ack-wait`;
kept alive with in-progress acks while a slow batch is being handled), no server-side delivery
limit (`max_deliver` -1): the
wire's own `max_deliver` decides when a failing message is dead-lettered, so a message is never
stranded unacked by the server giving up on it.

Delivery guarantee: at least once across a wire. A message is acked only after the downstream gear
handled it AND whatever the gear emitted is itself flushed (acknowledged by JetStream or queued).
Duplicates are suppressed where ids repeat: publishes carry `Nats-Msg-Id`, ids are deterministic
(sources: scenario/gear/seq; derived messages: a hash of the parent id), so a replay after a crash
or a redelivery re-publishes the same ids and JetStream drops them inside the duplicate window.
What remains is a side effect of the final gear (e.g. a file line) for a message that was handled
but not yet acked when the mixer died: sinks de-duplicate by message id when they need exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from fluxmix.errors import NatsUnavailableError, TransportError
from fluxmix.message import Message
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.transports.base import Broker, Delivery, Wire

__all__ = [
    "CONNECT_OPTION_KEYS",
    "NatsBroker",
    "NatsWire",
    "consumer_name",
    "scenario_token",
    "stream_name",
    "wire_subject",
]

log = logging.getLogger(__name__)

STREAM_PREFIX = "FLUXMIX_"
SUBJECT_PREFIX = "fluxmix"
DEFAULT_MAX_DELIVER = 5
DEFAULT_RETRY_DELAY = 0.5
CONSUMER_CHECK_INTERVAL = 5.0  # seconds of idle fetching between checks that the durable exists

_TOKEN_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_TOKEN_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")

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
        "inbox_prefix",
    }
)


# --- naming ------------------------------------------------------------------------------------


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _token(text: str) -> str:
    """`text` as one NATS subject token / name part: unchanged when valid, else sanitised + hash."""
    if _TOKEN_OK.match(text):
        return text
    return f"{_TOKEN_BAD_CHARS.sub('_', text)}_{_short_hash(text)}"


def scenario_token(name: str) -> str:
    return _token(name)


def stream_name(scenario_name: str) -> str:
    return f"{STREAM_PREFIX}{scenario_token(scenario_name)}"


def stream_subjects(scenario_name: str) -> list[str]:
    return [f"{SUBJECT_PREFIX}.{scenario_token(scenario_name)}.>"]


def wire_subject(scenario_name: str, spec: WireSpec) -> str:
    parts = (spec.source.gear, spec.source.port, spec.target.gear, spec.target.port)
    return ".".join([SUBJECT_PREFIX, scenario_token(scenario_name), *(_token(p) for p in parts)])


def consumer_name(spec: WireSpec) -> str:
    readable = f"{_token(spec.source.gear)}_{_token(spec.source.port)}__{_token(spec.target.gear)}_{_token(spec.target.port)}"
    return f"{readable}_{_short_hash(spec.key)}"


# --- connect options -----------------------------------------------------------------------------


def _connect_kwargs(options: dict[str, Any]) -> dict[str, Any]:
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


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


# --- broker --------------------------------------------------------------------------------------



def _describe(exc: BaseException) -> str:
    """nats-py raises some errors (timeouts) with no text: name the type rather than print nothing."""
    return str(exc) or type(exc).__name__

class NatsBroker(Broker):
    """One NATS connection for the mixer's whole life; a JetStream stream per scenario name."""

    kind = "standard"

    def __init__(
        self,
        servers: Iterable[str] | str,
        *,
        connect_options: dict[str, Any] | None = None,
        replicas: int = 1,
        duplicate_window: float = 120.0,
        max_bytes: int = -1,
        ack_wait: float = 30.0,
        ack_timeout: float = 5.0,
        api_timeout: float = 5.0,
        max_in_flight: int = 256,
        batch_size: int = 256,
        fetch_timeout: float = 0.5,
        initial_connect_timeout: float = 10.0,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else [s for s in servers]
        self.connect_options = dict(connect_options or {})
        self.replicas = int(replicas)
        self.duplicate_window = duplicate_window
        self.max_bytes = max_bytes
        self.ack_wait = ack_wait
        self.ack_timeout = ack_timeout
        self.api_timeout = api_timeout
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.initial_connect_timeout = initial_connect_timeout
        self._kwargs = _connect_kwargs(self.connect_options)  # validate early
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.state = "new"  # new|connected|disconnected|closed
        self.down_since: float | None = None
        self.connected_since: float | None = None
        self.disconnects = 0
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._connect_lock = asyncio.Lock()
        self._streams: dict[str, StreamConfig] = {}
        self._wires: set[NatsWire] = set()

    # connection -------------------------------------------------------------------------------
    async def connect(self) -> None:
        async with self._connect_lock:
            if self.nc is not None and not self.nc.is_closed:
                return
            self._closing = False
            kwargs = {
                "connect_timeout": 2,
                "reconnect_time_wait": 1,
                "name": "fluxmix-mixer",
                **self._kwargs,
            }
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
                            f"{self.last_error or _describe(exc)}"
                        ) from exc
                    await asyncio.sleep(0.5)
            self.js = self.nc.jetstream(timeout=self.api_timeout, publish_async_max_pending=1 << 20)
            self.state = "connected"
            self.connected_since = time.time()
            self.down_since = None
            self._connected.set()
            log.info("connected to NATS at %s", self.nc.connected_url.netloc if self.nc.connected_url else "?")

    async def _on_disconnected(self) -> None:
        if self._closing:
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
        url = self.nc.connected_url.netloc if self.nc and self.nc.connected_url else "?"
        log.warning("NATS reconnected to %s after %.1fs", url, down)

    async def _on_error(self, exc: Exception) -> None:
        self.errors += 1
        text = _describe(exc)
        if text != self.last_error:
            log.warning("NATS error: %s", text)
        self.last_error = text

    async def _on_closed(self) -> None:
        self._connected.clear()
        if self._closing:
            self.state = "closed"
            return
        # with unlimited reconnects this only happens on a fatal error (e.g. authorization)
        self.state = "closed"
        self.down_since = self.down_since or time.time()
        log.error("NATS connection closed for good: %s", self.last_error or "unknown reason")
        for wire in list(self._wires):
            wire._wake()

    @property
    def is_connected(self) -> bool:
        return self.state == "connected" and self.nc is not None and self.nc.is_connected

    async def wait_connected(self) -> None:
        """Wait until connected (the backpressure while NATS is down); raise once closed for good."""
        while not self._connected.is_set():
            if self.state == "closed" or self.nc is None:
                raise NatsUnavailableError(f"NATS connection closed: {self.last_error or 'not connected'}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._connected.wait(), 1.0)

    def _need_js(self) -> JetStreamContext:
        if self.js is None or self.nc is None:
            raise NatsUnavailableError("NATS broker is not connected (connect() was not called)")
        return self.js

    # streams and consumers ----------------------------------------------------------------------
    def stream_config(self, scenario_name: str) -> StreamConfig:
        return StreamConfig(
            name=stream_name(scenario_name),
            description=f"fluxmix scenario {scenario_name}",
            subjects=stream_subjects(scenario_name),
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window,
            max_bytes=self.max_bytes,
            discard=DiscardPolicy.NEW,
            max_age=0,
            deny_delete=False,
            deny_purge=False,
        )

    def consumer_config(self, scenario_name: str, spec: WireSpec) -> ConsumerConfig:
        name = consumer_name(spec)
        return ConsumerConfig(
            name=name,
            durable_name=name,
            description=f"fluxmix wire {spec.key}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            filter_subject=wire_subject(scenario_name, spec),
            max_ack_pending=max(1000, self.batch_size * 4),
            max_waiting=64,
        )

    async def prepare(self, scenario: Scenario, scenario_hash: str, wires: list[WireSpec]) -> None:
        js = self._need_js()
        await self._api(self._ensure_stream(js, scenario.name), "create the stream")
        for spec in wires:
            if spec.transport == self.kind:
                await self._api(
                    self._ensure_consumer(js, scenario.name, spec), f"create the consumer for wire {spec.key}"
                )

    async def _api(self, coro: Any, what: str) -> Any:
        """Run a JetStream API call, waiting (bounded) for the connection first."""
        try:
            await asyncio.wait_for(self.wait_connected(), self.initial_connect_timeout)
        except TimeoutError:
            coro.close()
            raise NatsUnavailableError(
                f"cannot {what}: NATS disconnected since {_iso(self.down_since) or '?'}"
            ) from None
        try:
            return await coro
        except nats.js.errors.APIError as exc:
            raise TransportError(f"cannot {what}: {exc.description or exc} (err_code {exc.err_code})") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise NatsUnavailableError(f"cannot {what}: {_describe(exc)}") from exc

    async def _ensure_stream(self, js: JetStreamContext, scenario_name: str) -> None:
        wanted = self.stream_config(scenario_name)
        name = wanted.name
        assert name is not None
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(wanted)
            log.info("created JetStream stream %s (replicas %d)", name, self.replicas)
            self._streams[name] = wanted
            return
        have = info.config
        if have.retention != RetentionPolicy.WORK_QUEUE:
            raise TransportError(
                f"stream {name} exists with retention {have.retention}; fluxmix needs workqueue "
                "(it was not created by fluxmix: rename or remove it)"
            )
        changes = {
            "subjects": sorted(set(have.subjects or []) | set(wanted.subjects or [])),
            "num_replicas": wanted.num_replicas,
            "duplicate_window": wanted.duplicate_window,
            "max_bytes": wanted.max_bytes,
            "discard": wanted.discard,
        }
        current = {
            "subjects": sorted(have.subjects or []),
            "num_replicas": have.num_replicas,
            "duplicate_window": have.duplicate_window,
            "max_bytes": have.max_bytes,
            "discard": have.discard,
        }
        if changes != current:
            config = StreamConfig.from_response(have.as_dict())
            for key, value in changes.items():
                setattr(config, key, value)
            await js.update_stream(config)
            log.info("updated JetStream stream %s: %s", name, {k: v for k, v in changes.items() if current[k] != v})
        self._streams[name] = wanted

    async def _ensure_consumer(self, js: JetStreamContext, scenario_name: str, spec: WireSpec) -> None:
        # add_consumer creates or updates; pull_subscribe(config=...) would silently keep an old config
        await js.add_consumer(stream_name(scenario_name), self.consumer_config(scenario_name, spec))

    # wires --------------------------------------------------------------------------------------
    def wire(self, scenario: Scenario, scenario_hash: str, spec: WireSpec) -> NatsWire:
        wire = NatsWire(self, scenario.name, spec)
        self._wires.add(wire)
        return wire

    def _forget(self, wire: NatsWire) -> None:
        self._wires.discard(wire)

    async def close(self) -> None:
        self._closing = True
        for wire in list(self._wires):
            with contextlib.suppress(Exception):
                await wire.close()
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5.0)
        self.state = "closed"
        self._connected.clear()

    def status(self) -> dict[str, Any]:
        url = None
        if self.nc is not None and self.nc.connected_url is not None:
            url = f"{self.nc.connected_url.scheme}://{self.nc.connected_url.netloc}"
        return {
            "kind": self.kind,
            "state": self.state,
            "servers": list(self.servers),
            "connected_url": url,
            "connected_since": _iso(self.connected_since),
            "down_since": _iso(self.down_since),
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "last_error": self.last_error,
            "replicas": self.replicas,
            "streams": sorted(self._streams),
        }

    @property
    def ready(self) -> tuple[bool, str]:
        if self.state == "connected":
            return True, ""
        if self.state == "disconnected":
            return False, f"NATS disconnected since {_iso(self.down_since)}"
        if self.state == "closed":
            return False, f"NATS connection closed: {self.last_error or 'closed'}"
        return False, "NATS not connected yet"


# --- wire ----------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Publish:
    """One message on its way to JetStream, until its ack arrives."""

    payload: bytes
    msg_id: str
    future: asyncio.Future[Any] | None = None
    deadline: float = 0.0
    attempts: int = 0
    retry: bool = False  # the server answered with a retriable error; the watchdog re-publishes


class NatsWire(Wire):
    """One standard wire: publishes to its subject, consumes through its durable consumer."""

    durable = True

    def __init__(self, broker: NatsBroker, scenario_name: str, spec: WireSpec) -> None:
        super().__init__(spec)
        self.broker = broker
        self.scenario_name = scenario_name
        self.stream = stream_name(scenario_name)
        self.subject = wire_subject(scenario_name, spec)
        self.consumer = consumer_name(spec)
        self.max_deliver = int(spec.options.get("max_deliver", DEFAULT_MAX_DELIVER))
        self.retry_delay = float(spec.options.get("retry_delay", DEFAULT_RETRY_DELAY))
        self.duplicates = 0
        self.publish_retries = 0
        self.acked = 0
        # publishing: acks are confirmed by future callbacks (cheap per message); a watchdog task
        # re-publishes what timed out or failed retriably
        self._slots = asyncio.Semaphore(broker.max_in_flight)
        self._in_flight: dict[int, _Publish] = {}  # insertion order == deadline order
        self._retry_wanted = asyncio.Event()
        self._progress: asyncio.Future[None] | None = None  # resolved whenever a publish settles
        self._watchdog: asyncio.Task[None] | None = None
        self._failures: list[str] = []
        # consuming
        self._sub: JetStreamContext.PullSubscription | None = None
        self._consume_task: asyncio.Task[Any] | None = None
        self._consume_done = asyncio.Event()
        self._consume_done.set()
        self._stopping = False
        self._drained = 0
        self._in_hand: dict[int, Msg] = {}
        self._closed = False
        # status cache
        self._info: dict[str, Any] = {}
        self._info_at = 0.0
        self._info_task: asyncio.Task[None] | None = None

    @property
    def wire_id(self) -> str:
        return self.consumer

    def _wake(self) -> None:
        self._retry_wanted.set()

    # sending ------------------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        """Publish, waiting while NATS is down or `max_in_flight` acks are outstanding."""
        self._raise_failures()
        if self._closed:
            raise TransportError(f"wire {self.spec.key} is closed")
        await self._slots.acquire()
        entry = _Publish(message.encode(), f"{self.wire_id}:{message.id}")
        try:
            await self._publish(entry)
        except BaseException:
            self._slots.release()
            raise
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(), name=f"nats-publish-watchdog {self.spec.key}"
            )

    async def _publish(self, entry: _Publish) -> None:
        broker = self.broker
        delay = 0.05
        while True:
            if not broker.is_connected:
                await broker.wait_connected()
            js = broker._need_js()
            try:
                future = await js.publish_async(self.subject, entry.payload, headers={"Nats-Msg-Id": entry.msg_id})
            except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError) as exc:
                log.debug("publish on %s deferred: %s", self.spec.key, exc)
            except nats.errors.ConnectionClosedError as exc:
                if broker.state == "closed" or self._closed:
                    raise NatsUnavailableError(f"wire {self.spec.key}: NATS connection closed") from exc
            except nats.errors.MaxPayloadError as exc:
                raise TransportError(
                    f"wire {self.spec.key}: message {entry.msg_id} is too large for NATS: {exc}"
                ) from exc
            else:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        entry.future = future
        entry.deadline = time.monotonic() + broker.ack_timeout
        entry.attempts += 1
        entry.retry = False
        self._in_flight.pop(id(entry), None)
        self._in_flight[id(entry)] = entry
        future.add_done_callback(lambda fut: self._on_ack(entry, fut))

    def _on_ack(self, entry: _Publish, fut: asyncio.Future[Any]) -> None:
        if entry.future is not fut or fut.cancelled():
            return  # superseded by a re-publish, or cancelled by the watchdog / close()
        exc = fut.exception()
        if exc is None:
            self.stats.sent += 1
            if getattr(fut.result(), "duplicate", False):
                self.duplicates += 1
            self._finish(entry)
        elif self._retriable(exc):
            entry.retry = True
            self._retry_wanted.set()
        else:
            reason = getattr(exc, "description", None) or str(exc) or type(exc).__name__
            self._fail(entry, f"wire {self.spec.key}: publish of {entry.msg_id} failed: {reason}")

    def _finish(self, entry: _Publish) -> None:
        if self._in_flight.pop(id(entry), None) is not None:
            self._slots.release()
        progress, self._progress = self._progress, None
        if progress is not None and not progress.done():
            progress.set_result(None)

    def _fail(self, entry: _Publish, reason: str) -> None:
        self._failures.append(reason)
        log.error("%s", reason)
        self._finish(entry)

    async def _watch(self) -> None:
        """Re-publish what JetStream did not acknowledge in time (nats-py would wait forever).

        The same Nats-Msg-Id goes out again, so if the first attempt was stored after all the
        duplicate window drops the second. One pass handles everything overdue, so a disconnect
        that lost hundreds of publishes costs one backoff, not one per message."""
        tick = min(0.25, self.broker.ack_timeout / 4)
        backoff = 0.05
        warned = 0.0
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._retry_wanted.wait(), tick)
            self._retry_wanted.clear()
            now = time.monotonic()
            stale = [e for e in self._in_flight.values() if e.retry or e.deadline <= now]
            if not stale:
                backoff = 0.05
                continue
            if now - warned > 10:
                warned = now
                log.warning(
                    "wire %s: %d publish(es) not acknowledged by JetStream yet (NATS %s); retrying",
                    self.spec.key,
                    len(stale),
                    self.broker.state,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
            for entry in stale:
                old = entry.future
                if id(entry) not in self._in_flight or old is None:
                    continue  # confirmed or failed meanwhile
                if old.done() and not old.cancelled() and old.exception() is None:
                    continue  # acked during the backoff; its callback confirms it
                entry.future = None
                old.cancel()  # frees nats-py's slot
                self.publish_retries += 1
                try:
                    await self._publish(entry)
                except (NatsUnavailableError, TransportError) as exc:
                    self._fail(entry, str(exc))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never let the watchdog die with acks outstanding
                    log.exception("wire %s: re-publish failed", self.spec.key)
                    self._fail(entry, f"wire {self.spec.key}: re-publish of {entry.msg_id} failed: {exc}")

    @staticmethod
    def _retriable(error: BaseException) -> bool:
        if isinstance(error, (asyncio.TimeoutError, nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError)):
            return True
        if isinstance(error, nats.js.errors.APIError):
            # 503: JetStream / stream temporarily unavailable (leader election, restart);
            # store limits with discard new: backpressure until the consumer catches up
            text = (error.description or "").lower()
            return error.code in (None, 503, 408) or "exceeded" in text or "resources" in text
        return isinstance(error, (nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError))

    def _raise_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise TransportError(failures[0] + more)

    async def flush(self) -> None:
        """Return once JetStream acknowledged everything sent before this call; raise on a
        definitive failure. Publishes that start while flushing are not waited for, so a gear fed
        by several wires cannot starve another's flush (and with it, its acks)."""
        for entry in list(self._in_flight.values()):
            while id(entry) in self._in_flight:
                if self._closed:
                    raise TransportError(
                        f"wire {self.spec.key}: closed with {len(self._in_flight)} publishes unconfirmed"
                    )
                if self._watchdog is None or self._watchdog.done():  # pragma: no cover - defensive
                    self._watchdog = asyncio.get_running_loop().create_task(self._watch())
                if self._progress is None:
                    self._progress = asyncio.get_running_loop().create_future()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._progress), 1.0)
        self._raise_failures()

    # consuming ----------------------------------------------------------------------------------
    async def consume(self, delivery: Delivery) -> None:
        self._consume_task = asyncio.current_task()
        self._consume_done.clear()
        keepalive = asyncio.get_running_loop().create_task(self._keep_alive(), name=f"nats-inprogress {self.spec.key}")
        last_check = time.monotonic()
        try:
            while not self._stopping:
                if not self.broker.is_connected:
                    # short waits, so a drain while NATS is down returns instead of hanging
                    if self.broker.state == "closed":
                        await self.broker.wait_connected()  # raises: closed for good
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.broker._connected.wait(), 0.25)
                    continue
                sub = await self._subscription()
                if sub is None:
                    break
                try:
                    msgs = await sub.fetch(self.broker.batch_size, timeout=self.broker.fetch_timeout)
                except TimeoutError:  # includes nats' TimeoutError: nothing to do, loop
                    if time.monotonic() - last_check > CONSUMER_CHECK_INTERVAL:
                        last_check = time.monotonic()
                        await self._check_consumer()
                    continue
                except nats.js.errors.APIError as exc:
                    if self._stopping:
                        break
                    await self._on_fetch_error(exc)
                    continue
                except (nats.errors.Error, OSError) as exc:
                    if self._stopping:
                        break
                    log.debug("fetch on %s failed: %s", self.spec.key, exc)
                    await asyncio.sleep(0.2)
                    continue
                await self._handle_batch(msgs, delivery)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            await self._release_subscription()
            self._consume_done.set()

    async def _subscription(self) -> JetStreamContext.PullSubscription | None:
        delay = 0.1
        while self._sub is None:
            if self._stopping:
                return None
            try:
                await self.broker.wait_connected()
                js = self.broker._need_js()
                self._sub = await js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
            except NatsUnavailableError:
                raise
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("wire %s: cannot bind to consumer %s: %s", self.spec.key, self.consumer, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return self._sub

    async def _check_consumer(self) -> None:
        """While idle, make sure the durable still exists: a pull on a deleted consumer just
        times out, so without this check a `nats consumer rm` would silently stop the wire."""
        js = self.broker.js
        if js is None or not self.broker.is_connected:
            return
        try:
            await js.consumer_info(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            log.warning("wire %s: consumer %s was removed; re-creating it", self.spec.key, self.consumer)
            try:
                await self.broker._ensure_stream(js, self.scenario_name)
                await self.broker._ensure_consumer(js, self.scenario_name, self.spec)
            except Exception as exc:
                log.error("wire %s: re-creating consumer %s failed: %s", self.spec.key, self.consumer, exc)
                return
            await self._release_subscription()  # re-bind to the new consumer
        except Exception:  # a slow or unavailable API: the next check tries again
            return

    async def _on_fetch_error(self, exc: nats.js.errors.APIError) -> None:
        # 503 (no responders) is what a pull on a removed consumer gets, as well as a stream
        # without a leader for a moment (cluster): check, re-create if it is gone, back off
        log.debug("fetch on %s: %r", self.spec.key, exc)
        await self._check_consumer()
        await asyncio.sleep(0.5)

    async def _handle_batch(self, msgs: list[Msg], delivery: Delivery) -> None:
        to_ack: list[Msg] = []
        to_term: list[Msg] = []
        for raw in msgs:
            self._in_hand[id(raw)] = raw
        try:
            for raw in msgs:
                try:
                    delivered = raw.metadata.num_delivered
                except Exception:
                    delivered = 1
                if delivered > 1:
                    self.stats.redelivered += 1
                try:
                    message = Message.decode(raw.data)
                except Exception as exc:
                    self.stats.dropped += 1
                    log.error("wire %s: dropping an undecodable message (%s); terminated", self.spec.key, exc)
                    self._in_hand.pop(id(raw), None)
                    await raw.term()
                    continue
                try:
                    await delivery.handle(message)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.stats.failed += 1
                    if delivered >= self.max_deliver:
                        try:
                            forwarded = await delivery.dead_letter(message, exc)
                        except asyncio.CancelledError:
                            raise
                        except Exception as dl_exc:  # keep the message; try again later
                            log.error("wire %s: dead-lettering %s failed: %s", self.spec.key, message.id, dl_exc)
                            self._in_hand.pop(id(raw), None)
                            await raw.nak(delay=max(self.retry_delay, 1.0))
                            continue
                        self.stats.dead_lettered += 1
                        if forwarded is False:  # no `error` wire: counted (and logged by the runtime)
                            self.stats.dropped += 1
                        self.stats.received += 1
                        to_term.append(raw)
                    else:
                        self._in_hand.pop(id(raw), None)
                        await raw.nak(delay=self.retry_delay)
                    continue
                self.stats.received += 1
                to_ack.append(raw)
                if self._stopping:
                    self._drained += 1
            # ack only once what the gear emitted is as safe as its wires make it
            try:
                await delivery.flush_downstream()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "wire %s: downstream flush failed (%s); %d messages will be redelivered",
                    self.spec.key,
                    exc,
                    len(to_ack) + len(to_term),
                )
                for raw in to_ack + to_term:
                    self._in_hand.pop(id(raw), None)
                    with contextlib.suppress(Exception):
                        await raw.nak(delay=self.retry_delay)
                await asyncio.sleep(self.retry_delay)
                return
            for raw in to_ack:
                await raw.ack()
            for raw in to_term:
                await raw.term()
            self.acked += len(to_ack) + len(to_term)
            # one round trip so the acks reached the server before we fetch again (or stop)
            nc = self.broker.nc
            if nc is not None and nc.is_connected:
                with contextlib.suppress(Exception):
                    await nc.flush(timeout=max(1, int(self.broker.ack_timeout)))
        except asyncio.CancelledError:
            # abandoned (close() without drain): hand back what is not settled now, instead of
            # leaving it to ack_wait; already-acked ones ignore the nak
            for raw in msgs:
                if id(raw) in self._in_hand:
                    with contextlib.suppress(Exception):
                        await raw.nak()
            raise
        finally:
            for raw in msgs:
                self._in_hand.pop(id(raw), None)

    async def _keep_alive(self) -> None:
        """Tell JetStream a slow batch is still being worked on, so ack_wait does not redeliver it."""
        interval = max(1.0, self.broker.ack_wait / 3)
        seen_since: dict[int, float] = {}
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            current = dict(self._in_hand)
            seen_since = {k: seen_since.get(k, now) for k in current}
            for key, raw in current.items():
                if now - seen_since[key] >= interval * 0.9:
                    with contextlib.suppress(Exception):
                        await raw.in_progress()

    async def _release_subscription(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        # messages the server already delivered to us but we never handled: hand them back now
        # instead of letting them wait for ack_wait
        queue = sub._sub._pending_queue  # no public API for this in nats-py 2.16
        while not queue.empty():
            raw = queue.get_nowait()
            if raw.headers and raw.headers.get("Status"):
                continue
            with contextlib.suppress(Exception):
                await raw.nak()
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def drain(self) -> int:
        """Stop fetching, finish the batch in hand (handle, flush, ack), flush publishes; never purge."""
        self._stopping = True
        if self._consume_task is not None and not self._consume_done.is_set():
            await self._consume_done.wait()
        if not self._closed:
            with contextlib.suppress(TransportError):
                await asyncio.wait_for(self.flush(), self.broker.ack_timeout * 4)
        return self._drained

    async def close(self) -> None:
        self._stopping = True
        self._closed = True
        task = self._consume_task
        if task is not None and not self._consume_done.is_set() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._consume_done.wait(), 5.0)
        await self._release_subscription()
        if self._watchdog is not None and not self._watchdog.done():
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watchdog
        for entry in list(self._in_flight.values()):
            if entry.future is not None:
                entry.future.cancel()  # frees nats-py's slot (its futures never time out by themselves)
        if self._info_task is not None:
            self._info_task.cancel()
        self.broker._forget(self)

    # status -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._info_at > 1.0 and (self._info_task is None or self._info_task.done()):
            self._info_at = now
            with contextlib.suppress(RuntimeError):  # no running loop: report what we have
                self._info_task = asyncio.get_running_loop().create_task(self._refresh_info())
        return {
            **super().status(),
            "stream": self.stream,
            "subject": self.subject,
            "consumer": self.consumer,
            "in_flight": len(self._in_flight),
            "publish_retries": self.publish_retries,
            "duplicates": self.duplicates,
            **self._info,
        }

    async def _refresh_info(self) -> None:
        js = self.broker.js
        if js is None or not self.broker.is_connected:
            return
        try:
            info = await asyncio.wait_for(js.consumer_info(self.stream, self.consumer), 2.0)
        except Exception:
            return
        self._info = {
            "pending": info.num_pending or 0,  # lag: in the stream, not yet delivered
            "ack_pending": info.num_ack_pending or 0,
            "server_redelivered": info.num_redelivered or 0,
        }
