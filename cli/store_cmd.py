"""`fluxmix store verify|gc`: check the store's integrity and reclaim unreferenced blobs."""

from __future__ import annotations

import re
from typing import Any

import click

from fluxmix.cli._app import FluxmixCommand, FluxmixGroup
from fluxmix.cli.main import App, pass_app
from fluxmix.cli.output import echo_json, human_size, json_option
from fluxmix.errors import StoreError

DEFAULT_GRACE_SECONDS = 3600

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", re.ASCII)


class Duration(click.ParamType):
    """Seconds (`3600`, `0.5`) or a Go-style duration (`90s`, `15m`, `1h30m`, `2d`)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            try:
                seconds = float(text)
            except ValueError:
                parts = _DURATION_PART.findall(text)
                if not parts or "".join(n + u for n, u in parts) != text:
                    self.fail(f"{value!r} is not a duration: use seconds (3600) or e.g. 90s, 15m, 1h30m, 2d", param, ctx)
                seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            self.fail(f"{value!r} must be a finite duration >= 0", param, ctx)
        return seconds


@click.group(name="store", cls=FluxmixGroup)
def store() -> None:
    """Check the store's integrity and reclaim space."""


@store.command("verify", cls=FluxmixCommand)
@json_option()
@pass_app
def verify(app: App, as_json: bool) -> None:
    """Re-hash every blob and check every tag points at an intact blob.

    Exits 1 when a blob is corrupt or a tag's blob is missing. Orphans (blobs nothing references)
    are reported but are not damage: `fluxmix store gc` removes them.
    """
    report = app.store.verify()
    if as_json:
        echo_json(
            {
                "ok": report.ok,
                "home": str(app.store.home),
                "blobs_checked": report.blobs_checked,
                "corrupt": list(report.corrupt),
                "missing": [
                    {"kind": e.kind, "name": e.name, "tag": e.tag, "hash": e.hash} for e in report.missing
                ],
                "orphans": report.orphans,
                "missing_specs": list(report.missing_specs),
            }
        )
    else:
        click.echo(f"checked {report.blobs_checked} blob{'s' if report.blobs_checked != 1 else ''} in {app.store.home}")
        for digest in report.corrupt:
            click.echo(f"corrupt  sha256:{digest}  (bytes no longer match the hash; never used)")
        for entry in report.missing:
            click.echo(f"missing  {entry.kind} {entry.name}:{entry.tag} -> sha256:{entry.hash}")
        for pinned in report.missing_specs:
            click.echo(f"missing  pinned spec of scenario {pinned}")
        if report.orphans:
            click.echo(f"orphans  {report.orphans} unreferenced blob{'s' if report.orphans != 1 else ''} (`fluxmix store gc` removes them)")
        if report.ok:
            click.echo("ok")
    if not report.ok:
        raise StoreError(
            f"store {app.store.home} is damaged: {len(report.corrupt)} corrupt blob(s), "
            f"{len(report.missing)} tag(s) with a missing blob"
            + (f", {len(report.missing_specs)} scenario(s) whose pinned spec is missing" if report.missing_specs else "")
        )


@store.command("gc", cls=FluxmixCommand)
@click.option("--dry-run", "-n", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--grace",
    type=Duration(),
    default=DEFAULT_GRACE_SECONDS,
    show_default="1h",
    metavar="SECONDS|DURATION",
    help="Keep unreferenced blobs younger than this (protects imports in progress).",
)
@json_option()
@pass_app
def gc(app: App, dry_run: bool, grace: float, as_json: bool) -> None:
    """Remove blobs no tag, no mixer pointer and no journal entry references.

    Blobs younger than the grace period are kept, so a concurrent import (blob written, tag not
    yet committed) is never raced, as git's gc does with its prune expiry.
    """
    report = app.store.gc(dry_run=dry_run, grace_seconds=grace)
    if as_json:
        echo_json(
            {
                "dry_run": dry_run,
                "grace_seconds": grace,
                "removed": list(report.removed),
                "bytes_freed": report.bytes_freed,
                "kept": report.kept,
                "temp_files_removed": report.temp_files_removed,
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for digest in report.removed:
        click.echo(f"{verb} sha256:{digest}")
    count = len(report.removed)
    click.echo(
        f"{verb} {count} blob{'s' if count != 1 else ''}, "
        f"{'would free' if dry_run else 'freed'} {human_size(report.bytes_freed)} ({report.bytes_freed} bytes); "
        f"kept {report.kept}"
    )
    if report.temp_files_removed:
        click.echo(f"{verb} {report.temp_files_removed} stale temporary file(s) of interrupted imports")
