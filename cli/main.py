"""The `fluxmix` root command: global options and lazy sub-commands (output helpers: cli/output.py).

Sub-command modules are imported only when their command runs (a lazy group, as click's docs
suggest), so `fluxmix gears` never loads SQLAlchemy and `fluxmix-mixer`, which shares this package,
does not pay for the store CLI at start-up. The store itself is opened on first use for the same
reason, and closed when the root context closes.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fluxmix.cli._app import FluxmixGroup

if TYPE_CHECKING:
    from fluxmix.gears.catalog import Catalog
    from fluxmix.store import Store

# Exit status of a process whose reader went away, as a shell reports a SIGPIPE death (128 + 13).
EXIT_BROKEN_PIPE = 141

# command name -> "module:attribute"; the modules are imported only when the command is used.
SUBCOMMANDS: dict[str, str] = {
    "scenario": "fluxmix.cli.scenario:scenario",
    "spec": "fluxmix.cli.scenario:spec",
    "store": "fluxmix.cli.store_cmd:store",
    "gears": "fluxmix.cli.gears_cmd:gears",
    "mixer": "fluxmix.cli.mixer:mixer",
    "state": "fluxmix.cli.state_cmd:state",
    "fleet": "fluxmix.cli.fleet_cmd:fleet",
}


class App:
    """Per-invocation state handed to every command; opens the store and the catalog on first use."""

    def __init__(self, home: Path | None) -> None:
        self.home = home
        self._store: Store | None = None
        self._catalog: Catalog | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from fluxmix.store import open_store

            self._store = open_store(self.home)
        return self._store

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from fluxmix.gears.catalog import Catalog

            self._catalog = Catalog.default()
        return self._catalog

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()


pass_app = click.make_pass_decorator(App, ensure=True)


class RootGroup(FluxmixGroup):
    """Resolves sub-commands from SUBCOMMANDS on demand (click's LazyGroup pattern)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Flush inside the command so a reader that went away (`| head -1`) ends us quietly."""
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(
    cls=RootGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--store",
    "store_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FLUXMIX_HOME",
    show_envvar=True,
    help="Store directory (blobs, index, mixer state). Default: the platform's user data dir.",
)
@click.option(
    "--gears-path",
    "gears_path",
    metavar="DIR",
    multiple=True,
    help="Directory python gears may import their module from (repeat, or separate with "
    f"'{os.pathsep}'; default $FLUXMIX_GEARS_PATH). Other modules must come from an installed "
    "fluxmix.gears plugin.",
)
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error (or FLUXMIX_DEBUG=1).")
@click.version_option(package_name="fluxmix", prog_name="fluxmix")
@click.pass_context
def root(ctx: click.Context, store_dir: Path | None, gears_path: tuple[str, ...], debug: bool) -> None:
    """Manage scenarios and specs in the content-addressed store, and steer a running mixer.

    References: NAME[:TAG] (TAG `latest` or omitted = highest SemVer tag), sha256:HEX (64 hex digits,
    or a unique prefix of 12+ after `sha256:`; bare hex is read as a name), or a path to a file.

    \b
    Examples:
      fluxmix scenario validate scenarios/hello.yaml
      fluxmix scenario import scenarios/hello.yaml --tag 1.0.0
      fluxmix scenario tags hello
      fluxmix scenario diff hello:1.0.0 scenarios/hello.yaml --text
      fluxmix store gc --dry-run
    """
    if gears_path:
        from fluxmix.gears.python import configure_gears_path, split_gears_path

        configure_gears_path(split_gears_path(gears_path))
    app = App(store_dir)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so bytes still buffered cannot fail again at shutdown (Python docs' recipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file descriptor (click's test runner): nothing to protect


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`fluxmix`)."""
    root.main(args=argv, prog_name="fluxmix")


__all__ = [
    "App",
    "EXIT_BROKEN_PIPE",
    "main",
    "pass_app",
    "root",
]
