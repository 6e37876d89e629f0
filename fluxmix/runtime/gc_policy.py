"""The cyclic garbage collector's policy for a process that runs scenarios.

With CPython's default thresholds a young collection runs every 700 net allocations of tracked
objects. A busy memory pipeline allocates a few per message per hop (the Message, its body, the
pairs a batch is built from), and its wires keep up to `queue_size` messages each alive, so the
young generation refills at once and every tenth young collection scans the older ones again:
measured at 6-7 us of the 18 us of CPU per message of the 5-gear chain (bench/memory.py), more
than any gear. Almost every message is freed by reference counting the moment its last wire lets
go of it; only reference cycles need the collector, and they are rare on the message path. So
the process that runs scenarios raises the young generation's threshold: collections become
rare, and a cycle waits at most that many allocations longer to be freed.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

# Net allocations between young collections (CPython's default: 700). Above what the wires of a
# typical scenario hold in flight (1,024 messages per wire), so queued messages alone do not
# trigger collections; low enough that uncollected cycles stay a few MiB at most.
YOUNG_THRESHOLD = 20_000


@contextlib.contextmanager
def throughput_gc(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Raise the young generation's threshold to `young` (never lower it) while the block runs;
    the previous thresholds come back afterwards."""
    before = gc.get_threshold()
    if before[0] and before[0] < young:  # 0: automatic collection is off; leave it so
        gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
