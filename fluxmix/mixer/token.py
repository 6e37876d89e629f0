"""The API token the mixer generates by default, in a 0600 file under the fluxmix home.

Without a token, any web page the operator visits could drive the API; with one in a file only
the operator's user can read, `fluxmix mixer ...` on the same machine finds it by itself and a
browser cannot. The file keeps its token across restarts (scripts keep working); it is replaced
when it is unreadable, empty, or readable by anyone but its owner (then it may have leaked).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from fluxmix.errors import StoreError

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"
MAX_TOKEN_BYTES = 4096


def token_path(home: Path) -> Path:
    return Path(home) / TOKEN_FILE


def read_token(home: Path) -> str | None:
    """The token in `home`'s file when it is a private regular file of this user, else None."""
    path = token_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.getuid():
            return None
        text = os.read(fd, MAX_TOKEN_BYTES).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return text if text and text.isprintable() and " " not in text else None


def load_or_create_token(home: Path) -> str:
    """The token of `home`, generated (and written 0600, atomically) when there is no usable one."""
    existing = read_token(home)
    if existing:
        return existing
    path = token_path(home)
    if path.exists() or path.is_symlink():
        log.warning("%s is not a private file of this user (or is empty): writing a new API token", path)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, token.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as error:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StoreError(f"cannot write the API token to {path}: {error.strerror or error}") from None
    return token


__all__ = ["TOKEN_FILE", "load_or_create_token", "read_token", "token_path"]
