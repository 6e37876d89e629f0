"""`fluxmix mixer top`: gears and wires of the running scenario with rates, redrawn live.

Rates are differences of the counters `/status` serves between two samples, so the mixer does
no extra work for a viewer. Drawn with rich (tables that fit the terminal, a flicker-free live
redraw) rather than hand-made escape codes. `q` or Ctrl-C quits; `--once` samples twice
(one interval apart, so the rates mean something), prints one frame and exits.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fluxmix.cli.mixer import STATUS_SCHEMA  # the parts of /status the CLI reads
from fluxmix.errors import MixerApiError
from fluxmix.mixer.client import MixerClient
from fluxmix.refs import short_hash


@dataclass
class Sampler:
    """Turns successive /status answers into per-second rates."""

    previous: dict[str, Any] | None = None
    at: float = 0.0
    rates: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def add(self, status: dict[str, Any], now: float) -> None:
        before, elapsed = self.previous, now - self.at
        same = before is not None and (before.get("scenario") or {}).get("hash") == (status.get("scenario") or {}).get("hash")
        self.rates = {}
        for kind, counters in (("gear", ("handled", "emitted")), ("wire", ("received",))):
            items = status.get(f"{kind}s") or {}
            old_items = (before or {}).get(f"{kind}s") or {}
            for name, item in items.items():
                old = old_items.get(name) if same else None
                for counter in counters:
                    rate = None
                    if old is not None and elapsed > 0:
                        rate = max(0.0, (float(item.get(counter) or 0) - float(old.get(counter) or 0)) / elapsed)
                    self.rates.setdefault(f"{kind}:{name}", {})[counter] = rate
        self.previous, self.at = status, now

    def rate(self, kind: str, name: str, counter: str) -> float | None:
        return self.rates.get(f"{kind}:{name}", {}).get(counter)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def frame_data(status: dict[str, Any], sampler: Sampler) -> dict[str, Any]:
    """One frame as plain data (what --once --json prints, and what render() draws)."""
    scenario = status.get("scenario") or {}
    return {
        "scenario": f"{scenario.get('name')}:{scenario.get('tag') or '-'}" if scenario else None,
        "hash": scenario.get("hash"),
        "state": status.get("state"),
        "ready": status.get("ready"),
        "reason": status.get("reason"),
        "paused": bool(status.get("paused")),
        "nats": ((status.get("brokers") or {}).get("standard") or {}).get("state"),
        "gears": [
            {"name": name, "type": g.get("type"), "state": g.get("state"), "handled": g.get("handled"),
             "emitted": g.get("emitted"), "errors": g.get("errors"),
             "in_rate": None if g.get("source") else sampler.rate("gear", name, "handled"),
             "out_rate": None if g.get("sink") else sampler.rate("gear", name, "emitted")}
            for name, g in (status.get("gears") or {}).items()
        ],
        "wires": [
            {"wire": key, "transport": w.get("transport"), "received": w.get("received"),
             "rate": sampler.rate("wire", key, "received"),
             "depth": w.get("in_queue", w.get("pending")), "dead_lettered": w.get("dead_lettered"),
             "dropped": w.get("dropped")}
            for key, w in (status.get("wires") or {}).items()
        ],
    }


def render(frame: dict[str, Any], note: str = "") -> Group:
    head = Text()
    head.append("fluxmix top  ", style="bold")
    head.append(frame["scenario"] or "no scenario", style="cyan")
    if frame.get("hash"):
        head.append(f"  {short_hash(frame['hash'])}", style="dim")
    head.append("  ")
    head.append(f"{frame['state']}", style="green" if frame.get("ready") else "red")
    if frame.get("reason") and frame["reason"] != frame["state"]:  # "running (running)" says nothing
        head.append(f" ({frame['reason']})")
    if frame.get("paused"):
        head.append("  PAUSED", style="bold yellow")
    if frame.get("nats"):
        head.append(f"  NATS {frame['nats']}", style="green" if frame["nats"] == "connected" else "red")
    gears = Table(expand=True, title_justify="left")
    for column, justify in (("GEAR", "left"), ("TYPE", "left"), ("STATE", "left"), ("IN/S", "right"),
                            ("OUT/S", "right"), ("HANDLED", "right"), ("EMITTED", "right"), ("ERRORS", "right")):
        gears.add_column(column, justify=justify)  # type: ignore[arg-type]
    for g in frame["gears"]:
        state_style = {"running": "green", "paused": "yellow", "failed": "red"}.get(str(g["state"]), "")
        gears.add_row(g["name"], g["type"], Text(str(g["state"]), style=state_style), _rate(g["in_rate"]),
                      _rate(g["out_rate"]), _num(g["handled"]), _num(g["emitted"]), _num(g["errors"]))
    wires = Table(expand=True)
    for column, justify in (("WIRE", "left"), ("TRANSPORT", "left"), ("RATE", "right"), ("RECEIVED", "right"),
                            ("QUEUE/LAG", "right"), ("DEAD", "right"), ("DROPPED", "right")):
        wires.add_column(column, justify=justify)  # type: ignore[arg-type]
    for w in frame["wires"]:
        wires.add_row(w["wire"], w["transport"], _rate(w["rate"]), _num(w["received"]), _num(w["depth"]),
                      _num(w["dead_lettered"]), _num(w["dropped"]))
    parts: list[Any] = [head, gears, wires]
    if note:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def run_top(client: MixerClient, *, once: bool, interval: float, as_json: bool) -> None:
    sampler = Sampler()
    if once:
        sampler.add(client.get("/status", STATUS_SCHEMA), time.monotonic())
        time.sleep(interval)
        frame = frame_data(_sample(client, sampler), sampler)
        if as_json:
            click.echo(json.dumps(frame, indent=2, sort_keys=True))
            return
        width = click.get_terminal_size()[0] if sys.stdout.isatty() else 120
        buffer = io.StringIO()
        Console(file=buffer, width=width, force_terminal=False, color_system=None).print(render(frame))
        click.echo(buffer.getvalue(), nl=False)
        return
    if as_json:
        raise click.UsageError("--json needs --once")
    console = Console(file=click.get_text_stream("stdout"))
    sampler.add(client.get("/status", STATUS_SCHEMA), time.monotonic())  # fails fast (one line) when the mixer is away
    try:
        with _keys() as pressed, Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                note = "q or Ctrl-C to quit"
                try:
                    frame = frame_data(_sample(client, sampler), sampler)
                except MixerApiError as error:
                    note = f"{error}; retrying"
                    frame = frame_data(sampler.previous or {}, sampler)
                live.update(render(frame, note), refresh=True)
                if pressed(interval):
                    return
    except KeyboardInterrupt:
        return


def _sample(client: MixerClient, sampler: Sampler) -> dict[str, Any]:
    status = client.get("/status", STATUS_SCHEMA)
    sampler.add(status, time.monotonic())
    return status


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """`pressed(timeout)`: waits up to timeout, True when `q` was typed. The terminal is put in
    cbreak mode (keys arrive unbuffered, Ctrl-C still interrupts) and restored on exit."""
    stdin = sys.stdin
    if not stdin.isatty():
        yield lambda timeout: bool(time.sleep(timeout))
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if ready and os.read(fd, 1) in (b"q", b"Q"):
                return True
        return False

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
