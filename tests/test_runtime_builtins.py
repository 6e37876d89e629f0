"""The built-in gears (Catalog.default()) on memory wires, through the Activator and a real store:
generate -> map -> filter -> file-out, with a reload in the middle and a graceful stop."""

from __future__ import annotations

import json
from pathlib import Path

from fluxmix.gears.catalog import Catalog
from fluxmix.mixer.activation import Activator
from fluxmix.store import open_store
from fluxmix.transports.registry import Brokers
from tests.support.polling import wait_until

SCENARIO = """\
name: pipeline
version: {version}
gears:
  - name: source
    type: generate
    config: {{body: {{kind: demo}}}}
  - name: stamp
    type: map
    config: {{set: {{stage: {stage}, double: {{expr: "seq * 2"}}}}}}
  - name: thirds
    type: filter
    config: {{where: "seq % 3 != 0"}}
  - name: sink
    type: file-out
    config: {{path: "{out}"}}
wires:
  - {{from: source.out, to: stamp.in, transport: memory, queue_size: 8}}
  - {{from: stamp.out, to: thirds.in, transport: memory, queue_size: 8}}
  - {{from: thirds.out, to: sink.in, transport: memory, queue_size: 8}}
"""


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_generate_map_filter_file_out_across_a_reload(tmp_path: Path) -> None:
    out = tmp_path / "out" / "lines.jsonl"
    store = open_store(tmp_path / "home")
    activator = Activator(store, Catalog.default(), Brokers(store.home), stop_timeout=10)
    scenario = tmp_path / "pipeline.yaml"
    try:
        scenario.write_text(SCENARIO.format(version="1.0.0", stage="one", out=out))
        first = await activator.activate(str(scenario), trigger="startup")
        assert first.outcome == "activated", first.reason
        await wait_until(lambda: len(lines(out)) >= 100)

        scenario.write_text(SCENARIO.format(version="1.1.0", stage="two", out=out))
        second = await activator.activate(str(scenario), trigger="watch")
        assert second.outcome == "activated", second.reason
        assert second.gap_seconds is not None
        await wait_until(lambda: sum(1 for b in lines(out) if b["stage"] == "two") >= 100)
    finally:
        await activator.shutdown()
        store.close()

    written = lines(out)
    seqs = [b["seq"] for b in written]
    top = max(seqs)
    # every generated seq that passes the filter, exactly once and in order, across the reload
    assert seqs == [n for n in range(1, top + 1) if n % 3 != 0]
    assert all(b["double"] == b["seq"] * 2 and b["kind"] == "demo" for b in written)
    stages = [b["stage"] for b in written]
    switch = stages.index("two")
    assert set(stages[:switch]) == {"one"} and set(stages[switch:]) == {"two"}
    status = activator.current.status().to_json() if activator.current else None
    assert status is None  # shut down


async def test_twenty_reloads_leave_every_seq_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    store = open_store(tmp_path / "home")
    activator = Activator(store, Catalog.default(), Brokers(store.home), stop_timeout=10, gap_wait=0.2)
    scenario = tmp_path / "pipeline.yaml"
    outcomes = []
    try:
        for i in range(21):  # the first activation, then 20 reloads
            scenario.write_text(SCENARIO.format(version=f"1.{i}.0", stage=f"s{i}", out=out))
            entry = await activator.activate(str(scenario), trigger="watch")
            outcomes.append(entry.outcome)
            runtime = activator.current
            assert runtime is not None
            # let each version write some lines (counted by the sink, not by re-reading the file)
            await wait_until(lambda: runtime.status().to_json()["gears"]["sink"]["handled"] >= 20)
        rows = store.journal(limit=100)
        assert len(rows) == 21 and all(r.gap_seconds is not None for r in rows[:-1])
        assert rows[-1].gap_seconds is None  # the first activation has nothing to compare with
    finally:
        await activator.shutdown()
        store.close()
    assert outcomes == ["activated"] * 21
    seqs = [b["seq"] for b in lines(out)]
    assert seqs == [n for n in range(1, max(seqs) + 1) if n % 3 != 0]
