"""`fluxmix state list|get|set|delete|clear|history`: a running mixer's global state.

The commands go through the mixer's HTTP API rather than the store file: the mixer checks the
write against the active scenario's `globals:` schema, journals it, and updates the snapshot its
gears read, so the next message sees the change without a reload.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any

import click

from fluxmix.cli._app import FluxmixGroup
from fluxmix.cli.mixer import _api_options, _client
from fluxmix.cli.output import echo_json, human_time, table
from fluxmix.errors import MixerApiError, UserError
from fluxmix.mixer.client import _reason

MAX_SHOWN = 60


def _path(base: str, key: str | None, scenario: str | None, **query: Any) -> str:
    path = base + ("" if key is None else "/" + urllib.parse.quote(key, safe=""))
    params = {k: v for k, v in {"scenario": scenario, **query}.items() if v is not None}
    return path + ("?" + urllib.parse.urlencode(params) if params else "")


def _call(url: str, token: str | None, timeout: float, method: str, path: str, body: bytes | None = None) -> Any:
    client = _client(url, token, timeout)
    status, answer = _request(client, method, path, body)
    if status in (400, 404, 409, 422):  # the operator's to fix: exit 2, nothing changed
        raise UserError(_reason(answer))
    if status >= 400:
        raise MixerApiError(f"the mixer at {client.url} answered {status}: {_reason(answer)}")
    return answer


def _request(client: Any, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
    return client.request(method, path, raw=body, headers={"X-Fluxmix-Who": _who()})


def _who() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER", "")
    return f"cli:{user}" if user else "cli"


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


_scenario_option = click.option("--scenario", metavar="NAME", default=None,
                                help="Scenario name whose state to use (default: the active scenario).")


@click.group(cls=FluxmixGroup)
def state() -> None:
    """Read and change a running mixer's global state (no reload needed)."""


@state.command(name="list")
@_scenario_option
@_api_options
def list_cmd(scenario: str | None, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Every key and its value."""
    data = _call(url, token, timeout, "GET", _path("/state", None, scenario))
    if as_json:
        echo_json(data)
        return
    values = data.get("values", {})
    if not values:
        click.echo(f"scenario {data.get('scenario')}: no global state")
        return
    click.echo(table(["KEY", "VALUE"], [[k, _shown(values[k])] for k in sorted(values)]))


@state.command(name="get")
@click.argument("key")
@_scenario_option
@_api_options
def get_cmd(key: str, scenario: str | None, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Print one key's value as JSON."""
    data = _call(url, token, timeout, "GET", _path("/state", key, scenario))
    click.echo(json.dumps(data if as_json else data.get("value"), indent=2 if as_json else None, sort_keys=True))


@state.command(name="set")
@click.argument("key")
@click.argument("value")
@click.option("--string", "as_string", is_flag=True, help="Store VALUE as a string instead of parsing it as JSON.")
@_scenario_option
@_api_options
def set_cmd(key: str, value: str, as_string: bool, scenario: str | None, url: str, token: str | None,
            timeout: float, as_json: bool) -> None:
    """Set KEY to VALUE (JSON: 150, true, '["acme"]', '"text"'; or --string)."""
    if as_string:
        parsed: Any = value
    else:
        try:
            parsed = json.loads(value)
        except ValueError:
            raise UserError(f"VALUE {value[:40]!r} is not JSON; quote a string as '\"text\"' or pass --string") from None
    body = json.dumps(parsed).encode()
    data = _call(url, token, timeout, "PUT", _path("/state", key, scenario), body)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{data.get('scenario')}: {key} = {_shown(data.get('value'))} (was {_shown(data.get('old_value'))})")


@state.command(name="delete")
@click.argument("key")
@_scenario_option
@_api_options
def delete_cmd(key: str, scenario: str | None, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Delete KEY (expressions then see their default)."""
    data = _call(url, token, timeout, "DELETE", _path("/state", key, scenario), b"")
    if as_json:
        echo_json(data)
        return
    click.echo(f"{data.get('scenario')}: deleted {key} (was {_shown(data.get('old_value'))})")


@state.command(name="clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_scenario_option
@_api_options
def clear_cmd(yes: bool, scenario: str | None, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """Delete every key of the scenario."""
    if not yes:
        click.confirm("Delete every global state key of the scenario?", abort=True)
    data = _call(url, token, timeout, "DELETE", _path("/state", None, scenario), b"")
    if as_json:
        echo_json(data)
        return
    click.echo(f"{data.get('scenario')}: cleared {data.get('cleared')} key(s)")


@state.command(name="history")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@_scenario_option
@_api_options
def history_cmd(limit: int, scenario: str | None, url: str, token: str | None, timeout: float, as_json: bool) -> None:
    """The change journal: who changed which key when, old and new value; newest first."""
    data = _call(url, token, timeout, "GET", _path("/state-changes", None, scenario, limit=limit))
    if as_json:
        echo_json(data)
        return
    changes = data.get("changes", [])
    if not changes:
        click.echo(f"scenario {data.get('scenario')}: no changes journaled")
        return
    click.echo(table(
        ["ID", "TIME", "WHO", "OP", "KEY", "OLD", "NEW"],
        [[c.get("id"), human_time(c.get("ts")), c.get("who"), c.get("op"), c.get("key"), _shown(c.get("old_value")),
          _shown(c.get("new_value"))] for c in changes],
    ))
