"""Click plumbing shared by `fluxmix` and `fluxmix-mixer`: errors become one line and an exit code.

Errors are turned into exit codes inside `invoke()` (not around `main()`), so click's CliRunner in
the tests sees exactly what a user sees: the message on stderr and the status, never a traceback.
`--debug` (or FLUXMIX_DEBUG=1) re-raises so the traceback shows.
"""

from __future__ import annotations

import os
from typing import Any

import click

from fluxmix.errors import FluxmixError


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("FLUXMIX_DEBUG") == "1"


def report_error(error: FluxmixError) -> None:
    """One line per problem on stderr, each prefixed so scripts can grep for it."""
    for line in str(error).splitlines() or [type(error).__name__]:
        click.echo(f"error: {line}", err=True)


def _guarded(ctx: click.Context, invoke: Any) -> Any:
    try:
        return invoke(ctx)
    except FluxmixError as error:
        if _debug(ctx):
            raise
        report_error(error)
        raise click.exceptions.Exit(error.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C before a handler of our own is installed: a shell's 130, not "Aborted!" and 1
        if _debug(ctx):
            raise
        raise click.exceptions.Exit(130) from None
    except BrokenPipeError:  # the reader went away (`fluxmix ... | head`): not an error to report
        raise
    except OSError as error:  # unreadable file, full disk, permission: the user's environment, not a bug
        if _debug(ctx):
            raise
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        click.echo(f"error: {where}{error.strerror or error}", err=True)
        raise click.exceptions.Exit(1) from None


class FluxmixGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        return _guarded(ctx, super().invoke)


class FluxmixCommand(click.Command):
    def invoke(self, ctx: click.Context) -> Any:
        return _guarded(ctx, super().invoke)
