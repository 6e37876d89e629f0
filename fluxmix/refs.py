"""Names, SemVer tags and reference strings: everything a user types to point at a blob.

The one reference grammar: the store resolves with it, validation checks a scenario's `name`,
`version` and `spec:` with it, and the CLI decides with it whether an argument is a file. It
imports no database code, so validation and the CLI can use it without loading the store.
Names and tags are checked against ASCII-only patterns before they reach the index, and hex
digests before they become paths. `sha256:` and hex digits are accepted in any case and
canonicalised to lowercase, everywhere (a digest names the same bytes however it is spelt).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union
from urllib.parse import unquote

import semver

from fluxmix.errors import BadReferenceError, InvalidNameError
from fluxmix.problem_text import describe

KINDS: tuple[str, ...] = ("scenario", "spec")

NAME_PATTERN = "[a-z0-9][a-z0-9._-]{0,63}"
NAME_RE = re.compile(NAME_PATTERN, re.ASCII)
_NAME_RE = NAME_RE
# Inside a scenario a wire names `gear.port`: gear names hold no dots, so the split is unambiguous.
GEAR_NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
PORT = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
GEAR_NAME_PATTERN = re.compile(GEAR_NAME)
PORT_PATTERN = re.compile(PORT)
# Only what SemVer allows, plus the optional leading v: the semver regex alone uses \d,
# which also matches non-ASCII digits.
_TAG_CHARS_RE = re.compile(r"[vV]?[0-9A-Za-z.+-]{5,127}", re.ASCII)
HEX_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_HEX_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}", re.ASCII)
MIN_PREFIX = 12
HASH_PREFIX = "sha256:"
LATEST = "latest"
_NOT_SEMVER = "is not a SemVer version (expected vMAJOR.MINOR.PATCH[-pre], e.g. v1.2.0)"
_STORE_FORMS = "name, name:tag, name:latest or sha256:<12 to 64 hex digits>"
_FORMS = f"{_STORE_FORMS.replace(' or ', ', ')}, or a file path"


@dataclass(frozen=True, slots=True)
class NameRef:
    """`name[:tag]` in the index; tag None means latest."""

    name: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.tag or LATEST}"


@dataclass(frozen=True, slots=True)
class HashRef:
    """`sha256:<hex>`: a blob named directly; prefix is 12..64 lowercase hex digits."""

    prefix: str

    @property
    def is_full(self) -> bool:
        return len(self.prefix) == 64

    def __str__(self) -> str:
        return f"{HASH_PREFIX}{self.prefix}"


@dataclass(frozen=True, slots=True)
class PathRef:
    """A file on disk; reading and importing it is fluxmix.loading's job, not the store's."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


Ref = Union[NameRef, HashRef, PathRef]


SHORT_HASH_DIGITS = 12


def short_hash(hex_digest: str | None) -> str:
    """How fluxmix shows a content hash everywhere (messages, logs, tables): `sha256:ab12cd34ef56`,
    itself a reference that resolves while no other blob shares the prefix; "-" for none."""
    return f"{HASH_PREFIX}{hex_digest[:SHORT_HASH_DIGITS]}" if hex_digest else "-"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidNameError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def check_name(name: str, *, what: str = "name") -> str:
    """Return `name` if it matches NAME_PATTERN (ASCII only), else InvalidNameError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid {what} {_show(name)}: use 1-64 characters of lowercase a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def canonical_tag(text: str) -> str:
    """`1.2.3`, `v1.2.3`, `V1.2.3` -> `v1.2.3`; pre-releases kept; build metadata refused.

    Build metadata is refused because SemVer ignores it when ordering: `v1.0.0+a` and
    `v1.0.0+b` would be two tags that neither sort nor compare apart.
    """
    if not isinstance(text, str) or not _TAG_CHARS_RE.fullmatch(text):
        raise InvalidNameError(_tag_reason(text, _NOT_SEMVER))
    bare = text[1:] if text[0] in "vV" else text
    if "+" in bare:
        build = bare.split("+", 1)[1]
        raise InvalidNameError(
            _tag_reason(
                text,
                f"has build metadata (+{build}), which SemVer ignores when ordering versions; "
                f"use a pre-release (-{build}) or a new version instead",
            )
        )
    try:
        version = semver.Version.parse(bare)
    except ValueError:
        raise InvalidNameError(_tag_reason(text, _NOT_SEMVER)) from None
    return f"v{version}"


def tag_version(tag: str) -> semver.Version:
    """The SemVer value of a canonical tag."""
    return semver.Version.parse(tag[1:])


TagKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


@functools.lru_cache(maxsize=4096)
def tag_key(tag: str) -> TagKey:
    """A plain tuple that sorts exactly as SemVer 2.0 precedence (semver's own compare is ~50x slower).

    A release sorts above its pre-releases; numeric identifiers sort numerically and below
    alphanumeric ones; a longer identifier list wins when the shorter is its prefix.
    """
    version = tag_version(tag)
    if version.prerelease is None:
        return (version.major, version.minor, version.patch, 1, ())
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.prerelease.split("."))
    return (version.major, version.minor, version.patch, 0, parts)


def is_release(tag: str) -> bool:
    return tag_key(tag)[3] == 1


def sort_tags_desc(tags: list[str]) -> list[str]:
    """Highest SemVer first: v1.10.0 > v1.9.0 > v1.9.0-rc.1."""
    return sorted(tags, key=tag_key, reverse=True)


def latest_tag(tags: list[str]) -> str | None:
    """The highest release; pre-releases only count when no release exists."""
    if not tags:
        return None
    releases = [t for t in tags if is_release(t)]
    return max(releases or tags, key=tag_key)


def highest_tag(tags: list[str]) -> str | None:
    return max(tags, key=tag_key) if tags else None


def next_tag(tags: list[str]) -> str:
    """The next minor after the highest tag (pre-releases included); v0.1.0 for the first."""
    highest = highest_tag(tags)
    return "v0.1.0" if highest is None else f"v{tag_version(highest).bump_minor()}"


def check_hex(text: str) -> str:
    """A full SHA-256 hex digest (optionally `sha256:`-prefixed, any case) -> 64 lowercase hex.

    Every blob path is built from the result, so nothing else can reach the filesystem.
    """
    if isinstance(text, str):
        bare = text[len(HASH_PREFIX):] if text[:len(HASH_PREFIX)].lower() == HASH_PREFIX else text
        bare = bare.lower()
        if HEX_RE.fullmatch(bare):
            return bare
    raise BadReferenceError(f"invalid hash {_show(text)}: expected 64 hex digits (sha256)")


def is_hash_ref(text: str) -> bool:
    return text[:len(HASH_PREFIX)].lower() == HASH_PREFIX


def looks_like_path(text: str, *, existing_files: bool = True) -> bool:
    """True when `text` names a file: `file://…`, anything with a `/`, or (with existing_files) an existing file.

    `sha256:…` never does. The one rule for "is this a path" (the CLI asks it before sending a
    path to the mixer as an absolute one).
    """
    if is_hash_ref(text):
        return False
    if text.startswith("file://") or "/" in text or os.sep in text:
        return True
    return existing_files and _is_file(text)


def parse_ref(text: str) -> Ref:
    """Classify a reference string.

    Order: `sha256:` -> HashRef; `file://`, a `/`, or an existing file -> PathRef;
    otherwise `name[:tag]` (tag `latest` -> None).
    """
    if not isinstance(text, str) or text == "":
        raise BadReferenceError(f"empty reference: expected {_FORMS}")
    if is_hash_ref(text):
        return parse_hash_ref(text)
    if text.startswith("file://"):
        path = unquote(text[len("file://"):])
        if not path:
            raise BadReferenceError(f"bad reference {_show(text)}: file:// needs a path")
        return PathRef(Path(path))
    if looks_like_path(text):
        return PathRef(Path(text))
    return parse_name_ref(text)


def parse_store_ref(text: str) -> NameRef | HashRef | PathRef:
    """Like parse_ref, but a bare word is always a store name, even if a file of that name exists.

    The store resolves names; a local file that happens to share a name must not shadow it.
    """
    if isinstance(text, str) and text and not looks_like_path(text, existing_files=False) and not is_hash_ref(text):
        return parse_name_ref(text)
    return parse_ref(text)


def store_ref_problem(text: str) -> str | None:
    """Why `text` is not a store reference (name, name:tag, name:latest, sha256:<hex>; no path), or None.

    What a scenario's `spec:` must be: validation and the store's resolver read it with this grammar.
    """
    if text == "":
        return f"empty reference: expected {_STORE_FORMS}"
    if not is_hash_ref(text) and looks_like_path(text, existing_files=False):
        return f"{_show(text)} is a file path, not a store reference: expected {_STORE_FORMS}"
    try:
        if is_hash_ref(text):
            parse_hash_ref(text)
        else:
            parse_name_ref(text, forms=_STORE_FORMS)
    except BadReferenceError as error:
        return str(error)
    return None


def check_spec_reference(value: object) -> str | None:
    """Why `value` is not a spec reference (`name`, `name:tag`, `name:latest`, `sha256:<hex>`), or None.

    The store's own grammar, so what validates is what the store resolves.
    """
    if not isinstance(value, str):
        return f"must be a spec reference like visa:v1.0.0; found {describe(value)}"
    return store_ref_problem(value)


def tag_problem(text: object) -> str | None:
    """Why `text` cannot be a tag (a `version:`), or None: canonical_tag's own verdict."""
    try:
        canonical_tag(text)  # type: ignore[arg-type]
    except InvalidNameError as error:
        return str(error)
    return None


def parse_hash_ref(text: str) -> HashRef:
    digits = text[len(HASH_PREFIX):].lower()
    if not _HEX_PREFIX_RE.fullmatch(digits) or len(digits) < MIN_PREFIX:
        raise BadReferenceError(
            f"bad reference {_show(text)}: expected sha256: followed by {MIN_PREFIX} to 64 hex digits (0-9, a-f)"
        )
    return HashRef(digits)


def parse_name_ref(text: str, *, forms: str = _FORMS) -> NameRef:
    name, sep, tag = text.partition(":")
    if not _NAME_RE.fullmatch(name):
        raise BadReferenceError(
            f"bad reference {_show(text)}: name {_show(name)} must be 1-64 characters of lowercase a-z, 0-9, "
            f"'.', '_', '-' (starting with a letter or digit); valid forms: {forms}"
        )
    if not sep or tag == LATEST:
        return NameRef(name, None)
    try:
        return NameRef(name, canonical_tag(tag))
    except InvalidNameError as error:
        raise BadReferenceError(f"bad reference {_show(text)}: {error}; or use {name}:latest") from None


def _is_file(text: str) -> bool:
    try:
        return os.path.isfile(text)
    except (ValueError, OSError):
        return False


def _show(value: object) -> str:
    """repr() keeps control characters and lookalikes visible in one-line messages; long input is cut."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def _tag_reason(text: object, reason: str) -> str:
    return f"invalid tag {_show(text)}: {reason}"
