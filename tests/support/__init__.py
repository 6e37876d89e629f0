"""What several test modules share, so no test module imports another.

- `nats`: real nats-server fixtures (one server, a cluster) and process checks;
- `polling`: the one way to wait for a condition (`wait_until`, `block_until`);
- `runtime`: small controllable gears and scenario builders for in-process runtimes;
- `wires`: a downstream stand-in and helpers for driving one wire directly;
- `mixer`: a real `fluxmix-mixer` subprocess, its fixtures, scenario files, an SSE reader;
- `activation`: an in-process Activator on a fresh store (fixtures);
- `ports`: the one way to get a port a server binds later (`reserve_port`).
"""
