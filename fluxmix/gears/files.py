"""`file-out` and `file-in`: JSON Lines files as a sink and a source.

One JSON object per line (https://jsonlines.org), UTF-8, compact separators. Relative paths are
relative to the mixer's working directory.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Mapping, Sequence

from fluxmix.errors import GearError
from fluxmix.gears.base import Gear, Port
from fluxmix.message import Message

# file-in saves its offset at least this often (seconds) and every this many lines.
CHECKPOINT_INTERVAL = 0.5
CHECKPOINT_EVERY = 1000
READ_CHUNK = 64 * 1024
# file-out with `dedupe` logs how many duplicates it skipped at most this often (seconds).
DEDUPE_SUMMARY_INTERVAL = 60.0


def _json_default(value: Any) -> Any:
    """JSON for the few non-JSON values a body can hold after msgpack or a python gear.

    bytes become standard base64 text (as Go's encoding/json does), dates ISO 8601, sets lists.
    Anything else is an error for that message rather than a silent str().
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    raise TypeError(f"a {type(value).__name__} value cannot be written as JSON")


# One encoder for every line: json.dumps with non-default options builds a new one per call.
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default)


def encode_json_line(record: Mapping[str, Any]) -> bytes:
    """One compact JSON line (with its newline). NaN and Infinity are refused: not JSON."""
    return _LINE_ENCODER.encode(record).encode("utf-8") + b"\n"


def tail_ids(path: Path, count: int, *, block_size: int = READ_CHUNK) -> list[str]:
    """Message ids of the last `count` complete envelope lines of `path`, oldest first.

    Reads backwards from the end in blocks, so the cost is the size of those lines, never the
    size of the file. A last line without its newline (torn by a crash: that message was never
    acked, so it comes again) is not counted; lines that are not envelopes (not JSON, no string
    `id` next to a `body`) take a place in the window but give no id.
    """
    if count <= 0:
        return []
    blocks: list[bytes] = []
    try:
        with open(path, "rb") as f:
            pos, newlines = os.fstat(f.fileno()).st_size, 0
            # count + 1 newlines: the one before the window's first line marks where that line starts
            while pos > 0 and newlines <= count:
                step = min(block_size, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                blocks.append(block)
                newlines += block.count(b"\n")
    except FileNotFoundError:
        return []
    data = b"".join(reversed(blocks))
    data = data[: data.rfind(b"\n") + 1]  # drop a torn last line
    # with count + 1 newlines read, a first piece that is the tail of an older line falls off here
    lines = data.split(b"\n")[:-1][-count:]
    ids: list[str] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # includes UnicodeDecodeError
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str) and "body" in record:
            ids.append(record["id"])
    return ids


class RecentIds:
    """The last `size` ids written, in write order: O(size) memory, O(1) per message."""

    def __init__(self, size: int, ids: Iterable[str] = ()) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        for message_id in ids:
            self.add(message_id)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, message_id: str) -> None:
        self._ids[message_id] = None
        self._ids.move_to_end(message_id)  # an id seen again (a file written without dedupe) is recent
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


class FileOut(Gear):
    """Appends each body as one JSON line to `path`.

    Each line is written with one write(2) and, when `fsync` is set, fsynced before `handle`
    returns, so "handled" (and the ack on a durable wire) means the line reached the file. A
    failed write is truncated away so the file never holds a torn line; a torn last line left by
    a crash is closed with a newline on start.

    With `dedupe: N` a message whose id is among the last N ids written is skipped: standard wires
    deliver at least once, and after a crash the batch the sink wrote but had not yet acked comes
    again with the same ids. The window is rebuilt from the file's last N lines at start (so it
    survives a crash; hence `envelope: true`), and it holds exactly what those lines hold.
    """

    type = "file-out"
    description = "Append each message body as one JSON line to a file (bytes as base64, dates as ISO 8601)."
    inputs = (Port("in", "messages to write", required=True),)
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "description": "File to append to, relative to the mixer's working directory; parent directories are created.",
            },
            "fsync": {
                "type": "boolean",
                "default": False,
                "description": "fsync after every line (survives power loss; much slower). Default: flushed to the OS per line.",
            },
            "envelope": {
                "type": "boolean",
                "default": False,
                "description": "Write the whole message {id, origin, ts, headers, body} instead of the body alone "
                "(needed by dedupe: the id must be in the file).",
            },
            "dedupe": {
                "type": "integer",
                "minimum": 0,
                "default": 0,
                "description": "Skip a message whose id is among the last N written (exactly-once output over "
                "at-least-once wires; the ids are re-read from the file's last N lines at start, so it needs "
                "envelope: true). N must cover what the sink writes between a message and its redelivery: "
                "a fetch batch plus the throughput times the ack wait. 0: off.",
            },
        },
    }

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        if config.get("dedupe", 0) > 0 and not config.get("envelope", False):
            return [("dedupe", "dedupe needs envelope: true: the message id must be in the file to survive a crash")]
        return []

    def __init__(self, name: str, config: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(name, config, ctx)
        self.path = Path(self.config["path"]).expanduser()
        self.fsync: bool = bool(self.config.get("fsync", False))
        self.envelope: bool = bool(self.config.get("envelope", False))
        self.dedupe: int = int(self.config.get("dedupe", 0))
        self._fd: int | None = None
        self._recent: RecentIds | None = None
        self.written = 0
        self.skipped = 0  # duplicates not written again (dedupe)
        self._skipped_logged = 0
        self._summary_at = time.monotonic()

    async def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise GearError(self.name, f"cannot open {str(self.path)!r} for appending: {exc.strerror or exc}") from None
        self._fd = fd
        if self.dedupe:
            ids = await asyncio.to_thread(tail_ids, self.path, self.dedupe)
            self._recent = RecentIds(self.dedupe, ids)
            self.ctx.log.debug("gear %s: dedupe remembers %d ids from the end of %s", self.name, len(self._recent), self.path)
        size = os.fstat(fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    self.ctx.log.warning("gear %s: %s ended with a partial line; closing it with a newline", self.name, self.path)
                    self._write(b"\n")

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        before = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            try:
                os.ftruncate(self._fd, before)  # no torn line for the next write or a reader
            except OSError:
                pass
            raise

    def record(self, message: Message) -> Mapping[str, Any]:
        if not self.envelope:
            return message.body
        return {"id": message.id, "origin": message.origin, "ts": message.ts, "headers": message.headers, "body": message.body}

    async def handle(self, port: str, message: Message) -> None:
        if self._fd is None:
            raise GearError(self.name, "not started")
        recent = self._recent
        if recent is not None and message.id in recent:
            self.skipped += 1
            self.ctx.log.debug("gear %s: skipped duplicate message %s", self.name, message.id)
            if time.monotonic() - self._summary_at >= DEDUPE_SUMMARY_INTERVAL:
                self._log_skipped()
            return
        line = encode_json_line(self.record(message))
        try:
            self._write(line)
            if self.fsync:
                await asyncio.to_thread(os.fsync, self._fd)
        except OSError as exc:
            raise GearError(self.name, f"cannot write to {str(self.path)!r}: {exc.strerror or exc}") from None
        self.written += 1
        if recent is not None:
            recent.add(message.id)

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        """As `handle` per message (one write(2) per line, a failing line fails alone), without
        the per-message call; with `fsync` it is `handle` itself, each line synced in turn."""
        if self.fsync or self._fd is None:
            for message in messages:
                await self.handle(port, message)
            return
        recent, write = self._recent, self._write
        for message in messages:
            if recent is not None and message.id in recent:
                await self.handle(port, message)  # the duplicate path: skipped and counted there
                continue
            try:
                write(encode_json_line(self.record(message)))
            except OSError as exc:
                raise GearError(self.name, f"cannot write to {str(self.path)!r}: {exc.strerror or exc}") from None
            self.written += 1
            if recent is not None:
                recent.add(message.id)

    def _log_skipped(self) -> None:
        """One info line per interval instead of one per duplicate (a redelivered batch is many)."""
        new = self.skipped - self._skipped_logged
        if new:
            self.ctx.log.info(
                "gear %s: skipped %d duplicate messages already in %s (%d since start)", self.name, new, self.path, self.skipped
            )
        self._skipped_logged, self._summary_at = self.skipped, time.monotonic()

    async def stop(self) -> None:
        self._log_skipped()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)


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
