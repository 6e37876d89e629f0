"""One exception tree for everything fluxmix raises on purpose.

    FluxmixError
     ├── UserError                  bad input from the operator: exit 2, one line, nothing written
     │    ├── ScenarioError         a scenario/spec file cannot be read (size, YAML, structure)
     │    │    └── ValidationError  pre-flight validation found problems (carries all of them)
     │    ├── BadReferenceError     a reference that is of no known form
     │    ├── NotFoundError         a well-formed reference that names nothing
     │    ├── AmbiguousReferenceError  a hash prefix that matches several blobs
     │    ├── InvalidNameError      a name or tag outside the allowed patterns
     │    ├── TagConflictError      an immutable tag asked to hold other bytes
     │    ├── SpecInUseError        untagging a spec tag that stored scenarios resolve through
     │    ├── GearClassError        a `python` gear's `class` is not an importable Gear subclass
     │    └── ExpressionSyntaxError an expression outside the allowed language (also an ExpressionError)
     ├── StoreError                 the store is damaged or unusable: exit 1
     │    └── CorruptBlobError      a blob whose bytes no longer match its name
     ├── ExpressionError            an expression could not be compiled or evaluated
     │    ├── ExpressionSyntaxError (see above)
     │    └── ExpressionEvalError   evaluating it against one message failed (that message fails)
     ├── GearError                  a gear failed in start/handle/stop
 ├── ReadOnlyBodyError          a gear tried to change a message body (shared, read-only; also a TypeError)
     ├── TransportError             a wire could not carry a message
     │    └── NatsUnavailableError  no NATS server could be reached or started
     ├── ActivationError            a scenario could not be brought up (the old one keeps running)
     │    └── NothingToReload       a reload asked for while the mixer follows no reference
     ├── FleetError                 a fleet member could not coordinate through NATS KV
     │    └── LeaseLostError        a source's lease is gone: its emits and checkpoints are refused
     └── MixerApiError              the mixer's HTTP API refused or could not be reached

The CLI maps UserError to exit status 2 and every other FluxmixError to 1, printing
`str(error)` as one line (ValidationError prints one line per problem).

User data (names, keys, refs, file contents read as YAML) ends up inside messages, which go to a
terminal, the log, the journal and HTTP answers. One mechanism keeps that bounded: every
FluxmixError message and every Problem passes through `bound_message` when it is created, which
escapes control characters (no terminal escapes, no forged log lines) and cuts any line longer
than MAX_LINE in its middle. `excerpt()` is the helper for quoting a value on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_LINE = 400  # characters of one message line; a longer one keeps its head and tail
EXCERPT = 60  # characters of a value quoted by excerpt()
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def bound_line(line: str, limit: int = MAX_LINE) -> str:
    """One line with control characters escaped, at most about `limit` characters."""
    line = _CONTROL_OR_NEWLINE.sub(_escape, line)
    if len(line) <= limit:
        return line
    head, tail = limit * 3 // 5, limit // 3
    return f"{line[:head]}…[{len(line) - head - tail} characters cut]…{line[-tail:]}"


def bound_message(text: str, limit: int = MAX_LINE) -> str:
    """`bound_line` for each line of a (possibly multi-line) message."""
    if len(text) <= limit and not _CONTROL.search(text) and "\n" not in text:
        return text
    return "\n".join(bound_line(line, limit) for line in text.split("\n"))


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """A short escaped quote of user data: `'abc'`, or `'abcd…' (900000 characters)`."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[: max(1, limit - 3)]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else text[: limit - 1] + "…"


class FluxmixError(Exception):
    """Root of every error fluxmix raises on purpose; its message is bounded (see the module doc)."""

    exit_code: int = 1

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (bound_message(args[0]), *args[1:])
        super().__init__(*args)


class UserError(FluxmixError):
    """The operator gave us something we refuse; nothing was changed."""

    exit_code = 2


class ScenarioError(UserError):
    """A scenario or spec file cannot be read as a document of the right shape."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation finding: where (`wires[3].to`) and why, in plain words."""

    location: str
    reason: str

    def __post_init__(self) -> None:
        # a problem is one line (ValidationError prints one per line), with bounded user data
        object.__setattr__(self, "location", bound_line(str(self.location), MAX_LINE // 2))
        object.__setattr__(self, "reason", bound_line(str(self.reason)))

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}" if self.location else self.reason


class ValidationError(ScenarioError):
    """Every problem pre-flight validation found, so the operator fixes them in one pass."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(self.lines()[0] if len(self.problems) == 1 else f"{source}: {len(self.problems)} problems")

    def lines(self) -> list[str]:
        """One self-contained line per problem, each naming the file."""
        return [f"{self.source}: {p}" for p in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())


class BadReferenceError(UserError):
    """A reference string that is none of name, name:tag, sha256:…, or a path."""


class NotFoundError(UserError):
    """A well-formed reference that does not resolve in the store."""


class AmbiguousReferenceError(UserError):
    """A hash prefix that matches more than one blob."""


class InvalidNameError(UserError):
    """A name or tag outside the allowed character set (guards the store directory)."""


class TagConflictError(UserError):
    """A tag already holds other bytes; tags are immutable."""


class SpecInUseError(UserError):
    """A spec tag stored scenarios still resolve their `spec:` through; `untag --force` overrides."""


class GearClassError(UserError):
    """`class` does not name an importable Gear subclass (a validation problem, one line)."""


class ExpressionError(FluxmixError):
    """An expression could not be compiled or evaluated."""


class ExpressionSyntaxError(ExpressionError, UserError):
    """The expression text is not in the allowed language (reported by config validation)."""


class ExpressionEvalError(ExpressionError):
    """Evaluating the expression against one message failed (that message counts as failed)."""


class GlobalsError(UserError):
    """A global state write refused: bad key, value too large or not JSON, schema violated; nothing changed."""


class StoreError(FluxmixError):
    """The store is damaged or cannot be used."""


class CorruptBlobError(StoreError):
    """A blob whose bytes no longer hash to its name; it is never used."""


class GearError(FluxmixError):
    """A gear failed; carries the gear name so logs and journals can say which."""

    def __init__(self, gear: str, message: str) -> None:
        self.gear = gear
        super().__init__(f"gear '{gear}': {message}")


class ReadOnlyBodyError(FluxmixError, TypeError):
    """A gear tried to change a body it received or emitted: bodies are shared by every gear a
    message fans out to, so they are read-only; build a new dict instead."""


class TransportError(FluxmixError):
    """A wire could not carry a message."""


class NatsUnavailableError(TransportError):
    """No NATS server could be reached or started."""


class ActivationError(FluxmixError):
    """A scenario could not be brought up; the previous one keeps (or resumes) running."""


class NothingToReload(ActivationError):
    """POST /reload or SIGHUP while the mixer follows no reference."""


class FleetError(FluxmixError):
    """A fleet member could not coordinate through NATS (join, lease, claim, desired scenario)."""


class LeaseLostError(FleetError):
    """A source's lease is no longer held by this member: its emits and checkpoints are refused."""


class MixerApiError(FluxmixError):
    """The mixer's HTTP API could not be reached or refused the request."""


__all__ = [
    "MAX_LINE",
    "bound_line",
    "bound_message",
    "excerpt",
    "FluxmixError",
    "UserError",
    "ScenarioError",
    "Problem",
    "ValidationError",
    "BadReferenceError",
    "NotFoundError",
    "AmbiguousReferenceError",
    "InvalidNameError",
    "TagConflictError",
    "SpecInUseError",
    "GearClassError",
    "ExpressionError",
    "ExpressionSyntaxError",
    "ExpressionEvalError",
    "StoreError",
    "CorruptBlobError",
    "GearError",
    "TransportError",
    "NatsUnavailableError",
    "ActivationError",
    "NothingToReload",
    "MixerApiError",
]
