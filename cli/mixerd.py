"""`fluxmix-mixer`: the daemon's command line. Parses flags into MixerSettings and runs serve()."""

from __future__ import annotations

import signal

# SIGHUP's default action kills the process. Until serve() installs the reload handler, a
# `systemctl reload` (or a SIGHUP from a script that raced our start) would kill the mixer, and
# systemd does not restart a unit that died of SIGHUP. Startup resolves the newest reference
# anyway, so a SIGHUP this early has nothing to add: ignore it.
signal.signal(signal.SIGHUP, signal.SIG_IGN)

import asyncio  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from fluxmix import __version__  # noqa: E402
from fluxmix.cli._app import FluxmixCommand  # noqa: E402
from fluxmix.mixer.logs import LOG_FORMATS, LOG_LEVELS, configure_logging  # noqa: E402
from fluxmix.mixer.settings import MixerSettings, nats_settings, parse_listen, split_urls  # noqa: E402

_FILE = click.Path(dir_okay=False, path_type=Path)


from fluxmix.cli.store_cmd import Duration as StoreDuration  # noqa: E402 - accepts 0 and days


class Duration(click.ParamType):
    """`30s`, `500ms`, `2m`, `1h`, or plain seconds (`30`)."""

    name = "duration"
    _UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        for unit in ("ms", "s", "m", "h"):
            if text.endswith(unit) and text[: -len(unit)].strip():
                number, scale = text[: -len(unit)].strip(), self._UNITS[unit]
                break
        else:
            number, scale = text, 1.0
        try:
            seconds = float(number) * scale
        except ValueError:
            self.fail(f"{str(value)[:40]!r} is not a duration like 30s, 500ms, 2m or 1h", param, ctx)
        if not 0 < seconds < float("inf"):
            self.fail(f"{str(value)[:40]!r}: must be a positive duration", param, ctx)
        return seconds


def _fleet_settings(name: str | None, member: str | None, member_ttl: float, lease_ttl: float, claim_ttl: float,
                    nats_urls: tuple[str, ...]) -> object:
    """FleetSettings for --fleet (None without it); checked here, so a bad flag exits 2 at once."""
    from fluxmix.errors import UserError

    if not name:
        if member:
            raise UserError("--fleet-member needs --fleet NAME")
        return None
    from fluxmix.fleet.member import FleetSettings
    from fluxmix.fleet.naming import check_fleet_name, check_member_id

    check_fleet_name(name)
    if member:
        check_member_id(member)
    if not nats_urls:
        raise UserError("--fleet needs --nats-url: the members meet on a NATS cluster, not an embedded server")
    return FleetSettings(name=name, member=member, member_ttl=member_ttl, lease_ttl=lease_ttl, claim_ttl=claim_ttl)


@click.command(cls=FluxmixCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-s",
    "--scenario",
    "ref",
    metavar="REF",
    default="",
    help="Scenario to run: a file path (imported, then watched), name:tag, name (latest), or sha256:HASH. "
    "Empty: resume the last active scenario.",
)
@click.option("--store", "home", type=click.Path(file_okay=False, path_type=Path), envvar="FLUXMIX_HOME",
              help="Store directory (default: $FLUXMIX_HOME, else the platform's user data directory).")
@click.option("--http", "http", metavar="HOST:PORT", default="127.0.0.1:8470", show_default=True,
              help="Address of the HTTP API (on a non-loopback address, never use --no-auth).")
@click.option("--no-http", is_flag=True, help="Do not start the HTTP API.")
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Reload when the scenario file (when -s is a path) changes.")
@click.option("--follow-latest", metavar="SECONDS", type=click.FloatRange(min=0.1), default=None,
              help="Poll the store and activate a new highest tag when following name or name:latest.")
@click.option("--nats-url", "nats_urls", metavar="URL", multiple=True, envvar="FLUXMIX_NATS_URL",
              help="NATS server(s); repeat or separate with commas. Default: an embedded nats-server "
              "when a scenario has a standard wire.")
@click.option("--nats-replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="JetStream stream replicas (3 for a three-node cluster).")
@click.option("--nats-ack-wait", type=click.FloatRange(min=3.0), default=30.0, show_default=True, metavar="SECONDS",
              help="How long JetStream waits for an ack before redelivering; after a crash, the time until the "
              "dead mixer's unacked batch comes back.")
@click.option("--nats-duplicate-window", type=click.FloatRange(min=1.0), default=None,
              metavar="SECONDS", help="How long JetStream remembers message ids to drop re-published ones; must "
              "exceed --nats-ack-wait plus a source's checkpoint interval. Default: --nats-ack-wait + 30 "
              "(60 s), what a redelivery after a crash and restart needs; the server's memory grows with it.")
@click.option("--nats-max-bytes", type=click.IntRange(min=1), default=None, metavar="BYTES",
              help="Size limit of each scenario's stream; when full, publishers wait (nothing is dropped). "
              "Default: unlimited.")
@click.option("--nats-wire-backlog", type=click.IntRange(min=1), default=100_000, show_default=True,
              metavar="MESSAGES", help="Messages a standard wire may hold for its consumer; at the bound its "
              "producer waits (backpressure, nothing is dropped).")
@click.option("--nats-creds", type=_FILE, envvar="FLUXMIX_NATS_CREDS", help="NATS credentials file (JWT + NKey).")
@click.option("--nats-user", envvar="FLUXMIX_NATS_USER", help="NATS user (with --nats-password).")
@click.option("--nats-password", envvar="FLUXMIX_NATS_PASSWORD", help="NATS password.")
@click.option("--nats-token", envvar="FLUXMIX_NATS_TOKEN", help="NATS authentication token.")
@click.option("--nats-tls-ca", type=_FILE, help="CA bundle to verify the NATS server.")
@click.option("--nats-tls-cert", type=_FILE, help="Client certificate for NATS mutual TLS.")
@click.option("--nats-tls-key", type=_FILE, help="Key of --nats-tls-cert.")
@click.option("--memory-queue-size", type=click.IntRange(1, 1_000_000), default=1024, show_default=True,
              help="Default queue size of memory wires (a wire's queue_size overrides it).")
@click.option("--stop-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="How long a stop or reload may take to drain before giving up.")
@click.option("--reload", "reload_mode", type=click.Choice(["partial", "full"]), default="partial", show_default=True,
              help="What a reload restarts: only the gears and wires the change touches (partial), or every "
                   "gear (full, the behaviour before partial reloads).")
@click.option("--verify-within", type=Duration(), default=None, metavar="DURATION",
              help="After an activation, the scenario's expect: lines must all pass within this window "
              "(e.g. 30s), or it is rolled back to the last known good scenario. Default: off.")
@click.option("--journal-keep", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Journal retention: keep at least the newest N entries (activations and global-state changes).")
@click.option("--journal-keep-for", "journal_keep_for", type=StoreDuration(), default="30d", show_default=True,
              metavar="DURATION", help="Journal retention: keep every entry younger than this (e.g. 7d, 12h, 0). "
              "Entries of the active and last-known-good scenarios are always kept; pruning lets "
              "`fluxmix store gc` reclaim the scenarios only pruned entries referenced.")
@click.option("--api-token", envvar="FLUXMIX_API_TOKEN", metavar="TOKEN",
              help="Bearer token required by every POST. Default: a generated one, kept in the api-token "
              "file (mode 0600) of the store directory, where `fluxmix mixer` finds it.")
@click.option("--no-auth", is_flag=True,
              help="POSTs need no token (any local process may activate scenarios; browsers still cannot).")
@click.option("--scenario-dir", "scenario_dirs", metavar="DIR", multiple=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="A directory whose files POST /activate may name (repeatable). Default: only the "
              "directory of the -s file.")
@click.option("--gears-path", "gears_path", metavar="DIR", multiple=True,
              help="Directory python gears may import their module from (repeat, or separate with ':'; "
              "default $FLUXMIX_GEARS_PATH). Other modules must come from an installed fluxmix.gears plugin.")
@click.option("--fleet", "fleet", metavar="NAME", default=None, envvar="FLUXMIX_FLEET",
              help="Join the fleet NAME on --nats-url: sources run on one member at a time (leases), durable "
              "wires are shared, one desired scenario for all (see README: Scaling out).")
@click.option("--fleet-member", metavar="ID", default=None, envvar="FLUXMIX_FLEET_MEMBER",
              help="This member's id (stable across restarts; default: generated once into <store>/fleet-member).")
@click.option("--fleet-member-ttl", type=click.FloatRange(min=1.0), default=10.0, show_default=True, metavar="SECONDS",
              help="How long a member's registration outlives its last heartbeat (a kill -9'd member is gone after it).")
@click.option("--fleet-lease-ttl", type=click.FloatRange(min=1.0), default=10.0, show_default=True, metavar="SECONDS",
              help="How long a source lease outlives its last renewal: a dead holder's sources move within it.")
@click.option("--fleet-claim-ttl", type=click.FloatRange(min=60.0), default=3600.0, show_default=True,
              metavar="SECONDS", help="How long a sink's fleet-wide claim on a message id is kept (must exceed any "
              "redelivery: --nats-ack-wait x max_deliver plus retry delays).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              envvar="FLUXMIX_LOG_FORMAT", help="text for people, json for log collectors (one object per line).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info", show_default=True,
              envvar="FLUXMIX_LOG_LEVEL")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks of errors.")
@click.version_option(__version__, prog_name="fluxmix-mixer")
def main(
    ref: str,
    home: Path | None,
    http: str,
    no_http: bool,
    watch: bool,
    follow_latest: float | None,
    nats_urls: tuple[str, ...],
    nats_replicas: int,
    nats_ack_wait: float,
    nats_duplicate_window: float | None,
    nats_max_bytes: int | None,
    nats_wire_backlog: int,
    nats_creds: Path | None,
    nats_user: str | None,
    nats_password: str | None,
    nats_token: str | None,
    nats_tls_ca: Path | None,
    nats_tls_cert: Path | None,
    nats_tls_key: Path | None,
    memory_queue_size: int,
    stop_timeout: float,
    reload_mode: str,
    verify_within: float | None,
    journal_keep: int,
    journal_keep_for: float,
    api_token: str | None,
    no_auth: bool,
    scenario_dirs: tuple[Path, ...],
    gears_path: tuple[str, ...],
    fleet: str | None,
    fleet_member: str | None,
    fleet_member_ttl: float,
    fleet_lease_ttl: float,
    fleet_claim_ttl: float,
    log_format: str,
    log_level: str,
    debug: bool,
) -> None:
    """Run scenarios from the fluxmix store; reload on file change, SIGHUP or API call.

    SIGTERM/SIGINT drain and stop, then exit 0. A bad scenario at startup exits 2.
    """
    from fluxmix.errors import UserError
    from fluxmix.gears.python import configure_gears_path, split_gears_path
    from fluxmix.mixer.daemon import serve

    if no_auth and api_token:
        raise UserError("--no-auth and --api-token (or FLUXMIX_API_TOKEN) contradict each other: choose one")
    if gears_path:
        configure_gears_path(split_gears_path(gears_path))
    host, port = parse_listen(http)
    settings = MixerSettings(
        ref=ref.strip() or None,
        home=home,
        http_host=host,
        http_port=port,
        http_enabled=not no_http,
        watch=watch,
        follow_latest=follow_latest,
        nats=nats_settings(
            split_urls(nats_urls),
            replicas=nats_replicas,
            creds=nats_creds,
            user=nats_user,
            password=nats_password,
            token=nats_token,
            tls_ca=nats_tls_ca,
            tls_cert=nats_tls_cert,
            tls_key=nats_tls_key,
            ack_wait=nats_ack_wait,
            duplicate_window=nats_duplicate_window,
            max_bytes=nats_max_bytes,
            wire_backlog=nats_wire_backlog,
        ),
        memory_queue_size=memory_queue_size,
        stop_timeout=stop_timeout,
        api_token=api_token or None,
        verify_within=verify_within,
        reload_mode=reload_mode,
        journal_keep=journal_keep,
        journal_keep_seconds=journal_keep_for,
        auth=not no_auth,
        scenario_dirs=tuple(Path(d).expanduser().resolve() for d in scenario_dirs),
        log_format=log_format,
        log_level=log_level.lower(),
        fleet=_fleet_settings(fleet, fleet_member, fleet_member_ttl, fleet_lease_ttl, fleet_claim_ttl, nats_urls),
    )
    configure_logging(settings.log_format, settings.log_level)
    try:
        code = asyncio.run(serve(settings))
    except KeyboardInterrupt:  # interrupted before the signal handlers were installed
        code = 130
    if code:
        raise click.exceptions.Exit(code)
