"""`map`, `filter` and `route`: reshape, select and dispatch messages with safe expressions.

Expressions are the language of fluxmix.gears.expressions (body fields as names, no attribute
access, a small function set). They compile once, when the gear is built; a bad one is reported
by validation as `gears[i].config.where: invalid expression: ...` before anything runs.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Mapping, Sequence

from fluxmix.gears.base import ERROR_PORT, Gear, Port
from fluxmix.gears.expressions import Expression, ExpressionEvalError, compile_expression, expression_problem
from fluxmix.message import FrozenDict, Message, freeze_body, freeze_changed

_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset({str, float, bool, type(None)})  # ints go through the 64-bit check

def _evaluate(where: str, expr: Expression, body: Mapping[str, Any]) -> Any:
    """Evaluate, naming the config key in the error so the log says which expression failed."""
    try:
        return expr.evaluate(body)
    except ExpressionEvalError as exc:
        raise ExpressionEvalError(f"{where}: {exc}") from None


EXPRESSION_HELP = (
    "Expressions: safe Python-like syntax over body fields, e.g. `amount > 100 and currency == \"EUR\"`; "
    "`body[\"odd-key\"]` for other keys, get(\"f\", default) for optional ones; no attribute access."
)

# ---------------------------------------------------------------- map


def _is_expression_value(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"expr"}


class Map(Gear):
    """Reshapes each body: rename, then set, then drop; the result goes to `out`.

    A `set` value is a constant unless it is a mapping with the single key `expr`, whose string is
    an expression: `{total: {expr: "amount * 1.2"}, source: "web"}`. Explicit beats a magic
    prefix: a constant string can never be mistaken for code. Every expression sees the body as
    it is after `rename` (not the results of other `set` entries), so key order does not matter.
    """

    type = "map"
    description = "Reshape message bodies: rename fields, then set fields (constants or {expr: ...}), then drop fields."
    inputs = (Port("in", "messages to reshape", required=True),)
    outputs = (Port("out", "reshaped messages"),)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "rename": {
                "type": "object",
                "additionalProperties": {"type": "string", "minLength": 1},
                "description": "Top-level fields to rename, {old: new}; applied first. A missing field is skipped; an existing `new` is overwritten.",
            },
            "set": {
                "type": "object",
                "description": (
                    "Top-level fields to set, applied after rename: {field: constant} or {field: {expr: \"...\"}}. "
                    "A value is an expression only when it is a mapping with the single key `expr`; any other value "
                    "(string, number, list, mapping) is copied as is. Expressions all see the body as it is after rename. "
                    + EXPRESSION_HELP
                ),
            },
            "drop": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "uniqueItems": True,
                "description": "Top-level fields to remove, applied last; a missing field is skipped.",
            },
        },
    }

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        targets: dict[str, str] = {}
        for old, new in (config.get("rename") or {}).items():
            if new in targets:
                problems.append((f"rename.{old}", f"renames to {new!r} like {targets[new]!r} does"))
            targets[new] = old
        for field, value in (config.get("set") or {}).items():
            if _is_expression_value(value):
                reason = expression_problem(value["expr"])
                if reason:
                    problems.append((f"set.{field}.expr", reason))
            elif isinstance(value, Mapping) and "expr" in value:
                problems.append((f"set.{field}", "a mapping with `expr` must have no other keys (to set a literal mapping, use {expr: '{...}'})"))
        return problems

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.rename: dict[str, str] = dict(self.config.get("rename") or {})
        self.expressions: dict[str, Expression] = {}
        self.constants: dict[str, Any] = {}
        for field, value in (self.config.get("set") or {}).items():
            if _is_expression_value(value):
                self.expressions[field] = compile_expression(value["expr"])
            else:
                self.constants[field] = value
        self.drop: list[str] = list(self.config.get("drop") or [])
        # fields whose values may not come from the (frozen) input: renamed ones are moved as is
        self._changed: tuple[str, ...] = (*self.constants, *self.expressions)
        # without rename/drop, a frozen input is reshaped in place of a copy of it; constants
        # frozen once (read-only, so every message can share them)
        self._only_set = not self.rename and not self.drop
        frozen_constants = dict(freeze_body(self.constants)) if self._only_set else {}
        # set as keyword arguments of one FrozenDict(body, **constants) call when they can be
        self._constant_kwargs = frozen_constants if all(type(k) is str for k in frozen_constants) else {}
        self._constant_items = [] if self._constant_kwargs else list(frozen_constants.items())
        self._expression_fns = [(field, expr.fn, expr) for field, expr in self.expressions.items()]

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The reshaped copy of `body` (the input is never modified: fan-out shares it).

        From a frozen body (what wires deliver) the result is frozen too, checking only the
        fields this gear set: the others were checked when the input was emitted."""
        if self._only_set and type(body) is FrozenDict:
            return self._set_frozen(body)
        out = dict(body)
        if self.rename:
            for old, new in self.rename.items():
                if old in out:
                    out[new] = out.pop(old)
        if self.expressions:
            seen = out if self.rename else body  # expressions see the body after rename
            computed = []
            for field, expr in self.expressions.items():
                try:
                    computed.append((field, expr.fn(seen)))
                except Exception:
                    computed.append((field, _evaluate(f"set.{field}", expr, seen)))  # raises the clear error
        frozen_input = type(body) is FrozenDict
        for field, value in self.constants.items():
            # frozen (so copied) at emit anyway when the input was frozen
            out[field] = value if frozen_input or isinstance(value, _SCALARS) else copy.deepcopy(value)
        if self.expressions:
            for field, value in computed:
                out[field] = value
        for field in self.drop:
            out.pop(field, None)
        if frozen_input:
            return freeze_changed(out, self._changed, self.name, "out")
        return out

    def _set_frozen(self, body: FrozenDict) -> FrozenDict:
        # Once per message per map: one C-level copy with the constants, then the expressions.
        if type(body) is not FrozenDict:
            return self.apply(body)  # type: ignore[return-value]  # (a durable wire's decoded body)
        out = FrozenDict(body, **self._constant_kwargs)
        put = dict.__setitem__
        for field, value in self._constant_items:
            put(out, field, value)
        for field, fn, expr in self._expression_fns:
            try:
                value = fn(body)
            except Exception:
                value = _evaluate(f"set.{field}", expr, body)  # raises the clear error
            kind = type(value)
            if kind in _SCALAR_TYPES or (kind is int and -(2**63) <= value < 2**64):
                put(out, field, value)
            else:
                put(out, field, freeze_changed({field: value}, (field,), self.name, "out")[field])
        return out

    async def handle(self, port: str, message: Message) -> None:
        await self.ctx.emit("out", self.apply(message.body), headers=message.headers)

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        """Reshape the batch, then emit it at once (emit_each): a message whose expression fails
        stops the loop there, and what those before it produced still goes out."""
        apply = self.apply
        emit_each = getattr(self.ctx, "emit_each", None)
        if emit_each is None:  # a context from before emit_each
            for message in messages:
                await self.ctx.emit("out", apply(message.body), headers=message.headers)
            return
        apply_bodies = getattr(messages, "apply_bodies", None)
        if apply_bodies is not None:  # the runtime's batch: reshape all, then emit at once
            results, failure = apply_bodies(self._set_frozen if self._only_set else apply)
            await emit_each("out", list(zip(messages[:len(results)], results)))
            if failure is not None:
                raise failure
            return
        outputs: list[tuple[Message, Mapping[str, Any]]] = []
        append = outputs.append
        set_frozen = self._set_frozen if self._only_set else None
        try:
            for message in messages:
                body = message.body
                append((message, set_frozen(body) if set_frozen is not None and type(body) is FrozenDict
                        else apply(body)))
        except Exception:
            await emit_each("out", outputs)
            raise
        await emit_each("out", outputs)


# ---------------------------------------------------------------- filter


class Filter(Gear):
    """Sends a message to `out` when `where` is truthy, else to `rejected` (dropped if unwired)."""

    type = "filter"
    description = "Pass messages whose `where` expression is true to `out`; the others go to `rejected`."
    inputs = (Port("in", "messages to test", required=True),)
    outputs = (
        Port("out", "messages for which `where` is true"),
        Port("rejected", "messages for which `where` is false (dropped when not wired)"),
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["where"],
        "properties": {
            "where": {
                "type": "string",
                "minLength": 1,
                "description": "Condition; a truthy result passes the message. " + EXPRESSION_HELP,
            },
        },
    }

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        reason = expression_problem(config.get("where"))
        return [("where", reason)] if reason else []

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.where = compile_expression(self.config["where"])

    async def handle(self, port: str, message: Message) -> None:
        target = "out" if _evaluate("where", self.where, message.body) else "rejected"
        await self.ctx.emit(target, message.body, headers=message.headers)

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        """Test the batch, then emit each side at once (emit_each), as Map does."""
        where, test = self.where, self.where.fn
        emit_each = getattr(self.ctx, "emit_each", None)
        if emit_each is None:  # a context from before emit_each
            for message in messages:
                target = "out" if _evaluate("where", where, message.body) else "rejected"
                await self.ctx.emit(target, message.body, headers=message.headers)
            return
        apply_bodies = getattr(messages, "apply_bodies", None)
        if apply_bodies is not None:  # the runtime's batch: test all, then emit each side at once
            results, failure = apply_bodies(test)
            tested = messages[:len(results)]
            await emit_each("out", [(m, m.body) for m, keep in zip(tested, results) if keep])
            if self.ctx.is_wired("rejected"):  # (emit_each drops an unwired port's outputs anyway)
                await emit_each("rejected", [(m, m.body) for m, keep in zip(tested, results) if not keep])
            if failure is not None:
                _evaluate("where", where, messages[len(results)].body)  # raises the message-level error
                raise failure
            return
        passed: list[tuple[Message, Mapping[str, Any]]] = []
        rejected: list[tuple[Message, Mapping[str, Any]]] = []
        try:
            for message in messages:
                body = message.body
                try:
                    keep = test(body)
                except Exception:
                    keep = _evaluate("where", where, body)  # raises the message-level error
                (passed if keep else rejected).append((message, body))
        except Exception:
            await emit_each("out", passed)
            await emit_each("rejected", rejected)
            raise
        await emit_each("out", passed)
        await emit_each("rejected", rejected)


# ---------------------------------------------------------------- route

DEFAULT_PORT = "default"
_RESERVED_ROUTES = frozenset({DEFAULT_PORT, ERROR_PORT, "in"})


class Route(Gear):
    """One output per named condition plus `default`.

    `mode: first` (default) sends a message to the first route, in the order written, whose
    condition holds (like a switch: Benthos's `switch`); `mode: all` sends it to every route
    whose condition holds (like Vector's `route`). A message no route takes goes to `default`.
    """

    type = "route"
    description = "Send each message to the output named after the first (or every) matching condition; unmatched ones to `default`."
    inputs = (Port("in", "messages to dispatch", required=True),)
    outputs = (Port(DEFAULT_PORT, "messages no route matched"),)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["routes"],
        "properties": {
            "routes": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": r"^[a-z0-9][a-z0-9_-]{0,63}$"},
                "additionalProperties": {"type": "string", "minLength": 1},
                "description": (
                    "{output_name: condition}, evaluated in the order written; each name becomes an output port "
                    "(pattern [a-z0-9][a-z0-9_-]*, not default/error/in). " + EXPRESSION_HELP
                ),
            },
            "mode": {
                "enum": ["first", "all"],
                "default": "first",
                "description": "first: the first matching route takes the message; all: every matching route gets it.",
            },
        },
    }

    @classmethod
    def output_ports(cls, config: Mapping[str, Any]) -> tuple[Port, ...]:
        routes = config.get("routes") if isinstance(config, Mapping) else None
        ports = [
            Port(name, f"messages where {cond}")
            for name, cond in (routes.items() if isinstance(routes, Mapping) else ())
            if isinstance(name, str) and name not in _RESERVED_ROUTES
        ]
        return (*ports, *cls.outputs, Port(ERROR_PORT, "messages that kept failing"))

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for name, cond in (config.get("routes") or {}).items():
            if name in _RESERVED_ROUTES:
                problems.append((f"routes.{name}", f"{name!r} is reserved; choose another route name"))
            reason = expression_problem(cond)
            if reason:
                problems.append((f"routes.{name}", reason))
        return problems

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.routes: list[tuple[str, Expression]] = [
            (port, compile_expression(cond)) for port, cond in self.config["routes"].items()
        ]
        self.first_only = self.config.get("mode", "first") == "first"

    def select(self, body: Mapping[str, Any]) -> list[str]:
        """The output ports for `body` (evaluation errors fail the whole message)."""
        chosen: list[str] = []
        for port, cond in self.routes:
            if _evaluate(f"routes.{port}", cond, body):
                chosen.append(port)
                if self.first_only:
                    break
        return chosen or [DEFAULT_PORT]

    async def handle(self, port: str, message: Message) -> None:
        for target in self.select(message.body):
            await self.ctx.emit(target, message.body, headers=message.headers)

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        emit, select = self.ctx.emit, self.select
        for message in messages:
            for target in select(message.body):
                await emit(target, message.body, headers=message.headers)
