"""Safe YAML for scenario and spec files: JSON-like data only, bounded in size, depth and expansion.

Scenario files come from operators and from the store, and the mixer parses them at runtime, so
the parser must never run code, never blow up memory and never silently drop data:

* `yaml.SafeLoader` semantics (no `!!python/...` tags), restricted further to JSON-like values:
  no `!!set`/`!!omap`/`!!pairs`/`!!binary`, timestamps stay strings, mapping keys are strings.
* Duplicate mapping keys are an error (PyYAML's default is "last one wins").
* Size is checked before parsing (`MAX_DOCUMENT_BYTES`); nesting depth is checked while composing
  (libyaml's own composer is recursive C and crashes the process on very deep input, so nodes are
  composed by PyYAML's Python composer on top of libyaml's events); the *expanded* size of the
  node graph (aliases counted as many times as they are used) is checked before constructing,
  which refuses "billion laughs" documents in microseconds.
* Exactly one document per file.
* Numbers are finite: `.nan`, `.inf` and floats too large for a double (`1.0e+999`) are refused where
  they are written, so no config key, wire option or spec can carry them (a NaN `rate` would
  compare false against every bound and run a source unpaced).

Every failure is a `ScenarioError` whose message is one line: `file:line:col: reason`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from fluxmix.errors import ScenarioError

try:  # libyaml's scanner/parser is ~10x faster; the Python one is a complete fallback
    from yaml.cyaml import CParser as _Parser

    _BASES: tuple[type, ...] = (_Parser,)
    HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    _BASES = (Reader, Scanner, Parser)
    HAVE_LIBYAML = False

MAX_DOCUMENT_BYTES = 1024 * 1024
"""Largest scenario/spec file accepted (1 MiB): scenarios are topologies, not data."""

MAX_EXPANDED_NODES = 200_000
"""Largest node count after expanding every alias (a billion-laughs document is refused)."""

MAX_ALIASES = 10_000
"""Most alias uses (`*name`) in one document."""

MAX_DEPTH = 100
"""Deepest nesting of mappings/sequences."""

_TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"
"""The one message for over-deep documents, whichever layer refuses them: fluxmix's composer, or a
parser with a nesting limit of its own (libyaml in PyYAML >= 6.0.4 stops flow collections at 1000
levels, before our composer sees level 101), so users never see a dependency's wording."""

_PARSER_DEPTH_WORDING = re.compile(r"\b(nesting|nest|depth)\b", re.IGNORECASE)

_TAG = "tag:yaml.org,2002:"
_TIMESTAMP = _TAG + "timestamp"
_REFUSED_TAGS = {_TAG + "set": "!!set", _TAG + "omap": "!!omap", _TAG + "pairs": "!!pairs", _TAG + "binary": "!!binary"}


class _LimitError(yaml.MarkedYAMLError):
    """Raised from inside the composer/constructor; turned into a ScenarioError by load_yaml."""


class FluxmixYamlLoader(Composer, *_BASES, SafeConstructor, Resolver):  # type: ignore[misc]
    """SafeLoader semantics, JSON-like values, duplicate keys refused, depth and aliases bounded."""

    # Timestamps stay strings: `date: 2024-01-01` is data for a message body, and datetime objects
    # would not survive JSON Schema validation, msgpack, or a round trip through the store.
    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }
    yaml_constructors = dict(SafeConstructor.yaml_constructors)

    def __init__(self, stream: str) -> None:
        _BASES[0].__init__(self, stream)  # CParser(stream) or Reader(stream)
        for base in _BASES[1:]:  # pragma: no cover - Scanner, Parser of the pure-Python fallback
            base.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0  # composed, aliases not counted: without aliases the document is a tree this size

    # ---- composing: depth and alias limits ----

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise _LimitError(None, None, f"more than {MAX_ALIASES} aliases; refusing the document", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise _LimitError(None, None, _TOO_DEEP, event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    # ---- constructing: string keys, no duplicates, bad scalars reported with their place ----

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # `!!int x`, `!!bool maybe`, a 5000-digit number: bad input, not a bug
            tag = node.tag.replace(_TAG, "!!")
            shown = repr(node.value) if isinstance(node, ScalarNode) else f"a {node.id}"
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            why = _one_line(str(exc)).split(";")[0][:120] or type(exc).__name__
            raise ConstructorError(None, None, f"cannot read {shown} as {tag}: {why}", node.start_mark) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge":
                continue  # `<<: *base` merges; keys written next to it override, as YAML intends
            key = self.construct_object(key_node, deep=False)
            _require_string_key(key, key_node)
            if key in first_line:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first_line[key] + 1}, again at line "
                    f"{key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        mapping = super().construct_mapping(node, deep=deep)
        for key in mapping:  # keys brought in by a merge (`<<`) were not seen above
            _require_string_key(key, node)
        return mapping


def _require_string_key(key: Any, node: Node) -> None:
    if isinstance(key, str):
        return
    hint = " (YAML 1.1 reads yes/no/on/off as booleans)" if isinstance(key, bool) else ""
    shown = repr(key) if isinstance(key, (bool, int, float)) or key is None else f"of type {type(key).__name__}"
    raise ConstructorError(None, None, f"mapping key {shown} is not a string{hint}; quote it", node.start_mark)


def _refuse_tag(loader: FluxmixYamlLoader, node: Node) -> Any:
    raise ConstructorError(
        None, None, f"tag {_REFUSED_TAGS[node.tag]} is not allowed: scenario files hold JSON-like data", node.start_mark
    )


def _timestamp_as_string(loader: FluxmixYamlLoader, node: Node) -> Any:
    return loader.construct_scalar(node)  # explicit `!!timestamp` stays text too


def _finite_float(loader: FluxmixYamlLoader, node: Node) -> float:
    value = SafeConstructor.construct_yaml_float(loader, node)
    if not math.isfinite(value):
        shown = repr(node.value) if len(str(node.value)) <= 20 else repr(str(node.value)[:19] + "…")
        raise ConstructorError(
            None,
            None,
            f"{shown} is not a finite number: NaN and infinities are refused (quote it to mean text)",
            node.start_mark,
        )
    return value


for _tag in _REFUSED_TAGS:
    FluxmixYamlLoader.add_constructor(_tag, _refuse_tag)
FluxmixYamlLoader.add_constructor(_TIMESTAMP, _timestamp_as_string)
FluxmixYamlLoader.add_constructor(_TAG + "float", _finite_float)


def _check_expansion(root: Node) -> None:
    """Count nodes as if every alias were expanded, visiting each distinct node once.

    Iterative post-order walk with memoisation: cost is linear in the *composed* graph, so a
    document whose expansion is astronomically large is refused without expanding anything.
    A node that (through an alias) contains itself is refused too: it cannot become JSON.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > MAX_EXPANDED_NODES:
                raise _LimitError(
                    None,
                    None,
                    f"document expands to more than {MAX_EXPANDED_NODES} nodes (aliases multiply); refusing it",
                    node.start_mark,
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _LimitError(None, None, "an alias refers to a node that contains it (recursive structure)", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            cid = id(child)
            if cid in on_path:
                raise _LimitError(
                    None, None, "an alias refers to a node that contains it (recursive structure)", child.start_mark
                )
            if cid not in sizes:
                stack.append((child, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _where(source: str, mark: Any) -> str:
    if mark is None:
        return source
    line, column = getattr(mark, "line", None), getattr(mark, "column", None)
    if line is None:
        return source
    return f"{source}:{line + 1}:{column + 1}"


def _one_line(text: str | None) -> str:
    return re.sub(r"\s*\n\s*", " ", (text or "").strip())


def _is_parser_depth_limit(exc: yaml.MarkedYAMLError, text: str) -> bool:
    """True when the parser itself refused the document for its depth.

    Recognised by the parser's wording, or, should that wording change, by the document really
    holding more than MAX_DEPTH unclosed brackets before the point of refusal (a parser only
    refuses depth beyond ours, since our composer sees the shallower levels first).
    """
    if isinstance(exc, _LimitError):
        return False
    wording = f"{exc.problem or ''} {exc.context or ''}"
    if _PARSER_DEPTH_WORDING.search(wording):
        return True
    mark = exc.problem_mark
    if mark is None or getattr(mark, "index", None) is None:
        return False
    before = text[: mark.index]
    return before.count("[") + before.count("{") - before.count("]") - before.count("}") > MAX_DEPTH


def _format_yaml_error(exc: yaml.YAMLError, source: str, text: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character
        what = f"character U+{ord(char) if isinstance(char, str) else char:04X}"
        return f"{source}:{line}:{column}: unacceptable {what}: {exc.reason}"
    if isinstance(exc, yaml.MarkedYAMLError):
        if _is_parser_depth_limit(exc, text):
            return f"{_where(source, exc.problem_mark or exc.context_mark)}: {_TOO_DEEP}"
        if exc.problem and "expected a single document" in (exc.context or ""):
            return (
                f"{_where(source, exc.problem_mark)}: a second YAML document starts here; "
                "a file holds exactly one scenario or spec"
            )
        mark = exc.problem_mark or exc.context_mark
        reason = _one_line(exc.problem) or _one_line(exc.context) or "invalid YAML"
        if exc.context and exc.problem:
            ctx = _one_line(exc.context)
            if exc.context_mark is not None and exc.context_mark is not exc.problem_mark:
                ctx += f" (line {exc.context_mark.line + 1})"
            reason = f"{reason}, {ctx}"
        if exc.problem and "could not determine a constructor" in exc.problem:
            tag = exc.problem.split("tag", 1)[-1].strip().strip("'\"").replace(_TAG, "!!")
            reason = f"tag {tag} is not allowed (safe YAML: no language-specific tags)"
        return f"{_where(source, mark)}: {reason}"
    return f"{source}: {_one_line(str(exc))}"  # pragma: no cover - every PyYAML error is one of the above


def load_yaml(data: bytes | str, source: str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse one YAML document from `data` into plain Python data (dict/list/str/int/float/bool/None).

    `source` names the file (or store reference) in error messages. An empty document gives None.
    Raises ScenarioError with a one-line `source:line:col: reason` message.
    """
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise ScenarioError(f"{source}: {size} bytes is larger than the {max_bytes}-byte limit for a scenario or spec file")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            before = data[: exc.start]
            line = before.count(b"\n") + 1
            column = exc.start - (before.rfind(b"\n") + 1) + 1
            raise ScenarioError(f"{source}:{line}:{column}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    else:
        text = data
    loader = FluxmixYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Without aliases nothing expands: the composed tree is the document, and counting it
        # while composing says what the walk would (a reload parses on the mixer's hot path).
        if loader._aliases or not 0 < loader._nodes <= MAX_EXPANDED_NODES:
            _check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ScenarioError(_format_yaml_error(exc, source, text)) from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps us far below the interpreter's limit
        raise ScenarioError(f"{source}: {_TOO_DEEP}") from None
    finally:
        loader.dispose()


__all__ = [
    "FluxmixYamlLoader",
    "HAVE_LIBYAML",
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_EXPANDED_NODES",
    "load_yaml",
]
