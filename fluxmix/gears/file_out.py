"""`file-out`: a JSON Lines file as a sink, each message exactly once.

Relative paths are relative to the mixer's working directory.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from fluxmix.errors import GearError
from fluxmix.gears.ack_log import (
    ACK_LOG_COMPACT_BYTES,
    FLUSHES_IN_DOUBT,
    MAX_IN_DOUBT,
    RECENT_HANDLED,
    AckRecord,
    ack_log_path,
    read_ack_log,
    truncate_unacknowledged,
)
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.jsonlines import RecentIds, encode_json_line, encode_line_text, tail_ids
from fluxmix.message import Message

# file-out with `dedupe` logs how many duplicates it skipped at most this often (seconds).
DEDUPE_SUMMARY_INTERVAL = 60.0


class FileOut(Gear):
    """Appends each body as one JSON line to `path`, each message exactly once.

    Each line is written with one write(2) (and fsynced when `fsync` is set) before `handle`
    returns; a batch's lines with one write(2) for the batch. A failed write is truncated away so the file never holds a torn line.

    Exactly once across a crash, by the ack protocol: before the runtime acknowledges what this
    gear handled it calls `flush()`, which appends to the sidecar `<path>.ack` one record: the
    file's size (every line below it belongs to a message handled so far) and the ids of the
    messages whose ack may still be on its way (per input: the batch being recorded and the
    input's FLUSHES_IN_DOUBT batches before it, whose acks may still sit in the client's buffer).
    At start the file is cut back to the last record's size: that tail was never acknowledged,
    so the wire delivers it again and the redelivery writes it back; a redelivered message whose id the record names is
    already below the offset and is skipped. The file's bytes are what they were without the
    log: no marker, no id unless `envelope`.

    With `dedupe: N` a message whose id is among the last N ids written is skipped as well: the
    window is rebuilt from the file's last N lines at start (hence `envelope: true`), for ids that
    come again from further away than the ack protocol looks (e.g. a replay by a source).
    """

    type = "file-out"
    description = ("Append each message body as one JSON line to a file (bytes as base64, dates as ISO 8601); "
                   "exactly once across a crash through the sidecar <path>.ack.")
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
                "description": "fsync every line and the ack log before a message is acked (survives power loss; much slower). "
                "Default: written to the OS before the ack (survives a crash of the mixer).",
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
                "description": "Also skip a message whose id is among the last N lines of the file (re-read at "
                "start, so it needs envelope: true), for ids that come back from further away than a crash's "
                "redelivery, which the ack log <path>.ack already handles. 0: off.",
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
        self.ack_path = ack_log_path(self.path)
        self.fsync: bool = bool(self.config.get("fsync", False))
        self.envelope: bool = bool(self.config.get("envelope", False))
        self.dedupe: int = int(self.config.get("dedupe", 0))
        self._fd: int | None = None
        self._ack_fd: int | None = None
        self._ack_size = 0
        self._identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file being written
        self._end = 0  # the file's size after our last write
        self._recent: RecentIds | None = None
        # Ack protocol state (see the class docstring); keyed by the task that handles (a wire's
        # consumer), because each input acknowledges on its own.
        self._unflushed: dict[asyncio.Task[Any] | None, list[str]] = {}
        self._unacked: dict[asyncio.Task[Any] | None, deque[list[str]]] = {}  # its last flushes
        self._in_doubt_before: dict[str, None] = {}  # named by the last record of the previous run
        self._handled = RecentIds(RECENT_HANDLED)
        self._committed: AckRecord | None = None
        self._commit_lock = asyncio.Lock()
        self.written = 0
        self.skipped = 0  # duplicates not written again
        self.cut_bytes = 0  # unacknowledged tail removed at start
        self._skipped_logged = 0
        self._summary_at = time.monotonic()
        # In a fleet (fluxmix.fleet.claims): one claim per message id across the members, and the
        # lines written since the last record, so a line whose claim was taken over can be removed.
        fleet = getattr(ctx, "claims", None)
        self._claims = fleet.for_gear(ctx.scenario_name, name) if fleet is not None else None
        self._tail: list[tuple[str, bytes]] = []
        self._buffered: dict[str, Message] = {}  # handed over, claimed and written at the next flush
        self._fleet_lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise GearError(self.name, f"cannot open {str(self.path)!r} for appending: {exc.strerror or exc}") from None
        try:
            # One writer per file: two would each record offsets that cut the other's acked lines.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise GearError(self.name, f"{str(self.path)!r} is already written by another file-out (in this "
                                       "mixer or another process): one file-out per file") from None
        self._fd = fd
        if self._claims is not None and not self.envelope:
            self._close()
            raise GearError(self.name, "in a fleet, file-out needs envelope: true (a restarted member finds "
                                       "which lines of its unacknowledged tail it committed by their ids)")
        tail = await asyncio.to_thread(self._read_tail) if self._claims is not None else []
        try:
            await asyncio.to_thread(self._recover)
        except OSError as exc:
            self._close()
            raise GearError(self.name, f"cannot recover {str(self.path)!r} from {str(self.ack_path)!r}: "
                                       f"{exc.strerror or exc}") from None
        except BaseException:
            self._close()
            raise
        if tail and self.cut_bytes:
            await self._restore_committed(tail)
        if self.dedupe:  # after the cut: ids of lines that were cut are not written
            ids = await asyncio.to_thread(tail_ids, self.path, self.dedupe)
            self._recent = RecentIds(self.dedupe, ids)
            self.ctx.log.debug("gear %s: dedupe remembers %d ids from the end of %s", self.name, len(self._recent), self.path)

    def _recover(self) -> None:
        """Cut the unacknowledged tail, close a torn line, and start a fresh ack log (blocking)."""
        assert self._fd is not None
        record = read_ack_log(self.ack_path)
        cut, why_not = truncate_unacknowledged(self.path, record)
        if cut:
            self.cut_bytes = cut
            self.ctx.log.info("gear %s: cut the last %d bytes of %s: written but never acknowledged; "
                              "they come again", self.name, cut, self.path)
        elif why_not and os.fstat(self._fd).st_size:
            self.ctx.log.warning("gear %s: %s: nothing cut (%s); a message written but not acknowledged "
                                 "before a crash may appear twice", self.name, self.path, why_not)
        if record is not None and not why_not:
            self._in_doubt_before = dict.fromkeys(record.ids[-MAX_IN_DOUBT:])
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)
        self._end = st.st_size
        if st.st_size:
            with open(self.path, "rb") as f:
                f.seek(st.st_size - 1)
                if f.read(1) != b"\n":
                    self.ctx.log.warning("gear %s: %s ended with a partial line; closing it with a newline", self.name, self.path)
                    self._write(b"\n")
        self._rewrite_ack_log(self._record(carried=True))

    def _read_tail(self) -> list[tuple[str, bytes]]:
        """Fleet: the complete lines after the last record's offset, with their ids (blocking)."""
        record = read_ack_log(self.ack_path)
        if record is None:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(record.offset)
                data = f.read()
        except OSError:
            return []
        lines = []
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn: never committed
            try:
                message_id = json.loads(line).get("id")
            except (ValueError, AttributeError):
                continue
            if isinstance(message_id, str):
                lines.append((message_id, line))
        return lines

    async def _restore_committed(self, tail: list[tuple[str, bytes]]) -> None:
        """Fleet: the cut tail held lines this member committed fleet-wide and was killed before
        recording locally: they are written back (in order), the rest stays cut."""
        assert self._claims is not None
        try:
            keep = await self._claims.committed_here(i for i, _ in tail)
        except Exception as exc:
            self._close()
            raise GearError(self.name, f"cannot reconcile {str(self.path)!r} with the fleet's claims: {exc}") from None
        kept = [(i, line) for i, line in tail if i in keep]
        if not kept:
            return
        for message_id, line in kept:
            self._write(line)
            self._handled.add(message_id)
        await asyncio.to_thread(self._rewrite_ack_log, self._record(carried=True))
        self.ctx.log.info("gear %s: kept %d line(s) of the cut tail of %s: committed by this member before the "
                          "crash", self.name, len(kept), self.path)

    async def _handle_fleet(self, port: str, messages: Sequence[Message]) -> None:
        """Fleet: keep the batch until flush(), which claims, writes and commits a whole round with
        two KV round trips (see fleet.claims). Durable wires hand messages over one at a time; a
        round trip per message would let every other gear of the process run in between."""
        for message in messages:
            if self._is_duplicate(message.id):
                await self.handle(port, message, local=True)  # the local duplicate path
            elif message.id not in self._buffered:
                self._buffered[message.id] = message

    async def _write_claimed(self) -> None:
        """Fleet: claim what was handed over since the last flush; write only what this member won
        (the rest another member wrote). A failure leaves what is not written yet for the next flush."""
        assert self._claims is not None and self._fd is not None
        if not self._buffered:
            return
        claimed = list(self._buffered)  # another input may hand more over while the claims travel
        mine = await self._claims.claim(claimed)
        task = asyncio.current_task()
        for message_id in claimed:
            message = self._buffered[message_id]
            if message_id not in mine:
                self.skipped += 1  # another member committed it: its line is in that member's file
            else:
                line = encode_json_line(self.record(message))
                try:
                    self._write(line)
                    if self.fsync:
                        await asyncio.to_thread(os.fsync, self._fd)
                except OSError as exc:
                    raise GearError(self.name, f"cannot write to {str(self.path)!r}: {exc.strerror or exc}") from None
                self._tail.append((message_id, line))
                self._unflushed.setdefault(task, []).append(message_id)
                self.written += 1
                if self._recent is not None:
                    self._recent.add(message_id)
            self._handled.add(message_id)
            del self._buffered[message_id]

    async def _commit_fleet(self) -> None:
        """Fleet: claim and write the round, then mark this member's claims done before the local
        record; a line whose claim was taken over meanwhile is removed from the tail first (it is
        another member's now)."""
        assert self._claims is not None
        await self._write_claimed()
        if not self._tail:
            return
        lost = await self._claims.commit(i for i, _ in self._tail)
        if lost:
            await asyncio.to_thread(self._drop_from_tail, lost)
        self._tail.clear()

    def _drop_from_tail(self, lost: set[str]) -> None:
        assert self._fd is not None
        start = self._end - sum(len(line) for _, line in self._tail)
        os.ftruncate(self._fd, start)
        self._end = start
        for message_id, line in self._tail:
            if message_id not in lost:
                self._write(line)
        for ids in self._unflushed.values():
            ids[:] = [i for i in ids if i not in lost]
        self.written -= len(lost)

    def _record(self, *, carried: bool = False) -> AckRecord:
        """What is true now: the file's size and the ids whose ack may be outstanding: this run's,
        plus (`carried`, for the log's first record only) those still in doubt from before."""
        assert self._fd is not None
        ids: dict[str, None] = dict(self._in_doubt_before) if carried else {}
        for groups in self._unacked.values():
            for handled in groups:
                ids.update(dict.fromkeys(handled))
        for handled in self._unflushed.values():
            ids.update(dict.fromkeys(handled))
        return AckRecord(self._end, *self._identity, tuple(ids))

    def _rewrite_ack_log(self, record: AckRecord) -> None:
        """Replace the ack log by one record: write a temporary file, then rename it over (atomic)."""
        tmp = self.ack_path.with_name(f".{self.ack_path.name}.tmp")
        data = record.encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, self.ack_path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            dir_fd = os.open(self.ack_path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        if self._ack_fd is not None:
            os.close(self._ack_fd)
        self._ack_fd = os.open(self.ack_path, os.O_WRONLY | os.O_APPEND)
        self._ack_size = len(data)
        self._committed = record

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
            self._end = before
            raise
        self._end = before + len(data)  # where the file ends: what the next record says

    def record(self, message: Message) -> Mapping[str, Any]:
        if not self.envelope:
            return message.body
        return {"id": message.id, "origin": message.origin, "ts": message.ts, "headers": message.headers, "body": message.body}

    def _is_duplicate(self, message_id: str) -> bool:
        if message_id in self._handled or message_id in self._in_doubt_before:
            return True
        return self._recent is not None and message_id in self._recent

    async def handle(self, port: str, message: Message, *, local: bool = False) -> None:
        if self._fd is None:
            raise GearError(self.name, "not started")
        if self._claims is not None and not local:
            await self._handle_fleet(port, [message])
            return
        task = asyncio.current_task()
        if self._is_duplicate(message.id):
            self.skipped += 1
            self.ctx.log.debug("gear %s: skipped duplicate message %s", self.name, message.id)
            self._in_doubt_before.pop(message.id, None)  # in doubt again, as this input's own
            self._unflushed.setdefault(task, []).append(message.id)
            self._handled.add(message.id)
            if time.monotonic() - self._summary_at >= DEDUPE_SUMMARY_INTERVAL:
                self._log_skipped()
            return
        line = encode_json_line(self.record(message))
        try:
            self._write(line)
            # before any await: a flush by another input from now on covers this line
            self._unflushed.setdefault(task, []).append(message.id)
            self._handled.add(message.id)
            if self.fsync:
                await asyncio.to_thread(os.fsync, self._fd)
        except OSError as exc:
            raise GearError(self.name, f"cannot write to {str(self.path)!r}: {exc.strerror or exc}") from None
        self.written += 1
        if self._recent is not None:
            self._recent.add(message.id)

    async def flush(self) -> None:
        """Record how far the file is acknowledged (called before the runtime acks; see the class doc)."""
        if self._fd is None:
            return
        task = asyncio.current_task()
        if self._claims is not None:  # fleet: claims committed first; no write can slip in between
            async with self._fleet_lock:
                await self._commit_fleet()
                write = self._pending_write()
                if write is not None:
                    if self.fsync:
                        await asyncio.to_thread(self._run, functools.partial(os.fsync, self._fd))
                    await asyncio.to_thread(self._run, write)
                self._recorded(task)
            return
        if not self.fsync:  # no await on this path: nothing can slip in between, no lock needed
            write = self._pending_write()
            if write is not None:
                self._run(write)
            self._recorded(task)
            return
        async with self._commit_lock:  # records must be appended in the order they were taken
            write = self._pending_write()
            if write is not None:
                await asyncio.to_thread(self._run, functools.partial(os.fsync, self._fd))
                await asyncio.to_thread(self._run, write)
            self._recorded(task)

    def _pending_write(self) -> Callable[[], Any] | None:
        """How to record the state now (None: already recorded). Decided on the loop: the ids
        must not be read from another thread."""
        record = self._record()
        if record == self._committed:
            return None
        if self._ack_size >= ACK_LOG_COMPACT_BYTES:
            return functools.partial(self._rewrite_ack_log, self._record(carried=True))
        return functools.partial(self._append, record)

    def _run(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except OSError as exc:
            raise GearError(self.name, f"cannot record progress in {str(self.ack_path)!r}: {exc.strerror or exc}") from None

    def _recorded(self, task: asyncio.Task[Any] | None) -> None:
        """This input's messages now wait only for their acks (the task cannot have handled more
        meanwhile: it is the one flushing)."""
        mine = self._unflushed.pop(task, None)
        if mine:
            self._unacked.setdefault(task, deque(maxlen=FLUSHES_IN_DOUBT)).append(mine)

    def _append(self, record: AckRecord) -> None:
        assert self._ack_fd is not None
        data = record.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._ack_fd, view):]
        if self.fsync:
            os.fsync(self._ack_fd)
        self._ack_size += len(data)
        self._committed = record

    async def handle_batch(self, port: str, messages: Sequence[Message]) -> None:
        """As `handle` per message, with the lines of a batch written by one write(2).

        The lines are encoded first, indexing the batch (so the message in hand stays the first
        one), then written at once: a failed write is truncated away and fails the first message
        (the wire retries it alone through `handle`, then hands the rest over again, so none is
        written twice). A message that cannot be encoded, or a duplicate, ends the run: the lines
        before it are written, then it and the rest go through the per-message path, so it fails
        (or is skipped) alone. With `fsync` every line goes through `handle`, synced in turn."""
        if self._claims is not None and self._fd is not None:
            await self._handle_fleet(port, messages)
            return
        if self.fsync or self._fd is None:
            for message in messages:
                await self.handle(port, message)
            return
        n = len(messages)
        lines: list[str] = []
        ids: dict[str, None] = {}  # in order; a repeat inside the batch is a duplicate too
        encode, record, envelope = encode_line_text, self.record, self.envelope
        handled, in_doubt, recent = self._handled, self._in_doubt_before, self._recent  # _is_duplicate, inlined
        append = lines.append
        for i in range(n):
            message = messages[i]
            message_id = message.id
            if (message_id in ids or message_id in handled or message_id in in_doubt
                    or (recent is not None and message_id in recent)):
                break
            try:
                append(encode(record(message) if envelope else message.body))
            except Exception:
                break  # encoded again below, per message, to fail it with the usual error
            ids[message_id] = None
        if lines:
            lines.append("")  # the last line's newline
            try:
                self._write("\n".join(lines).encode("utf-8"))
            except OSError as exc:
                raise GearError(self.name, f"cannot write to {str(self.path)!r}: {exc.strerror or exc}") from None
            # before any await: a flush by another input from now on covers these lines
            self._unflushed.setdefault(asyncio.current_task(), []).extend(ids)
            self._handled.extend(ids)
            if self._recent is not None:
                self._recent.extend(ids)
            self.written += len(ids)
        done = len(ids)
        if done == n:
            return
        # The rest one by one; iterating the batch makes each the message in hand (what fails).
        for i, message in enumerate(messages):
            if i >= done:
                await self.handle(port, message)

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
        try:
            if self._fd is not None:
                # what was handled is in the file: recording it is safe either way (a message
                # whose ack did not go out is named in the record and skipped when it comes again)
                await self.flush()
        finally:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        ack_fd, self._ack_fd = self._ack_fd, None
        try:
            if fd is not None and self.fsync:
                os.fsync(fd)
        finally:
            for each in (fd, ack_fd):
                if each is not None:
                    os.close(each)

