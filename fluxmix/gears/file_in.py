"""`file-in`: a JSON Lines file as a source, optionally followed as it grows.

Relative paths are relative to the mixer's working directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Mapping

from fluxmix.errors import GearError
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.jsonlines import READ_CHUNK

# file-in saves its offset at least this often (seconds) and every this many lines.
CHECKPOINT_INTERVAL = 0.5
CHECKPOINT_EVERY = 1000



class FileIn(Gear):
    """Emits each JSON line of `path` as a message body; with `follow`, keeps reading appends.

    The checkpoint is the byte offset of the next unread line, and each message's position (so
    its id) is the byte offset where its line starts. With `follow`, only newline-terminated lines
    are read (a writer may be mid-line); without it, the file is complete and a last line without
    a newline counts. Malformed lines (not JSON, not an object, not UTF-8, longer than
    `max_line_bytes`) are logged with their line number, counted in `malformed`, and skipped: a
    source has no `error` port. A followed file that is truncated or replaced (rotation) is read
    again from its start.
    """

    type = "file-in"
    description = "Emit each JSON line of a file as a message; optionally follow appended lines."
    outputs = (Port("out", "one message per JSON line"),)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "description": "JSON Lines file to read, relative to the mixer's working directory.",
            },
            "follow": {
                "type": "boolean",
                "default": False,
                "description": "Keep reading lines appended to the file until stopped (like tail -F); default: stop at the end.",
            },
            "poll_interval": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 60,
                "default": 0.2,
                "description": "Seconds between checks for new lines when following.",
            },
            "read_from": {
                "enum": ["beginning", "end"],
                "default": "beginning",
                "description": "Where to start when there is no checkpoint yet; afterwards reading resumes at the checkpoint.",
            },
            "max_line_bytes": {
                "type": "integer",
                "minimum": 1,
                "default": 1048576,
                "description": "Longer lines are skipped as malformed (bounds memory).",
            },
        },
    }

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.path = Path(self.config["path"]).expanduser()
        self.follow: bool = bool(self.config.get("follow", False))
        self.poll_interval: float = float(self.config.get("poll_interval", 0.2))
        self.read_from: str = self.config.get("read_from", "beginning")
        self.max_line_bytes: int = int(self.config.get("max_line_bytes", 1048576))
        self.offset = 0  # byte offset of the next unread line: the checkpoint
        self.emitted = 0
        self.malformed = 0
        self._checkpoint: int | None = None
        self._file: BinaryIO | None = None
        self._buf = b""
        self._skipping = False  # inside an over-long line: discard until its newline
        self._lines_before: tuple[int, int] = (0, 0)  # (offset, newlines before it), for line numbers

    async def start(self) -> None:
        saved = await self.ctx.load_checkpoint()
        if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 0:
            self._checkpoint = saved
        elif saved is not None:
            self.ctx.log.warning("gear %s: ignoring unreadable checkpoint %r", self.name, saved)
        if self.path.is_dir():
            raise GearError(self.name, f"cannot read {str(self.path)!r}: it is a directory")
        if not self.follow:  # a followed file may appear later; a finite read needs it now
            try:
                self._open()
            except OSError as exc:
                raise GearError(self.name, f"cannot read {str(self.path)!r}: {exc.strerror or exc}") from None

    def _open(self) -> None:
        f = open(self.path, "rb")
        size = os.fstat(f.fileno()).st_size
        if self._checkpoint is not None:
            start = self._checkpoint
            if start > size:
                self.ctx.log.warning(
                    "gear %s: %s is shorter (%d bytes) than the checkpoint (%d): truncated or replaced; reading from the start",
                    self.name, self.path, size, start,
                )
                start = 0
        else:
            start = size if self.read_from == "end" else 0
        f.seek(start)
        self._file, self.offset, self._buf, self._skipping = f, start, b"", False
        self._lines_before = (0, 0)

    def _line_number(self, offset: int) -> int:
        """1-based line number of the line starting at `offset` (counted lazily, only for logs)."""
        known_at, count = self._lines_before
        if offset < known_at:
            known_at, count = 0, 0
        with open(self.path, "rb") as f:
            f.seek(known_at)
            remaining = offset - known_at
            while remaining > 0:
                chunk = f.read(min(READ_CHUNK, remaining))
                if not chunk:
                    break
                count += chunk.count(b"\n")
                remaining -= len(chunk)
        self._lines_before = (offset, count)
        return count + 1

    def _bad(self, offset: int, reason: str) -> None:
        self.malformed += 1
        self.ctx.log.warning("gear %s: %s line %d skipped: %s", self.name, self.path, self._line_number(offset), reason)

    def _parse(self, line: bytes, offset: int) -> dict[str, Any] | None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return None
        try:
            body = json.loads(line)
        except UnicodeDecodeError:
            self._bad(offset, "not UTF-8")
            return None
        except ValueError as exc:
            self._bad(offset, f"not JSON ({exc})")
            return None
        if not isinstance(body, dict):
            self._bad(offset, f"a JSON {type(body).__name__}, not an object")
            return None
        return body

    def _next_lines(self, at_eof_final: bool) -> list[tuple[int, bytes]]:
        """Complete lines in the buffer as (start offset, bytes); advances `offset` past them."""
        lines: list[tuple[int, bytes]] = []
        buf, pos = self._buf, 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            start = self.offset
            self.offset += nl + 1 - pos
            line, pos = buf[pos:nl], nl + 1
            if self._skipping:
                self._skipping = False
                continue
            lines.append((start, line))
        self._buf = buf[pos:]  # one copy per chunk, not one per line
        if len(self._buf) > self.max_line_bytes and not self._skipping:
            self._bad(self.offset, f"longer than max_line_bytes ({self.max_line_bytes})")
            self._skipping = True
        if self._skipping:  # drop what we hold of the over-long line; keep counting its bytes
            self.offset += len(self._buf)
            self._buf = b""
        if at_eof_final and self._buf:
            lines.append((self.offset, self._buf))
            self.offset += len(self._buf)
            self._buf = b""
        return lines

    def _rotated(self) -> bool:
        """True when the followed path now names another file, or ours shrank (truncated)."""
        assert self._file is not None
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return False  # mid-rotation: keep the old file until a new one appears
        mine = os.fstat(self._file.fileno())
        return (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev) or mine.st_size < self._file.tell()

    async def run(self) -> None:
        stopping = self.ctx.stopping
        # The last value saved; None until a first save, so a reset (read_from: end, a file
        # shorter than the checkpoint, a rotation) is recorded even before a line is read.
        saved_offset: int | None = self._checkpoint
        saved_at, since_save = time.monotonic(), 0
        try:
            while not stopping.is_set():
                if self._file is None:
                    try:
                        self._open()
                    except FileNotFoundError:
                        await self.wait_for_stop(self.poll_interval)
                        continue
                    except OSError as exc:
                        raise GearError(self.name, f"cannot read {str(self.path)!r}: {exc.strerror or exc}") from None
                chunk = self._file.read(READ_CHUNK)
                if chunk:
                    self._buf += chunk
                lines = self._next_lines(at_eof_final=not chunk and not self.follow)
                for start, line in lines:
                    if stopping.is_set():
                        self.offset = start  # this line and the ones after it stay unread
                        break
                    body = self._parse(line, start)
                    if body is not None:
                        await self.ctx.emit("out", body, position=start)
                        self.emitted += 1
                        since_save += 1
                if stopping.is_set():
                    break
                if since_save >= CHECKPOINT_EVERY or (self.offset != saved_offset and time.monotonic() - saved_at >= CHECKPOINT_INTERVAL):
                    await self.ctx.save_checkpoint(self.offset)
                    saved_offset, saved_at, since_save = self.offset, time.monotonic(), 0
                if chunk:
                    continue
                if not self.follow:
                    self.ctx.log.info("gear %s: read %s to its end (%d messages, %d malformed)", self.name, self.path, self.emitted, self.malformed)
                    break
                if self._rotated():
                    tail = self._file.read(READ_CHUNK)  # appended to the old file just before it moved
                    if tail:
                        self._buf += tail
                        continue
                    self.ctx.log.warning("gear %s: %s was truncated or replaced; reading it from the start", self.name, self.path)
                    self._file.close()
                    self._file = None
                    self._checkpoint = 0
                    continue
                if self.offset != saved_offset:
                    await self.ctx.save_checkpoint(self.offset)
                    saved_offset, saved_at, since_save = self.offset, time.monotonic(), 0
                await self.wait_for_stop(self.poll_interval)
        finally:
            if self.offset != saved_offset:
                await self.ctx.save_checkpoint(self.offset)

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
