"""`fluxmix gears [TYPE]`: what the catalog offers, read from each gear type's own declarations.

Ports come from `input_ports({})`/`output_ports({})` and config keys from the JSON Schema, so the
listing can never disagree with what validation checks.
"""

from __future__ import annotations

import difflib
import json
import logging
from typing import Any

import click

from fluxmix.cli._app import FluxmixCommand
from fluxmix.cli.main import App, pass_app
from fluxmix.cli.output import echo_json, echo_table, json_option
from fluxmix.errors import NotFoundError

log = logging.getLogger(__name__)


@click.command(name="gears", cls=FluxmixCommand, short_help="List gear types: ports and config keys.")
@click.argument("gear_type", metavar="[TYPE]", required=False)
@json_option()
@pass_app
def gears(app: App, gear_type: str | None, as_json: bool) -> None:
    """List the gear types (built-in and plugins): ports and config keys.

    With TYPE, describe that one type in detail: its ports and every config key with its type,
    default and description (`*` marks a required key).
    """
    catalog = app.catalog
    if gear_type is not None:
        if gear_type not in catalog:
            close = difflib.get_close_matches(gear_type, catalog.names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known types: {', '.join(catalog.names())}"
            raise NotFoundError(f"unknown gear type {gear_type!r}{hint}")
        info = describe(gear_type, catalog.get(gear_type), catalog.origins.get(gear_type, "custom"))
        if as_json:
            echo_json(info)
        else:
            _echo_detail(info)
        return
    infos = [describe(name, cls, catalog.origins.get(name, "custom")) for name, cls in catalog]
    if as_json:
        echo_json(infos)
        return
    echo_table(
        ["TYPE", "ORIGIN", "INPUTS", "OUTPUTS", "CONFIG"],
        [
            (
                info["type"],
                _origin_kind(info["origin"]),
                _ports(info["inputs"]) or "-",
                _ports(info["outputs"]) or "-",
                " ".join(k["key"] + ("*" if k["required"] else "") for k in info["config"]) or "-",
            )
            for info in infos
        ],
    )
    click.echo("\n* = required config key; `fluxmix gears TYPE` for details")


def describe(name: str, gear: Any, origin: str) -> dict[str, Any]:
    """A JSON-ready description of one gear type (stable keys)."""
    schema: dict[str, Any] = dict(getattr(gear, "config_schema", {}) or {})
    required = set(schema.get("required", []))
    config = [
        {
            "key": key,
            "type": _schema_type(prop),
            "required": key in required,
            "description": (prop or {}).get("description", ""),
            **({"default": prop["default"]} if isinstance(prop, dict) and "default" in prop else {}),
        }
        for key, prop in (schema.get("properties") or {}).items()
    ]
    return {
        "type": name,
        "origin": origin,
        "description": _first_paragraph(getattr(gear, "description", "") or gear.__doc__ or ""),
        "source": _safe(lambda: bool(gear.is_source()), False),
        "inputs": [_port_json(p) for p in _safe(lambda: gear.input_ports({}), ())],
        "outputs": [_port_json(p) for p in _safe(lambda: gear.output_ports({}), ())],
        "config": config,
        "config_schema": schema,
    }


def _safe(function: Any, default: Any) -> Any:
    """Ports of a config-dependent gear (e.g. `route`) may need config; an empty one may not do."""
    try:
        return function()
    except Exception as error:  # a plugin's bug must not break the listing of the others
        log.debug("gear declaration failed: %s", error)
        return default


def _port_json(port: Any) -> dict[str, Any]:
    return {"name": port.name, "description": port.description, "required": bool(getattr(port, "required", False))}


def _ports(ports: list[dict[str, Any]]) -> str:
    return ",".join(p["name"] + ("*" if p["required"] else "") for p in ports)


def _origin_kind(origin: str) -> str:
    return "plugin" if origin.startswith("plugin") else origin


def _schema_type(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "any"
    kind = prop.get("type")
    if isinstance(kind, list):
        return "|".join(map(str, kind))
    if kind:
        return str(kind)
    if "enum" in prop:
        return "|".join(json.dumps(v) if not isinstance(v, str) else v for v in prop["enum"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in prop:
            return "|".join(_schema_type(p) for p in prop[combinator])
    return "any"


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def _echo_detail(info: dict[str, Any]) -> None:
    click.echo(f"{info['type']} ({info['origin']}{', source' if info['source'] else ''})")
    if info["description"]:
        click.echo(f"  {info['description']}")
    for title, ports in (("inputs", info["inputs"]), ("outputs", info["outputs"])):
        click.echo(f"\n{title}:")
        if not ports:
            click.echo("  (none)")
        echo_table(
            ["", ""],
            [("  " + p["name"] + (" (required)" if p["required"] else ""), p["description"]) for p in ports],
            show_headers=False,
        )
    click.echo("\nconfig:")
    if not info["config"]:
        click.echo("  (none)")
        return
    rows = []
    for key in info["config"]:
        notes = key["description"]
        if "default" in key:
            notes = f"{notes} (default: {json.dumps(key['default'])})".strip()
        rows.append(("  " + key["key"] + ("*" if key["required"] else ""), key["type"], notes))
    echo_table(["  KEY", "TYPE", "DESCRIPTION"], rows)
    if any(key["required"] for key in info["config"]):
        click.echo("\n* = required")
