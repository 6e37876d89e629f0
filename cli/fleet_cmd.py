"""`fluxmix fleet`: operator commands on a fleet of mixers that run without a mixer of their own.

`fleet release MEMBER` settles the sink files of a member that will not come back (see
fluxmix.fleet.release); run it where that member's store and working directory are.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from fluxmix.cli._app import FluxmixGroup
from fluxmix.cli.main import App, pass_app
from fluxmix.cli.output import echo_json, human_size, json_option, table


@click.group(cls=FluxmixGroup)
def fleet() -> None:
    """Operate a fleet of mixers (`fluxmix-mixer --fleet NAME`)."""


@fleet.command(name="release")
@click.argument("member")
@click.option("--fleet", "fleet_name", envvar="FLUXMIX_FLEET", required=True, metavar="NAME",
              help="The fleet the member belonged to (env FLUXMIX_FLEET).")
@click.option("--nats-url", "nats_urls", envvar="FLUXMIX_NATS_URL", multiple=True, metavar="URL",
              help="The fleet's NATS cluster; repeat or comma-separate (env FLUXMIX_NATS_URL).")
@click.option("--nats-creds", type=click.Path(path_type=Path), envvar="FLUXMIX_NATS_CREDS", default=None,
              help=".creds file (env FLUXMIX_NATS_CREDS).")
@click.option("--dir", "base_dir", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="The member's working directory: relative sink paths start there.")
@json_option()
@pass_app
def release_cmd(app: App, member: str, fleet_name: str, nats_urls: tuple[str, ...], nats_creds: Path | None,
                base_dir: Path, as_json: bool) -> None:
    """Settle the files of MEMBER, gone for good, and release its leases.

    With the member's store (--store) and working directory (--dir): every file-out of its last
    active scenario drops the lines it wrote but never committed fleet-wide (another member wrote
    them), keeping the committed ones, as a restart of the member would. Refused while MEMBER is
    registered in the fleet.
    """
    from fluxmix.fleet.release import release_member
    from fluxmix.mixer.settings import nats_settings, split_urls

    nats = nats_settings(split_urls(nats_urls), creds=nats_creds)
    report = asyncio.run(release_member(fleet_name, member, nats.servers, nats.connect_options, store=app.store,
                                        catalog=app.catalog, base_dir=base_dir.resolve()))
    if as_json:
        echo_json(report.as_dict())
        return
    if report.scenario is None:
        click.echo(f"fleet {report.fleet}: member {report.member} had no active scenario in this store: no files to settle")
    elif not report.sinks:
        click.echo(f"fleet {report.fleet}: {report.scenario} has no file-out: no files to settle")
    else:
        click.echo(table(["SINK", "FILE", "CUT"], [[s.gear, s.path, human_size(s.cut_bytes)] for s in report.sinks]))
    leases = ", ".join(report.leases_released) or "none"
    click.echo(f"released member {report.member} of fleet {report.fleet}; leases released: {leases}")
