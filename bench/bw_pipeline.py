"""The bench pipeline as a bytewax 0.21.1 dataflow (imported only by `python -m bytewax.run`).

BW_N source messages made in batches of BW_BATCH, op.map adding a field, op.filter, and a sink
appending one JSON line per message with one write each; the sink writes BW_STATS at the end:
{"first": time the source made its first message, "last": time of the last line, "lines": n}.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from bench.pipeline import body

N = int(os.environ.get("BW_N", "1000"))
BATCH = int(os.environ.get("BW_BATCH", "256"))
OUT = os.environ.get("BW_OUT", "bw-out.jsonl")
STATS = os.environ.get("BW_STATS", "bw-stats.json")
FIRST: list[float] = []


class _Source(StatelessSourcePartition[dict[str, Any]]):
    def __init__(self) -> None:
        self.seq = 1

    def next_batch(self) -> list[dict[str, Any]]:
        if self.seq > N:
            raise StopIteration()
        if not FIRST:
            FIRST.append(time.perf_counter())
        end = min(self.seq + BATCH, N + 1)
        made = [body(s) for s in range(self.seq, end)]
        self.seq = end
        return made


class Payments(DynamicSource[dict[str, Any]]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Source:
        return _Source()


class _Lines(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self) -> None:
        self.fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines = 0
        self.last = 0.0

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            os.write(self.fd, (json.dumps(item, separators=(",", ":")) + "\n").encode())
        self.lines += len(items)
        self.last = time.perf_counter()

    def close(self) -> None:
        os.close(self.fd)
        with open(STATS, "w") as f:
            json.dump({"first": FIRST[0] if FIRST else 0.0, "last": self.last, "lines": self.lines}, f)


class JsonLines(DynamicSink[dict[str, Any]]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Lines:
        return _Lines()


flow = Dataflow("fluxmix-bench")
made = op.input("src", flow, Payments())
enriched = op.map("enrich", made, lambda b: {**b, "cents": b["amount"] * 100})
large = op.filter("large", enriched, lambda b: b["amount"] > 100)
op.output("sink", large, JsonLines())
