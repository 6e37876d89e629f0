"""The `fluxmix` command line (imported as fluxmix.cli)."""
