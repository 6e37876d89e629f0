"""Resolving a parsed reference (`name[:tag]`, `sha256:<prefix>`) to a blob, inside a transaction.

Callers pass the session, so an import can resolve its scenario's `spec:` and pin the answer in
the same write transaction, and an untag can check in its own what would stop resolving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fluxmix.errors import AmbiguousReferenceError, BadReferenceError, NotFoundError
from fluxmix.refs import (
    MIN_PREFIX,
    HashRef,
    NameRef,
    PathRef,
    Ref,
    canonical_tag,
    check_name,
    latest_tag,
    short_hash,
    sort_tags_desc,
    tag_key,
)

from ._blobs import BlobStore
from ._index import TagRow

# A bare word that could be a hash prefix: only `sha256:` makes it one, so a miss says so.
_HEX_WORD = re.compile(f"[0-9a-f]{{{MIN_PREFIX},64}}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A reference resolved to a blob; name/tag are filled when the index knows the hash."""

    kind: str
    name: str | None
    tag: str | None
    hash: str

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}" if self.name and self.tag else f"sha256:{self.hash}"


def resolve_in(session: Session, blobs: BlobStore, parsed: Ref, kind: str) -> Resolved:
    """A NameRef or HashRef -> Resolved, read in the caller's transaction; a PathRef is refused."""
    if isinstance(parsed, PathRef):
        raise BadReferenceError(
            f"{str(parsed.path)!r} is a file path, not a store reference; import it first "
            f"(fluxmix {kind} import) or use name:tag or sha256:<hex>"
        )
    if isinstance(parsed, HashRef):
        return _resolve_hash(session, blobs, parsed, kind)
    if isinstance(parsed, NameRef):
        return _resolve_name(session, parsed, kind)
    raise BadReferenceError(f"not a reference: {parsed!r}")


def _resolve_name(session: Session, ref: NameRef, kind: str) -> Resolved:
    check_name(ref.name)
    exact = None if ref.tag in (None, "latest") else canonical_tag(ref.tag)
    query = select(TagRow.tag, TagRow.hash).where(TagRow.kind == kind, TagRow.name == ref.name)
    if exact is not None:
        found = session.scalar(query.with_only_columns(TagRow.hash).where(TagRow.tag == exact))
        if found is not None:
            return Resolved(kind, ref.name, exact, found)
    # latest, or a miss: every tag of the name (to pick from, or to list in the error)
    hashes: dict[str, str] = {tag: digest for tag, digest in session.execute(query)}
    if not hashes:
        if _HEX_WORD.fullmatch(ref.name) and ref.tag is None:
            raise NotFoundError(
                f"no {kind} named {ref.name!r} in the store; to name a blob by its hash, write sha256:{ref.name}"
            )
        raise NotFoundError(f"no {kind} named {ref.name!r} in the store{_known_names_hint(session, kind)}")
    tag = latest_tag(list(hashes)) if exact is None else exact
    if tag not in hashes:
        available = ", ".join(sort_tags_desc(list(hashes))[:10])
        raise NotFoundError(f"{kind} {ref.name} has no tag {tag}; available: {available}")
    return Resolved(kind, ref.name, tag, hashes[tag])


def _resolve_hash(session: Session, blobs: BlobStore, ref: HashRef, kind: str) -> Resolved:
    if ref.is_full:
        if not blobs.has(ref.prefix):
            raise NotFoundError(f"sha256:{ref.prefix} is not in the store")
        digest = ref.prefix
    else:
        matches = blobs.find_prefix(ref.prefix)
        if not matches:
            raise NotFoundError(f"no blob in the store starts with sha256:{ref.prefix}")
        if len(matches) > 1:
            shown = ", ".join(short_hash(m) for m in matches[:5])
            raise AmbiguousReferenceError(
                f"sha256:{ref.prefix} matches {len(matches)} blobs ({shown}); give more hex digits"
            )
        digest = matches[0]
    tags = list(session.scalars(select(TagRow).where(TagRow.kind == kind, TagRow.hash == digest)))
    if tags:
        best = max(tags, key=lambda r: (tag_key(r.tag), r.name))
        return Resolved(kind, best.name, best.tag, digest)
    return Resolved(kind, None, None, digest)


def _known_names_hint(session: Session, kind: str) -> str:
    names = sorted(set(session.scalars(select(TagRow.name).where(TagRow.kind == kind))))
    if not names:
        return f" (the store has no {kind}s yet)"
    return f"; known: {', '.join(names[:10])}{', …' if len(names) > 10 else ''}"
