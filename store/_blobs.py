"""Immutable blobs addressed by the SHA-256 of their bytes, sharded as `blobs/ab/<hex>`.

Writes are atomic (temp file in the shard dir, fsync, os.replace, fsync of the dir) so a crash
never leaves a half-written blob under its final name. Reads re-hash, so a blob whose bytes
rotted on disk is reported and never used.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fluxmix.errors import BadReferenceError, CorruptBlobError, NotFoundError, StoreError
from fluxmix.refs import HEX_RE, check_hex

TEMP_PREFIX = ".tmp-"
_DIR_MODE = 0o700
_BLOB_MODE = 0o444  # read-only, as git does for loose objects: blobs never change
_CHUNK = 1 << 20
_PREFIX_RE = re.compile(r"[0-9a-f]{2,64}", re.ASCII)
_SHARD_RE = re.compile(r"[0-9a-f]{2}", re.ASCII)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class BlobFile:
    """One blob on disk, as listed for verify and gc."""

    hash: str
    path: Path
    size: int
    mtime: float


class BlobStore:
    """The files under `<home>/blobs`; knows nothing about names or tags."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        """`create` False (a read-only store) never makes the directory: a store without blobs reads as empty."""
        self.root = root
        if not create:
            return
        try:
            root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the blob directory {root}: {error.strerror or error}") from error

    def path_for(self, hex_digest: str) -> Path:
        """The blob's path; the digest is validated first, so it cannot escape root."""
        digest = check_hex(hex_digest)
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store `data` and return its hex digest; idempotent, atomic, safe across processes."""
        digest = sha256_hex(data)
        path = self.path_for(digest)
        if path.exists() and self._intact(path, digest):
            # Freshen the mtime (as git's freshen_loose_object does) so a gc that already
            # decided this blob was unreferenced keeps it inside its grace period.
            try:
                os.utime(path)
            except OSError:
                pass
            else:
                return digest
        try:
            self._write_atomic(path, data)
        except OSError as error:
            reason = error.strerror or error
            raise StoreError(f"cannot write blob sha256:{digest} under {self.root}: {reason}") from error
        return digest

    def get(self, hex_digest: str) -> bytes:
        """The blob's bytes, re-hashed; CorruptBlobError when they no longer match its name."""
        digest = check_hex(hex_digest)
        path = self.path_for(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob sha256:{digest} is not in the store") from None
        except OSError as error:
            raise StoreError(f"blob sha256:{digest} cannot be read: {error}") from error
        actual = sha256_hex(data)
        if actual != digest:
            raise CorruptBlobError(
                f"blob sha256:{digest} is corrupt: its bytes hash to sha256:{actual}; it will not be used "
                "(run `fluxmix store verify`, then re-import the file)"
            )
        return data

    def has(self, hex_digest: str) -> bool:
        return self.path_for(hex_digest).is_file()

    def check(self, blob: BlobFile) -> bool:
        """True when the file's bytes still hash to its name (streamed: blobs may be large)."""
        return self._intact(blob.path, blob.hash)

    def find_prefix(self, prefix: str) -> list[str]:
        """Digests starting with `prefix` (lowercase hex, >= 2 digits)."""
        if not _PREFIX_RE.fullmatch(prefix):
            raise BadReferenceError(f"invalid hash prefix {prefix!r}: expected 2 to 64 lowercase hex digits")
        shard = self.root / prefix[:2]
        try:
            names = os.listdir(shard)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith(prefix) and HEX_RE.fullmatch(n))

    def iter_blobs(self) -> Iterator[BlobFile]:
        """Every well-named blob file; stray files are ignored (never deleted) here."""
        for shard in sorted(self._shards()):
            for entry in sorted(os.scandir(shard), key=lambda e: e.name):
                if HEX_RE.fullmatch(entry.name) and entry.name[:2] == os.path.basename(shard):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed by a concurrent gc
                    if entry.is_file(follow_symlinks=False):
                        yield BlobFile(entry.name, Path(entry.path), st.st_size, st.st_mtime)

    def iter_temp_files(self) -> Iterator[tuple[Path, float]]:
        """Leftovers of interrupted writes, with their mtime."""
        for shard in self._shards():
            for entry in os.scandir(shard):
                if entry.name.startswith(TEMP_PREFIX):
                    try:
                        yield Path(entry.path), entry.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue

    def remove_if_older(self, path: Path, cutoff: float) -> bool:
        """Unlink unless the mtime moved past cutoff since it was listed (put_blob freshens it)."""
        try:
            if os.stat(path, follow_symlinks=False).st_mtime > cutoff:
                return False
            path.unlink()
        except FileNotFoundError:
            pass
        return True

    def remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def _shards(self) -> Iterator[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if _SHARD_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                yield entry.path

    def _intact(self, path: Path, digest: str) -> bool:
        hasher = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            return False
        return hasher.hexdigest() == digest

    def _write_atomic(self, path: Path, data: bytes) -> None:
        shard = path.parent
        if not shard.is_dir():
            shard.mkdir(mode=_DIR_MODE, exist_ok=True)
            _fsync_dir(self.root)
        temp = shard / f"{TEMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}-{os.urandom(4).hex()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), _BLOB_MODE)
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(shard)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; without it a crash can lose the new directory entry."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
