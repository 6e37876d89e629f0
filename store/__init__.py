"""The content-addressed store of scenarios and specs (imported as fluxmix.store)."""
