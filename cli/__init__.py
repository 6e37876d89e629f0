"""The `fluxmix` command line (imported as fluxmix.cli; the console script calls `main`)."""

from fluxmix.cli.main import main

__all__ = ["main"]
