"""`fluxmix mixer status|journal|activate|reload|pause|resume|top`: talk to a running mixer's HTTP API.

The token is `--token`, else FLUXMIX_API_TOKEN, else (for a mixer on this machine: a loopback
`--url`) the api-token file the mixer wrote in the store directory. It is never read from the
file for another host, so pointing `--url` elsewhere cannot leak it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from fluxmix.cli._app import FluxmixGroup
from fluxmix.cli.output import echo_json, human_duration, human_time, json_option, table
from fluxmix.errors import MixerApiError, UserError
from fluxmix.mixer.client import DEFAULT_URL, MixerClient
from fluxmix.refs import short_hash

OK_OUTCOMES = ("activated", "unchanged")

# The parts of each answer this module reads (a mixer may send more).
_TEXT = {"type": ["string", "null"]}
_NUMBER = {"type": ["number", "null"]}
_ENTRY = {
    "type": "object",
    "required": ["outcome"],
    "properties": {
        "outcome": {"type": "string"}, "reason": _TEXT, "trigger": _TEXT, "ts": _TEXT, "from_hash": _TEXT,
        "to_hash": _TEXT, "gap_seconds": _NUMBER, "error_kind": _TEXT,
        "phases": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        "problems": {"type": ["array", "null"], "items": {"type": "string"}},
        "reload": {"type": ["object", "null"]},
    },
}
_OBJECTS = {"type": ["object", "null"], "additionalProperties": {"type": "object"}}
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["state"],
    "properties": {
        "state": {"type": "string"}, "reason": _TEXT, "following": _TEXT, "watching": _TEXT,
        "uptime_seconds": _NUMBER,
        "scenario": {"type": ["object", "null"], "properties": {"name": _TEXT, "tag": _TEXT, "hash": _TEXT}},
        "last_reload": {"anyOf": [{"type": "null"}, _ENTRY]},
        "gears": _OBJECTS, "wires": _OBJECTS, "brokers": _OBJECTS,
        "fleet": {"type": ["object", "null"], "properties": {"name": _TEXT, "members": {"type": "array"},
                                                               "leases": {"type": "array"}}},
        "expectations": {
            "type": ["array", "null"],
            "items": {"type": "object", "properties": {"state": {"type": "string"}, "since": _TEXT, "expect": _TEXT}},
        },
    },
}
JOURNAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["entries"],
    "properties": {"entries": {"type": "array", "items": _ENTRY}},
}


def _api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = json_option()(func)
    func = click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
                        help="Seconds to wait for the mixer (an activation may drain for a while).")(func)
    func = click.option("--token", envvar="FLUXMIX_API_TOKEN", metavar="TOKEN",
                        help="Bearer token of the mixer's API (env FLUXMIX_API_TOKEN).")(func)
    func = click.option("--url", envvar="FLUXMIX_MIXER_URL", default=DEFAULT_URL, show_default=True,
                        help="The mixer's API (env FLUXMIX_MIXER_URL).")(func)
    return func


def _client(url: str, token: str | None, timeout: float) -> MixerClient:
    client = MixerClient(url, token=token or None, timeout=timeout)
    if not client.token and client.is_local:
        client.token = _home_token()
    return client


def _home_token() -> str | None:
    """The token the mixer wrote under the store directory (`fluxmix --store`, $FLUXMIX_HOME, default)."""
    from fluxmix.cli.main import App
    from fluxmix.mixer.token import read_token
    from fluxmix.store import default_home

    app = click.get_current_context().find_object(App)
    home = app.home if app is not None and app.home is not None else default_home()
    return read_token(Path(home))


@click.group(cls=FluxmixGroup)
def mixer() -> None:
    """Query and steer a running fluxmix-mixer through its HTTP API."""


@mixer.command(name="status")
@_api_options
@click.option("--fleet", "fleet", is_flag=True,
              help="Show the fleet this mixer is a member of: members, their active hash and readiness, "
              "the desired scenario, who holds which source lease.")
def status_cmd(url: str, token: str | None, timeout: float, as_json: bool, fleet: bool) -> None:
    """Show the active scenario, gears, wires and last reload."""
    data = _client(url, token, timeout).get("/status", STATUS_SCHEMA)
    if fleet:
        section = data.get("fleet")
        if not isinstance(section, dict):
            raise UserError(f"{url}: this mixer is not a fleet member (it was started without --fleet)")
        if as_json:
            echo_json(section)
        else:
            click.echo(render_fleet(section))
        return
    if as_json:
        echo_json(data)
        return
    click.echo(render_status(data))


def render_fleet(fleet: dict[str, Any]) -> str:
    """The fleet as the asked member sees it: desired scenario, members, leases."""
    desired = fleet.get("desired") or {}
    lines = [
        f"fleet    {fleet.get('name')} (seen from {fleet.get('member')}, as of {human_time(fleet.get('as_of'))})",
        f"desired  {short_hash(desired.get('hash'))}  {desired.get('name') or ''}  published by "
        f"{desired.get('by') or '-'}" if desired else "desired  none published yet",
        "",
        table(
            ["MEMBER", "STATE", "READY", "ACTIVE", "IN SYNC", "HANDLED", "LEASES", "LAST FLEET ACTIVATION"],
            [
                [m.get("member"), m.get("state"), "yes" if m.get("ready") else f"no: {m.get('reason')}",
                 short_hash(m.get('active_hash')), "yes" if m.get("in_sync") else "NO", m.get("handled"),
                 ", ".join(m.get("leases") or []) or "-",
                 _fleet_sync(m.get("fleet_sync"), desired.get("hash"))]
                for m in fleet.get("members") or []
            ],
        ),
    ]
    leases = fleet.get("leases") or []
    if leases:
        lines += ["", table(["LEASE", "HOLDER", "REVISION"],
                            [[lease.get("lease"), lease.get("member"), lease.get("revision")] for lease in leases])]
    return "\n".join(lines)


def _fleet_sync(sync: Any, desired: Any) -> str:
    """The member's answer to the desired scenario; `pending` while its record (as last seen) is
    older than that scenario, so its answer to an earlier one is not read as the answer to this one."""
    if not isinstance(sync, dict):
        return f"pending {short_hash(desired)}" if desired else "-"
    text = f"{sync.get('outcome')} {short_hash(sync.get('hash'))}"
    if sync.get("outcome") not in ("activated", "unchanged"):
        text += f": {str(sync.get('reason') or '')[:120]}"
    if desired and sync.get("hash") != desired:
        text = f"pending {short_hash(desired)} (last: {text})"
    return text


def render_status(data: dict[str, Any]) -> str:
    lines: list[str] = []
    ready = "ready" if data.get("ready") else f"not ready: {data.get('reason')}"
    scenario = data.get("scenario")
    facts: list[tuple[str, str]] = [("state", f"{data.get('state')} ({ready})")]
    if data.get("paused"):
        facts.append(("paused", "yes: sources hold still (`fluxmix mixer resume`)"))
    if scenario:
        facts.append(("scenario", f"{scenario.get('name')}:{scenario.get('tag') or '-'}  {short_hash(scenario.get('hash'))}"))
    else:
        facts.append(("scenario", "none"))
    if data.get("following"):
        facts.append(("following", str(data["following"])))
    if data.get("watching"):
        facts.append(("watching", str(data["watching"])))
    facts.append(("uptime", human_duration(float(data.get("uptime_seconds") or 0))))
    last = data.get("last_reload")
    if last:
        facts.append(("last reload", f"{human_time(last.get('ts'))}  {last.get('outcome')} ({last.get('trigger')})  {last.get('reason') or ''}".rstrip()))
    width = max(len(k) for k, _ in facts)
    lines += [f"{k.ljust(width)}  {v}" for k, v in facts]
    gears = data.get("gears") or {}
    if gears:
        lines.append("")
        lines.append(table(
            ["GEAR", "TYPE", "STATE", "HANDLED", "ERRORS", "EMITTED"],
            [[name, g.get("type"), g.get("state"), g.get("handled"), g.get("errors"), g.get("emitted")] for name, g in gears.items()],
        ))
    wires = data.get("wires") or {}
    if wires:
        lines.append("")
        lines.append(table(
            ["WIRE", "TRANSPORT", "SENT", "RECEIVED", "QUEUED", "FAILED", "DEAD", "DROPPED"],
            [
                [key, w.get("transport"), w.get("sent"), w.get("received"), _first(w, "in_queue", "pending"),
                 w.get("failed"), w.get("dead_lettered"), w.get("dropped")]
                for key, w in wires.items()
            ],
        ))
    expectations = data.get("expectations") or []
    if expectations:
        lines.append("")
        lines.append(table(
            ["EXPECTATION", "STATE", "VALUE", "WHY"],
            [[e.get("expect"), e.get("state"), e.get("value"), e.get("reason")] for e in expectations],
        ))
    brokers = data.get("brokers") or {}
    for kind, info in brokers.items():
        details = ", ".join(f"{k}={'-' if v is None else v}" for k, v in info.items()
                            if k != "kind" and not isinstance(v, (dict, list)))  # "-" for none, as in tables
        lines.append(f"broker {kind}: {details}" if details else f"broker {kind}")
    return "\n".join(lines)


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    return None


@mixer.command(name="journal")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Every entry journal retention kept (--journal-keep/--journal-keep-for).")
@_api_options
def journal_cmd(limit: int, show_all: bool, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """List activation attempts, newest first."""
    data = _client(url, token, timeout).get(f"/journal?limit={'all' if show_all else limit}", JOURNAL_SCHEMA)
    if as_json:
        echo_json(data)
        return
    entries = data.get("entries", [])
    if not entries:
        click.echo("no activations yet")
        return
    click.echo(table(
        ["ID", "TIME", "TRIGGER", "OUTCOME", "FROM", "TO", "GAP", "RESTARTED", "REASON"],
        [
            [e.get("id"), human_time(e.get("ts")), e.get("trigger"), e.get("outcome"), short_hash(e.get("from_hash")),
             short_hash(e.get("to_hash")), "-" if e.get("gap_seconds") is None else f"{e['gap_seconds']:.3f}s",
             _restarted(e.get("reload")), e.get("reason")]
            for e in entries
        ],
    ))


def _restarted(reload: Any) -> str:
    """"restarted 1 of 7 gears" for a reload's journal entry (the gears started anew of the total)."""
    if not isinstance(reload, dict) or not isinstance(reload.get("gears_total"), int):
        return "-"
    restarted = len(reload.get("gears_restarted") or []) + len(reload.get("gears_added") or [])
    return f"restarted {restarted} of {reload['gears_total']} gears"


@mixer.command(name="check")
@click.option("--wait", "wait", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="Poll until every expectation passes or SECONDS have passed (for a deploy script).")
@_api_options
def check_cmd(wait: float, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Check the running scenario's expectations: exit 0 when all pass, 1 when any does not."""
    import time

    client = _client(url, token, timeout)
    deadline = time.monotonic() + wait
    while True:
        data = client.get("/status", STATUS_SCHEMA)
        expectations = data.get("expectations") or []
        scenario = data.get("scenario")
        ok = bool(scenario) and all(e.get("state") == "passing" for e in expectations)
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    if as_json:
        echo_json({"ok": ok, "scenario": scenario, "expectations": expectations})
    elif not scenario:
        click.echo(f"no scenario is running ({data.get('state')}: {data.get('reason')})")
    elif not expectations:
        click.echo(f"{scenario.get('name')}: no expectations (add an expect: section to the scenario)")
    else:
        click.echo(table(
            ["STATE", "EXPECTATION", "VALUE", "SINCE", "WHY"],
            [[e.get("state", "?").upper(), e.get("expect"), e.get("value"), human_time(e.get("since")), e.get("reason")]
             for e in expectations],
        ))
        passing = sum(e.get("state") == "passing" for e in expectations)
        click.echo(f"{scenario.get('name')}: {passing} of {len(expectations)} expectations passing")
    if not ok:
        raise click.exceptions.Exit(1)


@mixer.command(name="activate")
@click.argument("ref")
@_api_options
def activate_cmd(ref: str, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Activate REF: name:tag, name, sha256:HASH, or a local file."""
    if _looks_like_path(ref):
        ref = str(Path(ref.removeprefix("file://")).expanduser().resolve())
    client = _client(url, token, timeout)
    status, body = client.post("/activate", {"ref": ref})
    _report_attempt(client, status, body, as_json)


@mixer.command(name="reload")
@_api_options
def reload_cmd(url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Re-read the followed file or re-resolve name:latest."""
    client = _client(url, token, timeout)
    status, body = client.post("/reload")
    _report_attempt(client, status, body, as_json)


@mixer.command(name="pause")
@_api_options
def pause_cmd(url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Hold the sources still; downstream gears drain what is in flight.

    Remembered by the mixer: a reload or restart comes back paused until `resume`."""
    client = _client(url, token, timeout)
    _report_toggle(client, *client.post("/pause"), as_json)


@mixer.command(name="resume")
@_api_options
def resume_cmd(url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Let paused sources emit again (each continues from its checkpoint)."""
    client = _client(url, token, timeout)
    _report_toggle(client, *client.post("/resume"), as_json)


_TOGGLE = {
    "type": "object",
    "required": ["paused", "reason"],
    "properties": {"paused": {"type": "boolean"}, "reason": {"type": "string"}, "error": _TEXT},
}


def _report_toggle(client: MixerClient, status: int, body: Any, as_json: bool) -> None:
    if not isinstance(body, dict) or "paused" not in body:
        client.ok(status, body)  # an error answer: its one line
    client.check(body, _TOGGLE, "POST")  # the pause/resume answer, or this is not a mixer
    if as_json:
        echo_json(body)
    else:
        click.echo(body["reason"] + ("" if body.get("changed") else " (no change)"))
    if body.get("error"):
        raise MixerApiError(str(body["error"]))


@mixer.command(name="top")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True,
              help="Seconds between frames.")
@_api_options
def top_cmd(once: bool, interval: float, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """A live view of gears and wires with rates, like `vector top`; q or Ctrl-C quits."""
    from fluxmix.cli.top import run_top

    run_top(_client(url, token, min(timeout, 10.0)), once=once, interval=interval, as_json=as_json)


def _looks_like_path(ref: str) -> bool:
    from fluxmix.refs import looks_like_path  # the one rule parse_ref also uses

    return looks_like_path(ref)


def _report_attempt(client: MixerClient, status: int, body: Any, as_json: bool) -> None:
    if not isinstance(body, dict) or "outcome" not in body:
        client.ok(status, body)  # an error answer: its one line
    client.check(body, _ENTRY, "POST")  # a journal entry, or this is not a mixer
    if as_json:
        echo_json(body)
    else:
        click.echo(
            f"{body['outcome']}: {body.get('reason') or '-'}  "
            f"({short_hash(body.get('from_hash'))} -> {short_hash(body.get('to_hash'))}, trigger {body.get('trigger')})"
        )
        phases = body.get("phases") or {}
        if phases:
            click.echo("phases: " + ", ".join(f"{k} {v:.3f}s" for k, v in phases.items()))
        if body.get("gap_seconds") is not None:
            click.echo(f"gap: {body['gap_seconds']:.3f}s, drained: {body.get('drained', 0)}")
    if body["outcome"] not in OK_OUTCOMES:
        lines = "\n".join([f"activation {body['outcome']}: {body.get('reason')}"] + list(body.get("problems") or []))
        # the journal says whose fault it is: a bad reference or file (exit 2) or a failure (exit 1)
        raise UserError(lines) if body.get("error_kind") == "user" else MixerApiError(lines)


__all__ = ["mixer", "render_status"]
