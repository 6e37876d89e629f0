"""Safe expressions over message bodies: `amount > 100 and currency == "EUR"`.

Scenario text is never passed to `eval`. An expression is parsed once with `ast.parse(mode="eval")`,
checked against a whitelist of node types (no attribute access at all, no lambdas, no
comprehensions, no walrus, calls only to the small function set below), then compiled once into
closures (one per node) that run with our size-checked operators and functions; `simpleeval`
provides the size limits and their exceptions.

The language, in one place (gear schemas point here):

- Names are top-level body fields: `amount`, `currency`. A missing field is an error for that
  message; use `get("field", default)` or `has("field")` for optional ones.
- `body` is the whole body, for keys that are not identifiers: `body["weird-key"]`. (A field
  literally named `body` is `body["body"]`.)
- Literals: numbers, strings, `True`/`False`/`None`, lists, tuples, dicts, sets.
- Operators: `+ - * / // % **`, comparisons (chained too), `in`, `not in`, `is`, `is not`,
  `and`, `or`, `not`, `x if cond else y`, subscripts and slices `items[0]`, `name[:3]`,
  f-strings without format specs or conversions (`f"{first}-{last}"`).
- Functions: see FUNCTIONS (len, str, int, float, bool, round, abs, min, max, lower, upper,
  strip, startswith, endswith, split, get, has, now).
- Global state: `globals.get("threshold", 100)` reads the running scenario's global value (the
  default when the key is not set). It is the one dotted call allowed: compile_expression turns
  it into the function named `globals.get`, a name no expression can spell itself.
- Limits: expression text <= 4096 characters; strings and sequences <= 100,000 items; integer
  results of `**` <= 10,000 bits.
"""

from __future__ import annotations

import ast
import math
import operator
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import simpleeval

from fluxmix.errors import ExpressionError, ExpressionEvalError, ExpressionSyntaxError
from fluxmix.globals_state import get_current as _globals_get

MAX_EXPRESSION_CHARS = 4096
MAX_SEQUENCE_LENGTH = simpleeval.MAX_STRING_LENGTH  # 100,000: strings, lists, tuples
MAX_POWER_BITS = 10_000

_SCALARS = (str, int, float, bool, type(None))


class _MissingField(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


# ---------------------------------------------------------------- functions


def _scalar(value: Any, fn: str) -> Any:
    if not isinstance(value, _SCALARS):
        raise TypeError(f"{fn}() takes a string, number, boolean or None, not {type(value).__name__}")
    return value


def _as_str(value: Any) -> str:
    # Only scalars: str() of a nested structure is an unbounded amount of text.
    return str(_scalar(value, "str"))


def _text(value: Any, fn: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{fn}() takes a string, not {type(value).__name__}")
    return value


def _lower(value: Any) -> str:
    return _text(value, "lower").lower()


def _upper(value: Any) -> str:
    return _text(value, "upper").upper()


def _strip(value: Any, chars: str | None = None) -> str:
    return _text(value, "strip").strip(chars)


def _startswith(value: Any, prefix: Any) -> bool:
    return _text(value, "startswith").startswith(prefix)


def _endswith(value: Any, suffix: Any) -> bool:
    return _text(value, "endswith").endswith(suffix)


def _split(value: Any, sep: str | None = None, maxsplit: int = -1) -> list[str]:
    return _text(value, "split").split(sep, maxsplit)


def _round(value: Any, ndigits: int | None = None) -> Any:
    return round(value, ndigits)


def _now() -> float:
    return time.time()


# get/has need the current body: they are bound per evaluation (see _Evaluator).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "str": _as_str,
    "int": int,
    "float": float,
    "bool": bool,
    "round": _round,
    "abs": abs,
    "min": min,
    "max": max,
    "lower": _lower,
    "upper": _upper,
    "strip": _strip,
    "startswith": _startswith,
    "endswith": _endswith,
    "split": _split,
    "now": _now,
    "globals.get": _globals_get,  # `globals.get(key, default)`, see _globals_calls
    "get": lambda name, default=None: default,  # placeholder, replaced per evaluation
    "has": lambda name: False,  # placeholder, replaced per evaluation
}

# ---------------------------------------------------------------- operators


def _power(a: Any, b: Any) -> Any:
    """`**` whose integer results stay small: `9**9**9` is refused, not computed for minutes."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        if abs(a).bit_length() * b > MAX_POWER_BITS:
            raise simpleeval.NumberTooHigh(f"{a} ** {b} is too large")
    return math.pow(a, b) if isinstance(a, float) or isinstance(b, float) else a**b


def _weight(value: Any, budget: int = MAX_SEQUENCE_LENGTH) -> int:
    """Items in `value` counting nested containers, stopping once past `budget`.

    `[[1] * 100000] * 100000` is only 100,000 references, but walking or printing it is 10**10
    steps: limits must count what a container holds, not just its own length.
    """
    if isinstance(value, (str, bytes)):
        return len(value)
    if not isinstance(value, (list, tuple, set, frozenset, dict)):
        return 0
    total = 0
    stack: list[Any] = [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += len(item)
            stack.extend(item)
    return total


def _too_long() -> simpleeval.IterableTooLong:
    return simpleeval.IterableTooLong(f"result longer than {MAX_SEQUENCE_LENGTH} items")


def _add(a: Any, b: Any) -> Any:
    if hasattr(a, "__len__") and hasattr(b, "__len__") and _weight(a) + _weight(b) > MAX_SEQUENCE_LENGTH:
        raise _too_long()
    return a + b


def _mult(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if hasattr(seq, "__len__") and isinstance(n, int) and n > 0:
            if n * max(_weight(seq), 1) > MAX_SEQUENCE_LENGTH:
                raise _too_long()
    return a * b


# The C functions of `operator` where Python's own operator is all there is to it (same results
# and errors as a lambda, without a Python frame per evaluation).
_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _add,
    ast.Sub: operator.sub,
    ast.Mult: _mult,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Gt: operator.gt,
    ast.Lt: operator.lt,
    ast.GtE: operator.ge,
    ast.LtE: operator.le,
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}

# ---------------------------------------------------------------- whitelist

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.keyword,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Subscript,
    ast.Slice,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.Set,
    ast.JoinedStr,
    ast.FormattedValue,
    *_OPERATORS,
)

_REFUSED_WHY: dict[type, str] = {
    ast.Attribute: "attribute access (`x.y`) is not allowed; use functions such as lower(x) or body[\"key\"]",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "unpacking with * is not allowed",
    ast.Await: "await is not allowed",
}


def _check_tree(tree: ast.AST) -> None:
    nodes = list(ast.walk(tree))
    for node in nodes:  # the most telling reason first: `x.__class__()` is about attributes
        if type(node) in _REFUSED_WHY:
            raise ExpressionSyntaxError(_REFUSED_WHY[type(node)])
    for node in nodes:
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if len(node.value) > MAX_SEQUENCE_LENGTH:
                raise ExpressionSyntaxError("string literal too long")
        if not isinstance(node, _ALLOWED_NODES):
            why = _REFUSED_WHY.get(type(node)) or f"{_describe(node)} is not allowed"
            raise ExpressionSyntaxError(why)
        if isinstance(node, ast.Dict) and any(k is None for k in node.keys):
            raise ExpressionSyntaxError("unpacking with ** is not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExpressionSyntaxError("only the built-in functions can be called")
            if node.func.id not in FUNCTIONS:
                raise ExpressionSyntaxError(
                    f"unknown function {node.func.id!r} (allowed: {', '.join(sorted(FUNCTIONS))})"
                )
            if any(kw.arg is None for kw in node.keywords):
                raise ExpressionSyntaxError("unpacking with ** is not allowed")
        if isinstance(node, ast.FormattedValue) and (node.format_spec is not None or node.conversion != -1):
            raise ExpressionSyntaxError("f-string format specs and conversions (!r, :>10) are not allowed")


def _globals_calls(tree: ast.AST) -> ast.AST:
    """`globals.get(...)` -> a call of the function named "globals.get"; other attributes stay refused."""
    for node in ast.walk(tree):
        func = getattr(node, "func", None) if isinstance(node, ast.Call) else None
        if (isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Name)
                and func.value.id == "globals"):
            node.func = ast.copy_location(ast.Name(id="globals.get", ctx=ast.Load()), func)  # type: ignore[attr-defined]
    return tree


def _describe(node: ast.AST) -> str:
    name = type(node).__name__
    return {"BitOr": "operator |", "BitAnd": "operator &", "BitXor": "operator ^", "LShift": "operator <<",
            "RShift": "operator >>", "Invert": "operator ~", "MatMult": "operator @"}.get(name, name)


# ---------------------------------------------------------------- compilation to closures

# An expression is compiled once into nested Python closures, one per checked AST node, each
# taking the body: evaluating `amount > 100` is then one or two calls instead of a walk over the
# tree with a dispatch per node (the tree walker cost ~2.8 us per evaluation here; the closures
# ~0.15 us). Only the nodes `_check_tree` allows reach the compiler, so the language and its
# limits are the same.

_Fn = Callable[[Mapping[str, Any]], Any]


def _name(name: str) -> _Fn:
    if name == "body":
        return lambda body: body

    def field(body: Mapping[str, Any]) -> Any:
        try:
            return body[name]
        except KeyError:
            raise _MissingField(name) from None

    return field


def _constant(value: Any) -> _Fn:
    return lambda body: value


_NUMBERS = frozenset({int, float})
_NUMERIC_PLAIN: dict[Callable[..., Any], Callable[[Any, Any], Any]] = {_mult: operator.mul, _add: operator.add}


def _binary(op: Callable[[Any, Any], Any], left: ast.expr, right: ast.expr) -> _Fn:
    """`left op right`, with the common `field op constant` shape in one closure."""
    if isinstance(right, ast.Constant) and isinstance(left, ast.Name) and left.id != "body":
        name, const = left.id, right.value
        plain = _NUMERIC_PLAIN.get(op) if type(const) in _NUMBERS else None
        if plain is not None:
            # `amount * 100`: a number times a number has no length to limit, so the checked
            # operator (for "ab" * 100 and the like) is only needed for other operand types
            def field_op_number(body: Mapping[str, Any]) -> Any:
                try:
                    value = body[name]
                except KeyError:
                    raise _MissingField(name) from None
                return plain(value, const) if type(value) in _NUMBERS else op(value, const)

            return field_op_number

        def field_op_const(body: Mapping[str, Any]) -> Any:
            try:
                value = body[name]
            except KeyError:
                raise _MissingField(name) from None
            return op(value, const)

        return field_op_const
    lhs, rhs = _compile(left), _compile(right)
    return lambda body: op(lhs(body), rhs(body))


def _compare(node: ast.Compare) -> _Fn:
    if len(node.ops) == 1:
        return _binary(_OPERATORS[type(node.ops[0])], node.left, node.comparators[0])
    first = _compile(node.left)
    steps = [(_OPERATORS[type(op)], _compile(comp)) for op, comp in zip(node.ops, node.comparators)]

    def chained(body: Mapping[str, Any]) -> Any:  # `a < b < c`: stops at the first false link
        right = first(body)
        result: Any = True
        for op, comp in steps:
            left, right = right, comp(body)
            result = op(left, right)
            if not result:
                break
        return result

    return chained


def _boolop(node: ast.BoolOp) -> _Fn:
    parts = [_compile(v) for v in node.values]
    if isinstance(node.op, ast.And):
        def all_of(body: Mapping[str, Any]) -> Any:
            result: Any = False
            for part in parts:
                result = part(body)
                if not result:
                    break
            return result

        return all_of

    def any_of(body: Mapping[str, Any]) -> Any:
        result: Any = False
        for part in parts:
            result = part(body)
            if result:
                break
        return result

    return any_of


def _call(node: ast.Call) -> _Fn:
    assert isinstance(node.func, ast.Name)  # _check_tree refused anything else
    fname = node.func.id
    args = [_compile(a) for a in node.args]
    kwargs = [(kw.arg, _compile(kw.value)) for kw in node.keywords]
    if fname in ("get", "has"):  # the two functions that read the body itself
        def reader(body: Mapping[str, Any]) -> Callable[..., Any]:
            if fname == "get":
                return lambda name, default=None: body.get(name, default)
            return lambda name: name in body

        return lambda body: reader(body)(*[a(body) for a in args], **{k: v(body) for k, v in kwargs})
    fn = FUNCTIONS[fname]
    if not kwargs and len(args) == 1:
        (arg,) = args
        return lambda body: fn(arg(body))

    def call(body: Mapping[str, Any]) -> Any:
        return fn(*[a(body) for a in args], **{k: v(body) for k, v in kwargs})

    return call


def _joined(node: ast.JoinedStr) -> _Fn:
    parts: list[_Fn] = []
    for value in node.values:
        if isinstance(value, ast.FormattedValue):
            inner = _compile(value.value)
            parts.append(lambda body, inner=inner: _scalar(inner(body), "f-string"))
        else:
            parts.append(_compile(value))

    def fstring(body: Mapping[str, Any]) -> str:
        length, pieces = 0, []
        for part in parts:
            text = str(part(body))
            length += len(text)
            if length > MAX_SEQUENCE_LENGTH:
                raise _too_long()
            pieces.append(text)
        return "".join(pieces)

    return fstring


def _slice(node: ast.Slice) -> _Fn:
    lower, upper, step = (_compile(n) if n is not None else None for n in (node.lower, node.upper, node.step))
    return lambda body: slice(lower(body) if lower else None, upper(body) if upper else None,
                              step(body) if step else None)


def _compile(node: ast.AST) -> _Fn:
    """The closure computing `node` from a body (node types as allowed by _check_tree)."""
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.Name):
        return _name(node.id)
    if isinstance(node, ast.Compare):
        return _compare(node)
    if isinstance(node, ast.BinOp):
        return _binary(_OPERATORS[type(node.op)], node.left, node.right)
    if isinstance(node, ast.BoolOp):
        return _boolop(node)
    if isinstance(node, ast.UnaryOp):
        op, operand = _OPERATORS[type(node.op)], _compile(node.operand)
        return lambda body: op(operand(body))
    if isinstance(node, ast.IfExp):
        test, then, orelse = _compile(node.test), _compile(node.body), _compile(node.orelse)
        return lambda body: then(body) if test(body) else orelse(body)
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Subscript):
        container, key = _compile(node.value), _compile(node.slice)
        return lambda body: container(body)[key(body)]
    if isinstance(node, ast.Slice):
        return _slice(node)
    if isinstance(node, ast.List):
        items = [_compile(e) for e in node.elts]
        return lambda body: [item(body) for item in items]
    if isinstance(node, ast.Tuple):
        items = [_compile(e) for e in node.elts]
        return lambda body: tuple([item(body) for item in items])
    if isinstance(node, ast.Set):
        items = [_compile(e) for e in node.elts]
        return lambda body: {item(body) for item in items}
    if isinstance(node, ast.Dict):
        pairs = [(_compile(k), _compile(v)) for k, v in zip(node.keys, node.values) if k is not None]
        return lambda body: {k(body): v(body) for k, v in pairs}
    if isinstance(node, ast.JoinedStr):
        return _joined(node)
    raise ExpressionSyntaxError(f"{_describe(node)} is not allowed")  # unreachable after _check_tree


@dataclass(frozen=True)
class Expression:
    """A compiled expression. Construct with `compile_expression`; call `evaluate(body)`."""

    source: str
    # The compiled closure itself: raises raw exceptions (a missing field is _MissingField).
    # Hot loops call it and fall back to `evaluate` on any exception, for the message-level error.
    fn: _Fn

    def evaluate(self, body: Mapping[str, Any]) -> Any:
        try:
            return self.fn(body)
        except _MissingField as exc:
            raise ExpressionEvalError(
                f"{self.source!r}: field {exc.name!r} is not in the message body "
                f"(use get({exc.name!r}, default) for optional fields)"
            ) from None
        except KeyError as exc:
            raise ExpressionEvalError(f"{self.source!r}: key {exc.args[0]!r} not found") from None
        except IndexError as exc:
            raise ExpressionEvalError(f"{self.source!r}: {exc}") from None
        except ExpressionError:
            raise
        except Exception as exc:  # TypeError, ZeroDivisionError, size limits, RecursionError, ...
            raise ExpressionEvalError(f"{self.source!r}: {exc}") from None

    def __str__(self) -> str:
        return self.source


def compile_expression(text: str) -> Expression:
    """Parse and check `text` once; raises ExpressionSyntaxError with a one-line reason."""
    if not isinstance(text, str):
        raise ExpressionSyntaxError(f"expected a string, got {type(text).__name__}")
    source = text.strip()
    if not source:
        raise ExpressionSyntaxError("empty expression")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionSyntaxError(f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        with warnings.catch_warnings():  # `x is 1`, "\d": Python's warnings are not ours to print
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else " at the end"
        raise ExpressionSyntaxError(f"{exc.msg}{col}") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise ExpressionSyntaxError(str(exc) or type(exc).__name__) from None
    _check_tree(_globals_calls(tree))
    try:
        fn = _compile(tree.body)
    except RecursionError:
        raise ExpressionSyntaxError("nested too deeply") from None
    return Expression(source, fn)


def expression_problem(text: Any) -> str | None:
    """The reason `text` is not a valid expression, or None: for gears' check_config."""
    try:
        compile_expression(text)
    except ExpressionSyntaxError as exc:
        return f"invalid expression: {exc}"
    return None


__all__ = [
    "Expression",
    "ExpressionError",
    "ExpressionEvalError",
    "ExpressionSyntaxError",
    "FUNCTIONS",
    "compile_expression",
    "expression_problem",
]
