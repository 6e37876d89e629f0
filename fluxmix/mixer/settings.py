"""Everything `fluxmix-mixer` is told on its command line, as one immutable value.

The CLI builds it (and checks it); the daemon only reads it, so tests can start a daemon
in-process with the same settings a user would pass.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fluxmix.errors import UserError
from fluxmix.transports.nats.provisioning import duplicate_window_for
from fluxmix.transports.registry import NatsSettings

DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8470
MIN_ACK_WAIT = 3.0  # seconds; below it the in-progress keep-alive of a slow batch cannot keep up


@dataclass(frozen=True, slots=True)
class MixerSettings:
    ref: str | None = None  # -s; None or "" = resume the last active scenario
    home: Path | None = None  # --store; None = $FLUXMIX_HOME or the platform's data dir
    http_host: str = DEFAULT_HTTP_HOST
    http_port: int = DEFAULT_HTTP_PORT
    http_enabled: bool = True
    watch: bool = True
    watch_debounce_ms: int = 300
    follow_latest: float | None = None  # seconds between polls of `name:latest`; None = off
    nats: NatsSettings = field(default_factory=NatsSettings)
    memory_queue_size: int = 1024
    stop_timeout: float = 30.0
    # Bearer token of the POST endpoints. None with `auth` = generate one in the home's api-token
    # file at start (serve() does); `auth` False (--no-auth) = POSTs need no token.
    api_token: str | None = field(default=None, repr=False)
    auth: bool = True
    # Directories whose files POST /activate may name (plus the -s file's directory).
    scenario_dirs: tuple[Path, ...] = ()
    verify_within: float | None = None  # seconds a new scenario's `expect:` lines have to pass; None = off
    # --reload: "partial" restarts only the gears a change touches; "full" restarts every gear.
    reload_mode: str = "partial"
    # Journal retention: keep the newest N entries and every entry younger than the age (seconds);
    # entries of the active and last-known-good scenarios are always kept.
    journal_keep: int = 1000
    journal_keep_seconds: float = 30 * 86400.0
    log_format: str = "text"
    log_level: str = "info"
    fleet: Any = None  # fluxmix.fleet.FleetSettings with --fleet NAME; None: a lone mixer


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT`, `:PORT` (loopback) or `PORT` -> (host, port)."""
    text = text.strip()
    host, port_text = DEFAULT_HTTP_HOST, text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise UserError(f"--http {text!r}: expected [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        host = host or DEFAULT_HTTP_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise UserError(f"--http {text!r}: expected HOST:PORT with a numeric port") from None
    if not 0 <= port <= 65535:
        raise UserError(f"--http {text!r}: port must be between 0 and 65535")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_urls(values: tuple[str, ...] | list[str] | None) -> list[str]:
    """`--nats-url a,b --nats-url c` and `FLUXMIX_NATS_URL="a, b"` both give [a, b, c]."""
    urls: list[str] = []
    for value in values or ():
        parts = [part for part in value.replace(",", " ").split() if part]
        if value.strip() and not parts:
            raise UserError(f"--nats-url {value!r}: no URL in it")
        for part in parts:
            _check_nats_url(part)
        urls.extend(parts)
    return urls


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def _check_nats_url(url: str) -> None:
    """Refuse a malformed URL at startup (exit 2) instead of a 10 s connect attempt and a rejection."""
    text = url if "://" in url else f"nats://{url}"  # nats-py accepts a bare host[:port]
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as error:
        raise UserError(f"--nats-url {url!r}: not a valid URL ({error})") from None
    if parts.scheme not in NATS_SCHEMES:
        raise UserError(f"--nats-url {url!r}: scheme must be one of {', '.join(s + '://' for s in NATS_SCHEMES)}")
    if not parts.hostname:
        raise UserError(f"--nats-url {url!r}: no host (expected e.g. nats://127.0.0.1:4222)")


def nats_settings(
    urls: list[str],
    *,
    replicas: int = 1,
    creds: Path | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    ack_wait: float = 30.0,
    duplicate_window: float | None = None,
    max_bytes: int | None = None,
    wire_backlog: int | None = 100_000,
) -> NatsSettings:
    """Map the --nats-* flags onto `nats.connect()` keyword arguments and JetStream settings."""
    options: dict[str, Any] = {}
    for flag, path in (("--nats-creds", creds), ("--nats-tls-ca", tls_ca), ("--nats-tls-cert", tls_cert), ("--nats-tls-key", tls_key)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such file")
    if (user is None) != (password is None):
        raise UserError("--nats-user and --nats-password go together")
    if tls_key is not None and tls_cert is None:
        raise UserError("--nats-tls-key needs --nats-tls-cert")
    if creds is not None:
        options["user_credentials"] = str(Path(creds).resolve())
    if user is not None:
        options["user"], options["password"] = user, password
    if token is not None:
        options["token"] = token
    # Paths, not an SSLContext: the broker builds the context (and /status stays JSON).
    for key, path in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key)):
        if path is not None:
            options[key] = str(Path(path).resolve())
    if replicas < 1:
        raise UserError("--nats-replicas must be at least 1")
    if ack_wait < MIN_ACK_WAIT:
        # the wire's keep-alive marks a slow batch in progress every ack_wait/3 (at least 1 s)
        raise UserError(f"--nats-ack-wait {ack_wait:g}: must be at least {MIN_ACK_WAIT:g} seconds")
    if duplicate_window is None:
        duplicate_window = duplicate_window_for(ack_wait)
    if duplicate_window <= ack_wait:
        raise UserError(
            f"--nats-duplicate-window {duplicate_window:g} must be longer than --nats-ack-wait {ack_wait:g} "
            "(plus a source's checkpoint interval): a redelivered or replayed message must still be recognised"
        )
    if max_bytes is not None and max_bytes < 1:
        raise UserError(f"--nats-max-bytes {max_bytes}: must be a positive number of bytes")
    if wire_backlog is not None and wire_backlog < 1:
        raise UserError(f"--nats-wire-backlog {wire_backlog}: must be a positive number of messages")
    return NatsSettings(
        servers=urls,
        connect_options=options,
        replicas=replicas,
        ack_wait=ack_wait,
        duplicate_window=duplicate_window,
        max_bytes=max_bytes,
        wire_backlog=wire_backlog,
    )
