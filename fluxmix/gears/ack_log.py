"""file-out's acknowledgement log: the sidecar `<path>.ack` that makes the sink exactly once.

A record says how far `path` is acknowledged; on start, what lies beyond it was never acknowledged
and is cut (`truncate_unacknowledged`), so a redelivery writes it once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fluxmix.gears.jsonlines import COMPACT_ENCODER

# the sidecar file next to the output
ACK_LOG_SUFFIX = ".ack"
ACK_LOG_COMPACT_BYTES = 1 << 20  # rewritten as its last record once it grows past this
# In-doubt ids carried from one run to the next are capped (oldest dropped first); the set is a
# batch per input wire in practice, this only bounds a log that says otherwise.
MAX_IN_DOUBT = 65_536
# How many of an input's earlier flushes a record still names, besides the batch it records: a
# wire sends a batch's acks after its flush, but they may wait in the client's buffer while the
# wire handles the next batches without yielding to the loop (nats-py writes from another task).
FLUSHES_IN_DOUBT = 2
# Ids handled during this run, remembered in memory to recognise a redelivery whose ack was lost
# while the mixer kept running (a NATS outage); never persisted.
RECENT_HANDLED = 8192


@dataclass(frozen=True, slots=True)
class AckRecord:
    """One commit of a file-out: `path` is acknowledged up to `offset` bytes.

    `ids` are the messages whose lines lie below `offset` but whose ack may not have reached the
    wire yet: after a crash they can come again and must be skipped, not written twice.
    `dev`/`ino` name the file the offset belongs to, so a file replaced meanwhile is never cut.
    """

    offset: int
    dev: int
    ino: int
    ids: tuple[str, ...] = ()

    def encode(self) -> bytes:
        ids = COMPACT_ENCODER.encode(list(self.ids))  # one per message on memory wires: kept cheap
        return f'{{"offset":{self.offset},"dev":{self.dev},"ino":{self.ino},"ids":{ids}}}\n'.encode()

    @classmethod
    def decode(cls, line: bytes) -> AckRecord | None:
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        numbers = [record.get(key) for key in ("offset", "dev", "ino")]
        ids = record.get("ids", [])
        counts = [n for n in numbers if isinstance(n, int) and not isinstance(n, bool) and n >= 0]
        if len(counts) != 3 or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return None
        offset, dev, ino = counts
        return cls(offset, dev, ino, tuple(ids))


def ack_log_path(path: Path) -> Path:
    return path.with_name(path.name + ACK_LOG_SUFFIX)


def read_ack_log(path: Path) -> AckRecord | None:
    """What the ack log at `path` says: the last record's offset, and the ids of its first and
    last records (the first, written whole when the log was started or compacted, carries the
    ids still in doubt from before; the ones appended after name only their own). None without
    a record.

    A torn last line (a crash mid-append) is not a record: that commit never finished, so
    nothing it would have covered was acknowledged.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    records = (AckRecord.decode(line) for line in data.split(b"\n")[:-1])  # past the last newline: torn
    valid = [record for record in records if record is not None]
    if not valid:
        return None
    first, last = valid[0], valid[-1]
    return dataclasses.replace(last, ids=tuple(dict.fromkeys(first.ids + last.ids)))


def truncate_unacknowledged(path: Path, record: AckRecord | None) -> tuple[int, str]:
    """Make `path` end where its acknowledged part ends; returns (bytes cut, why not cut or "").

    With a record for this very file (same device and inode) and the file at least that long,
    everything past `record.offset` was written but never acknowledged, so the wire delivers
    it again: it is cut, and the redelivery writes it back. Without a record (a file from before
    the ack log, or the log lost) or with one for another file (rotated or replaced while the
    mixer was down) or a file shorter than the record (truncated by hand, or lost in a power
    failure without fsync) nothing is cut, and the reason says why.
    """
    st = os.stat(path)
    if record is None:
        return 0, "no acknowledgement log"
    if (record.dev, record.ino) != (st.st_dev, st.st_ino):
        return 0, "the acknowledgement log names another file (replaced or rotated)"
    if st.st_size < record.offset:
        return 0, f"the file is shorter ({st.st_size} bytes) than acknowledged ({record.offset})"
    if st.st_size > record.offset:
        os.truncate(path, record.offset)
    return st.st_size - record.offset, ""


