"""JSON Lines as file-out writes them and reads their ids back (https://jsonlines.org).

One JSON object per line, UTF-8, compact separators; kept apart from the gears so the log sink and
tests encode exactly as file-out does.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Mapping

READ_CHUNK = 64 * 1024


def json_default(value: Any) -> Any:
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
_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=json_default)
COMPACT_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_json_line(record: Mapping[str, Any]) -> bytes:
    """One compact JSON line (with its newline). NaN and Infinity are refused: not JSON."""
    return _LINE_ENCODER.encode(record).encode("utf-8") + b"\n"


def _line_text_encoder() -> Callable[[Any], str]:
    """`record` as the text of one line (no newline), exactly as encode_json_line writes it.

    JSONEncoder.encode builds a new C encoder on every call; a batch reuses one. It is built
    without circular-reference markers (a failed encode would leave stale ones behind): what a
    wire carries cannot be circular (freeze_body refuses it), and anything that still fails here
    is encoded again by encode_json_line, which raises the usual error."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain path
        return lambda record: _LINE_ENCODER.encode(record)
    encoder = make(None, json_default, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    join = "".join

    def encode(record: Any) -> str:
        return join(encoder(record, 0))

    return encode


encode_line_text = _line_text_encoder()


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

    def extend(self, message_ids: Iterable[str]) -> None:
        """`add` for each, in order (a batch's ids: the loop without a call per id)."""
        ids = self._ids
        for message_id in message_ids:
            if message_id in ids:
                ids.move_to_end(message_id)
            else:
                ids[message_id] = None
        for _ in range(len(ids) - self.size):
            ids.popitem(last=False)

