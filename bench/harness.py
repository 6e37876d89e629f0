"""Rows, repetitions, machine facts and the table: everything the benchmark groups share.

Every row pairs a fluxmix figure with a raw baseline measured in the same run (these machines
are shared and noisy: absolute numbers drift, ratios hold). Repetitions of the fluxmix side and
of the baseline are interleaved so that a burst of load from a neighbour hits both.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any, Callable

# Ratios under these mean "look at it": the issue asks for a profile of every one.
THRESHOLDS: dict[str, float] = {"memory": 0.5, "durable": 0.8}


@dataclass(slots=True)
class Stat:
    """The samples of one figure, one per repetition."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def as_dict(self) -> dict[str, Any]:
        if not self.samples:
            return {"median": None, "min": None, "max": None, "samples": []}
        return {"median": self.median, "min": self.low, "max": self.high, "samples": list(self.samples)}


@dataclass(slots=True)
class Row:
    """One line of the table.

    `ratio` is always "fluxmix as a fraction of the baseline's performance": fluxmix/raw for
    figures where higher is better (msg/s), raw/fluxmix where lower is better (seconds, bytes).
    So 1.0 means as good as the raw transport and 0.5 means half as good, whatever the unit.
    """

    group: str
    name: str
    unit: str
    higher_is_better: bool
    fluxmix: Stat = field(default_factory=Stat)
    raw: Stat | None = None
    raw_label: str = ""
    note: str = ""
    error: str = ""
    target: float | None = None  # this row's own threshold (an issue's target), else the group's

    @property
    def ratio(self) -> float | None:
        if self.raw is None or not self.raw.samples or not self.fluxmix.samples:
            return None
        fx, raw = self.fluxmix.median, self.raw.median
        if self.higher_is_better:
            return fx / raw if raw else None
        return raw / fx if fx else None

    @property
    def threshold(self) -> float | None:
        return self.target if self.target is not None else THRESHOLDS.get(self.group)

    @property
    def flagged(self) -> bool:
        r, t = self.ratio, self.threshold
        return r is not None and t is not None and r < t

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "unit": self.unit,
            "better": "higher" if self.higher_is_better else "lower",
            "fluxmix": self.fluxmix.as_dict(),
            "raw": self.raw.as_dict() if self.raw is not None else None,
            "raw_label": self.raw_label,
            "ratio": self.ratio,
            "threshold": self.threshold,
            "flagged": self.flagged,
            "note": self.note,
            "error": self.error,
        }


# ---------------------------------------------------------------- machine facts and load


def _version(dist: str) -> str:
    try:
        return package_version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_info(nats_server_version: str | None = None) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_total = f.readline().split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory": mem_total,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "nats_server": nats_server_version or "not started",
        "nats_py": _version("nats-py"),
        "msgpack": _version("msgpack"),
        "sqlalchemy": _version("SQLAlchemy"),
        "fluxmix": _version("fluxmix"),
    }


def loadavg() -> tuple[float, float, float]:
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            a, b, c = f.read().split()[:3]
        return float(a), float(b), float(c)
    except (OSError, ValueError):
        return (0.0, 0.0, 0.0)


def host_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadProbe:
    """How busy the machine was while a group ran, and how much of that was us.

    Other engineers share the cores; a figure measured while the host was saturated by
    someone else is noted as such instead of silently compared.
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._host0 = host_cpu_ticks()
        self._self0 = self_cpu_seconds()
        self._load0 = loadavg()

    def finish(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        host1 = host_cpu_ticks()
        out: dict[str, Any] = {
            "wall_seconds": round(wall, 2),
            "loadavg_before": self._load0,
            "loadavg_after": loadavg(),
            # this process and its waited-for children, in cores
            "bench_cores": round((self_cpu_seconds() - self._self0) / wall, 2) if wall > 0 else None,
        }
        if self._host0 and host1 and host1[1] > self._host0[1]:
            busy = (host1[0] - self._host0[0]) / (host1[1] - self._host0[1])
            out["host_busy_cores"] = round(busy * (os.cpu_count() or 1), 2)
        return out


# ---------------------------------------------------------------- formatting


def human(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.0f} us"
        if value < 1:
            return f"{value * 1e3:.1f} ms"
        return f"{value:.2f} s"
    if unit == "B":
        return f"{value / 2**20:.1f} MiB"
    if unit.endswith("/s"):
        if value >= 1e6:
            return f"{value / 1e6:.2f}M {unit}"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k {unit}"
        return f"{value:.0f} {unit}"
    return f"{value:.3g} {unit}"


def _short(value: float, unit: str, like: str) -> str:
    """`value` without its unit when it would be spelled in the same unit as `like`."""
    text = human(value, unit)
    number, _, suffix = text.partition(" ")
    return number if suffix == like.partition(" ")[2] else text


def cell(stat: Stat | None, unit: str) -> str:
    if stat is None or not stat.samples:
        return "-"
    med = human(stat.median, unit)
    if len(stat.samples) == 1:
        return med
    return f"{med} ({_short(stat.low, unit, med)}..{_short(stat.high, unit, med)})"


def table(rows: list[Row]) -> str:
    header = ["benchmark", "fluxmix (median, min..max)", "raw baseline (same run)", "ratio", "n"]
    lines: list[list[str]] = []
    for r in rows:
        if r.error:
            lines.append([f"{r.group}: {r.name}", f"ERROR: {r.error}", "", "", ""])
            continue
        ratio = r.ratio
        rtxt = "-" if ratio is None else f"{ratio:.2f}" + (" !" if r.flagged else "")
        raw = cell(r.raw, r.unit)
        if r.raw_label and r.raw is not None:
            raw = f"{raw} [{r.raw_label}]"
        lines.append([f"{r.group}: {r.name}", cell(r.fluxmix, r.unit), raw, rtxt, str(len(r.fluxmix.samples))])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    out = ["| benchmark | fluxmix (median, min..max) | raw baseline (same run) | ratio | n |", "|---|---|---|---|---|"]
    for r in rows:
        if r.error:
            out.append(f"| {r.group}: {r.name} | ERROR: {r.error} | | | |")
            continue
        ratio = r.ratio
        rtxt = "-" if ratio is None else f"{ratio:.2f}" + (" **!**" if r.flagged else "")
        raw = cell(r.raw, r.unit)
        if r.raw_label and r.raw is not None:
            raw = f"{raw} [{r.raw_label}]"
        out.append(f"| {r.group}: {r.name} | {cell(r.fluxmix, r.unit)} | {raw} | {rtxt} | {len(r.fluxmix.samples)} |")
    return "\n".join(out)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


Timer = Callable[[], float]
