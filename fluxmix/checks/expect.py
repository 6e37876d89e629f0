"""Live expectations: `sink.handled >= 1000 within 60s`, `rate(sink.handled) > 50/s`, `dead_letters == 0`.

An expectation is one line of a tiny grammar, matched with regular expressions (never `eval`):

    expectation := subject OP NUMBER ['/s'] ['within' DURATION]
    subject     := series | 'rate(' series ')'
    series      := GEAR '.' GEAR_COUNTER                       e.g. sink.handled
                 | 'wire' GEAR.PORT '->' GEAR.PORT WIRE_METRIC   e.g. wire source.out->large.in lag
                 | TOTAL                                       e.g. dead_letters (summed over gears)
    OP          := == | != | < | <= | > | >=
    DURATION    := NUMBER ('ms' | 's' | 'm' | 'h')

Values come from the running scenario's own counters (the runtime status), so they count from
the activation. `ExpectationTracker` turns a stream of status samples into a state per
expectation: `pending` (not yet true, still inside its `within` window, or a rate with too few
samples), `passing`, or `failing`; each with since when, the last value and why.
"""

from __future__ import annotations

import operator
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from fluxmix.refs import GEAR_NAME, PORT

GEAR_COUNTERS = ("handled", "errors", "emitted", "dead_lettered", "dropped", "restarts")
WIRE_METRICS = ("lag", "sent", "received", "failed", "redelivered", "dead_lettered", "dropped")
# A total sums one gear counter over every gear of the scenario.
TOTALS = {
    "dead_letters": "dead_lettered",
    "dead_lettered": "dead_lettered",
    "dropped": "dropped",
    "errors": "errors",
    "restarts": "restarts",
    "handled": "handled",
    "emitted": "emitted",
}
# A wire's backlog in its status JSON (fluxmix.status): JetStream `pending`, memory `in_queue`.
LAG_KEYS = ("pending", "in_queue")

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_EXPECTATION_CHARS = 300
RATE_WINDOW = 5.0  # seconds of samples a rate is computed over
RATE_MIN_SPAN = 1.0  # a rate needs samples at least this far apart

_NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_WHOLE = re.compile(
    rf"(?P<subject>.+?)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<number>-?{_NUMBER})\s*(?P<per>/\s*s)?"
    rf"(?:\s+within\s+(?P<within>{_NUMBER})\s*(?P<unit>ms|s|m|h))?",
)
_RATE = re.compile(r"rate\s*\(\s*(?P<series>.*?)\s*\)")
_WIRE = re.compile(rf"wire\s+(?P<src>{GEAR_NAME}\.{PORT})\s*->\s*(?P<dst>{GEAR_NAME}\.{PORT})\s+(?P<metric>[a-z_]+)")
_GEAR = re.compile(rf"(?P<gear>{GEAR_NAME})\.(?P<counter>[a-z_]+)")
_TOTAL = re.compile(r"[a-z_]+")


class ExpectationSyntaxError(ValueError):
    """Why a line is not an expectation (one line, no user text beyond a short excerpt)."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """One parsed expectation. `kind` is gear | wire | total; `target` a gear name or wire key."""

    text: str
    kind: str
    target: str
    metric: str
    op: str
    threshold: float
    rate: bool = False
    within: float | None = None

    def read(self, status: Mapping[str, Any]) -> float | None:
        """The raw series value in a runtime status (before any rate), None when it is not there."""
        if self.kind == "gear":
            gear = (status.get("gears") or {}).get(self.target)
            return _number(gear.get(self.metric)) if isinstance(gear, Mapping) else None
        if self.kind == "wire":
            wire = (status.get("wires") or {}).get(self.target)
            if not isinstance(wire, Mapping):
                return None
            if self.metric == "lag":
                for key in LAG_KEYS:
                    if _number(wire.get(key)) is not None:
                        return _number(wire.get(key))
                return None
            return _number(wire.get(self.metric))
        gears = status.get("gears") or {}
        return float(sum(_number(g.get(self.metric)) or 0 for g in gears.values() if isinstance(g, Mapping)))

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    @property
    def subject(self) -> str:
        """What the value shown next to the state measures (`rate(sink.handled)`, `dead_letters`)."""
        return self.text.split(self.op, 1)[0].strip() if self.op in self.text else self.text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_expectation(text: object) -> Expectation:
    """Parse one line; raises ExpectationSyntaxError saying what is wrong and what is allowed."""
    if not isinstance(text, str):
        raise ExpectationSyntaxError("must be a string like 'sink.handled >= 100 within 60s'")
    source = " ".join(text.split())
    if not source:
        raise ExpectationSyntaxError("empty expectation")
    if len(source) > MAX_EXPECTATION_CHARS:
        raise ExpectationSyntaxError(f"longer than {MAX_EXPECTATION_CHARS} characters")
    whole = _WHOLE.fullmatch(source)
    if whole is None:
        raise ExpectationSyntaxError(
            "expected SUBJECT OP NUMBER [within DURATION], e.g. 'sink.handled >= 100 within 60s', "
            "'rate(sink.handled) > 50/s', 'dead_letters == 0', 'wire a.out->b.in lag < 5000'"
        )
    subject = whole["subject"].strip()
    rate_match = _RATE.fullmatch(subject)
    rate = rate_match is not None
    series = rate_match["series"] if rate_match else subject
    if whole["per"] and not rate:
        raise ExpectationSyntaxError("'/s' applies only to rate(...)")
    kind, target, metric = _series(series)
    within = None
    if whole["within"] is not None:
        within = float(whole["within"]) * DURATION_UNITS[whole["unit"]]
        if within <= 0:
            raise ExpectationSyntaxError("within: the duration must be positive")
    return Expectation(
        text=source, kind=kind, target=target, metric=metric, op=whole["op"],
        threshold=float(whole["number"]), rate=rate, within=within,
    )


def _series(series: str) -> tuple[str, str, str]:
    if series.startswith("wire ") or series == "wire":
        match = _WIRE.fullmatch(series)
        if match is None:
            raise ExpectationSyntaxError("a wire is written 'wire GEAR.PORT->GEAR.PORT METRIC', e.g. 'wire a.out->b.in lag'")
        if match["metric"] not in WIRE_METRICS:
            raise ExpectationSyntaxError(f"unknown wire metric {match['metric']!r} (known: {', '.join(WIRE_METRICS)})")
        return "wire", f"{match['src']}->{match['dst']}", match["metric"]
    match = _GEAR.fullmatch(series)
    if match is not None:
        if match["counter"] not in GEAR_COUNTERS:
            raise ExpectationSyntaxError(
                f"unknown gear counter {match['counter']!r} (known: {', '.join(GEAR_COUNTERS)})"
            )
        return "gear", match["gear"], match["counter"]
    if _TOTAL.fullmatch(series):
        if series not in TOTALS:
            raise ExpectationSyntaxError(
                f"unknown total {series!r}: use GEAR.COUNTER, 'wire A->B METRIC', or one of {', '.join(TOTALS)}"
            )
        return "total", "*", TOTALS[series]
    raise ExpectationSyntaxError(
        f"{series[:40]!r} is not GEAR.COUNTER, 'wire GEAR.PORT->GEAR.PORT METRIC', or a total ({', '.join(TOTALS)})"
    )


# ---------------------------------------------------------------- judging a running scenario

STATES = ("pending", "passing", "failing")


@dataclass
class ExpectationState:
    """What one expectation looks like right now."""

    expectation: Expectation
    state: str = "pending"
    since: float = field(default_factory=time.time)  # wall clock of the last state change
    value: float | None = None
    reason: str = "not evaluated yet"
    reached: bool = False  # passed at least once: its `within` grace is over
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (monotonic, raw) for rates

    def as_dict(self) -> dict[str, Any]:
        from datetime import datetime, timezone

        return {
            "expect": self.expectation.text,
            "state": self.state,
            "since": datetime.fromtimestamp(self.since, timezone.utc).isoformat(),
            "value": self.value,
            "reason": self.reason,
        }


class ExpectationTracker:
    """The states of a scenario's expectations, fed with runtime status samples.

    `started` is the monotonic time of the activation: `within` windows count from it.
    """

    def __init__(self, expectations: list[Expectation], *, started: float | None = None,
                 rate_window: float = RATE_WINDOW) -> None:
        self.started = time.monotonic() if started is None else started
        self.rate_window = rate_window
        self.states = [ExpectationState(e) for e in expectations]

    def observe(self, status: Mapping[str, Any], *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for st in self.states:
            self._judge(st, status, now)

    def _judge(self, st: ExpectationState, status: Mapping[str, Any], now: float) -> None:
        exp = st.expectation
        raw = exp.read(status)
        value: float | None = raw
        if exp.rate and raw is not None:
            st.samples.append((now, raw))
            while len(st.samples) > 2 and now - st.samples[1][0] >= self.rate_window:
                st.samples.popleft()
            first_t, first_v = st.samples[0]
            value = (raw - first_v) / (now - first_t) if now - first_t >= RATE_MIN_SPAN else None
        st.value = None if value is None else (int(value) if value.is_integer() else round(value, 6))
        elapsed = now - self.started
        grace = exp.within is not None and not st.reached and elapsed < exp.within
        shown = f"{exp.subject} = {_show(value)}{'/s' if exp.rate and value is not None else ''}"
        wanted = f"needs {exp.op} {_show(exp.threshold)}{'/s' if exp.rate else ''}"
        if value is None:
            # No value yet (a rate's first sample, a durable wire's lag before its first report):
            # nothing to judge, so it waits, until its `within` window (if any) is over.
            new = "pending" if grace or exp.within is None else "failing"
            reason = "not enough samples for a rate yet" if exp.rate and raw is not None else f"{exp.subject}: no value yet"
            if new == "failing" and exp.within is not None:
                reason += f" after {_show(exp.within)}s"
        elif exp.holds(value):
            new, reason = "passing", f"{shown}, {wanted}"
            st.reached = True
        elif grace:
            assert exp.within is not None
            new, reason = "pending", f"{shown}, {wanted} (within {_show(exp.within)}s; {_show(round(exp.within - elapsed, 1))}s left)"
        else:
            late = f" within {_show(exp.within)}s" if exp.within is not None and not st.reached else ""
            new, reason = "failing", f"{shown}, {wanted}{late}"
        if new != st.state:
            st.state = new
            st.since = time.time()
        st.reason = reason

    # ---- verdicts ----

    def all_passing(self) -> bool:
        return all(st.state == "passing" for st in self.states)

    def failing(self) -> list[ExpectationState]:
        return [st for st in self.states if st.state == "failing"]

    def not_passing(self) -> list[ExpectationState]:
        return [st for st in self.states if st.state != "passing"]

    def report(self) -> list[dict[str, Any]]:
        return [st.as_dict() for st in self.states]


def _show(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if value != int(value) else str(int(value))


__all__ = [
    "Expectation",
    "ExpectationState",
    "ExpectationSyntaxError",
    "ExpectationTracker",
    "GEAR_COUNTERS",
    "TOTALS",
    "WIRE_METRICS",
    "parse_expectation",
]
