"""fluxmix's tests; shared fixtures and helpers live in tests.support."""
