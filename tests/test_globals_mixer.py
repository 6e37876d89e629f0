"""Global state end to end: a real `fluxmix-mixer` subprocess, the `fluxmix state` CLI, the API.

No fixed sleeps and no timing thresholds: every wait is a bounded poll (wait_until).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from tests.support.mixer import EventReader, MixerProcess, read_lines, run_fluxmix
from tests.support.polling import block_until

THRESHOLD_SCENARIO = """\
name: gated
version: {version}
globals:
  threshold:
    description: residues of seq mod 10 below it pass
    initial: 5
    schema: {{type: integer, minimum: 0, maximum: 10}}
gears:
  - name: source
    type: generate
    config: {{rate: 300, body: {{kind: demo}}}}
  - name: gate
    type: filter
    config:
      where: seq % 10 < globals.get("threshold", 10)
  - name: sink
    type: file-out
    config: {{path: {out}}}
wires:
  - {{from: source.out, to: gate.in, transport: memory}}
  - {{from: gate.out, to: sink.in, transport: memory}}
"""


def _residues_after(out: Path, start: int, window: int = 30) -> set[int] | None:
    """seq % 10 of the `window` newest lines written after the first `start` lines (None: too few yet)."""
    lines = read_lines(out)[start:]
    return {line["seq"] % 10 for line in lines[-window:]} if len(lines) >= window else None


def _activations(mixer: MixerProcess) -> int:
    return len(mixer.get("/journal?limit=all")["entries"])


def test_threshold_in_global_state_follows_cli_and_api_without_reload_and_survives_reload_and_restart(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "gated.yaml"
    path.write_text(THRESHOLD_SCENARIO.format(version="1.0.0", out=json.dumps(str(out))))
    mixer = start_mixer("-s", str(path), "--no-watch")
    mixer.wait_ready()
    assert mixer.get("/state/threshold")["value"] == 5  # the declared initial value
    block_until(lambda: _residues_after(out, 0) == {0, 1, 2, 3, 4}, "the initial threshold (5) to gate", proc=mixer)
    activations = _activations(mixer)

    # The CLI lowers it: only residues 0 and 1 pass from then on; no activation happens.
    done = run_fluxmix(home, tmp_path, "state", "set", "threshold", "2", "--url", mixer.url)
    assert done.returncode == 0, done.stderr
    assert "threshold = 2 (was 5)" in done.stdout
    mark = len(read_lines(out))
    block_until(lambda: _residues_after(out, mark) == {0, 1}, "the CLI's threshold (2) to gate", proc=mixer)

    # The API raises it.
    status, body = mixer.request("PUT", "/state/threshold", 8, token=mixer.auth_token())
    assert status == 200 and body["old_value"] == 2, body
    mark = len(read_lines(out))
    block_until(lambda: _residues_after(out, mark) == set(range(8)), "the API's threshold (8) to gate", proc=mixer)
    assert _activations(mixer) == activations  # neither change reloaded anything

    # A schema violation (CLI and API) is refused with one line, and nothing changes.
    changes = mixer.get("/state-changes")["changes"]
    bad = run_fluxmix(home, tmp_path, "state", "set", "threshold", '"high"', "--url", mixer.url)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "threshold" in bad.stderr and "schema" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    status, body = mixer.request("PUT", "/state/threshold", 11, token=mixer.auth_token())
    assert status == 422 and "schema" in body["error"], body
    assert mixer.get("/state/threshold")["value"] == 8
    assert mixer.get("/state-changes")["changes"] == changes

    # Who changed what, when, from and to.
    history = run_fluxmix(home, tmp_path, "state", "history", "--json", "--url", mixer.url)
    entries = json.loads(history.stdout)["changes"]
    assert [(c["key"], c["old_value"], c["new_value"]) for c in entries[:3]] == [
        ("threshold", 2, 8), ("threshold", 5, 2), ("threshold", None, 5)]
    assert entries[0]["who"] == "api" and entries[1]["who"].startswith("api:cli") and entries[2]["op"] == "initial"

    # A reload (a new version of the file) keeps the operator's value over the declared initial one.
    path.write_text(THRESHOLD_SCENARIO.format(version="1.1.0", out=json.dumps(str(out))))
    status, entry = mixer.post("/activate", {"ref": str(path)})
    assert status == 200 and entry["outcome"] == "activated", entry
    assert mixer.get("/state/threshold")["value"] == 8
    mark = len(read_lines(out))
    block_until(lambda: _residues_after(out, mark) == set(range(8)), "threshold 8 after the reload", proc=mixer)

    # And a restart (resume from the store).
    assert mixer.stop() == 0, mixer.output()[-3000:]
    again = start_mixer("--no-watch")
    again.wait_ready()
    assert again.get("/state/threshold")["value"] == 8
    listed = run_fluxmix(home, tmp_path, "state", "list", "--url", again.url)
    assert listed.returncode == 0 and "threshold" in listed.stdout and "8" in listed.stdout
    mark = len(read_lines(out))
    block_until(lambda: _residues_after(out, mark) == set(range(8)), "threshold 8 after the restart", proc=again)

    # delete: expressions see their default (10: everything passes); clear empties the scenario.
    done = run_fluxmix(home, tmp_path, "state", "delete", "threshold", "--url", again.url)
    assert done.returncode == 0, done.stderr
    mark = len(read_lines(out))
    block_until(lambda: _residues_after(out, mark) == set(range(10)), "the default after delete", proc=again)
    missing = run_fluxmix(home, tmp_path, "state", "get", "threshold", "--url", again.url)
    assert missing.returncode == 2 and "no value" in missing.stderr
    again.request("PUT", "/state/other", {"a": [1]}, token=again.auth_token())
    done = run_fluxmix(home, tmp_path, "state", "clear", "--yes", "--url", again.url)
    assert done.returncode == 0 and "cleared 1" in done.stdout, done.stdout
    assert again.get("/state")["values"] == {}


WRITERS_SCENARIO = """\
name: writers
gears:
  - name: left
    type: generate
    config: {{count: {count}, rate: 2000, body: {{side: left}}}}
  - name: right
    type: generate
    config: {{count: {count}, rate: 2000, body: {{side: right}}}}
  - name: write-left
    type: set-global
    config: {{key: 'f"left-{{seq}}"', value: seq}}
  - name: write-right
    type: set-global
    config: {{key: 'f"right-{{seq}}"', value: seq}}
  - name: last-left
    type: set-global
    config: {{key: '"last"', value: 'f"left-{{seq}}"'}}
  - name: last-right
    type: set-global
    config: {{key: '"last"', value: 'f"right-{{seq}}"'}}
wires:
  - {{from: left.out, to: write-left.in, transport: memory}}
  - {{from: right.out, to: write-right.in, transport: memory}}
  - {{from: write-left.out, to: last-left.in, transport: memory}}
  - {{from: write-right.out, to: last-right.in, transport: memory}}
"""


def test_concurrent_writers_lose_no_update_for_distinct_keys_and_last_writer_wins_per_key(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    count, api_writes = 150, 60
    path = tmp_path / "writers.yaml"
    path.write_text(WRITERS_SCENARIO.format(count=count))
    mixer = start_mixer("-s", str(path), "--no-watch")
    mixer.wait_ready()
    events = EventReader("127.0.0.1", mixer.port)
    failures: list[Any] = []

    def api_writer() -> None:
        for i in range(api_writes):
            status, body = mixer.request("PUT", f"/state/api-{i}", i, token=mixer.auth_token())
            if status != 200:
                failures.append(body)
            status, body = mixer.request("PUT", "/state/last", f"api-{i}", token=mixer.auth_token())
            if status != 200:
                failures.append(body)

    thread = threading.Thread(target=api_writer)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive() and not failures, failures

    def complete() -> dict[str, Any] | None:
        values = mixer.get("/state")["values"]
        return values if len(values) == 2 * count + api_writes + 1 else None

    values = block_until(complete, "every distinct key to be written", proc=mixer)
    for side in ("left", "right"):
        assert {k: v for k, v in values.items() if k.startswith(side)} == {f"{side}-{s}": s for s in range(1, count + 1)}
    assert {k: v for k, v in values.items() if k.startswith("api-")} == {f"api-{i}": i for i in range(api_writes)}
    # Per key, the last write wins: once every write of "last" is journaled (the last-* gears run
    # after the distinct-key writers), its value is the newest change journaled for it.
    def writes_of_last() -> list[dict[str, Any]] | None:
        changes = mixer.get("/state-changes?limit=1000")["changes"]
        found = [c for c in changes if c["key"] == "last"]
        return found if len(found) >= 2 * count + api_writes else None

    last_changes = block_until(writes_of_last, "every write of 'last' to be journaled", proc=mixer)
    assert len(last_changes) == 2 * count + api_writes  # each journaled once
    assert mixer.get("/state/last")["value"] == last_changes[0]["new_value"]

    # Watchers (GET /events) hear of operators' changes one by one, and of gears' writes coalesced.
    try:
        block_until(lambda: "globals" in events.kinds(), "a globals event", proc=mixer)
        block_until(lambda: events.kinds().count("global-changed") >= 2 * api_writes, "every operator change as an event",
                   proc=mixer)
        changed = [data for _, kind, data in events.events if kind == "global-changed"]
        assert len(changed) == 2 * api_writes
        assert changed[0] == {"scenario": "writers", "version": changed[0]["version"], "op": "set", "key": "api-0",
                              "old_value": None, "new_value": 0, "who": "api"}
    finally:
        events.close()


def test_retention_keeps_the_active_scenarios_entries_and_gc_reclaims_what_pruning_released(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    paths = []
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        path = tmp_path / f"gated-{version}.yaml"
        path.write_text(THRESHOLD_SCENARIO.format(version=version, out=json.dumps(str(out))))
        paths.append(path)
    mixer = start_mixer("--no-watch", "--journal-keep", "1", "--journal-keep-for", "0", "--scenario-dir", str(tmp_path))
    mixer.wait_ready()
    hashes = []
    for path in paths:
        status, entry = mixer.post("/activate", {"ref": str(path)})
        assert status == 200 and entry["outcome"] == "activated", entry
        hashes.append(entry["to_hash"])
    status, entry = mixer.post("/activate", {"ref": str(paths[-1])})  # unchanged: the newest entry
    assert status == 200 and entry["outcome"] == "unchanged", entry

    kept = mixer.get("/journal?limit=all")["entries"]
    assert {e["to_hash"] for e in kept} == {hashes[2]}  # the active scenario's entries, nothing older
    assert [e["outcome"] for e in kept] == ["unchanged", "activated"]
    shown = run_fluxmix(home, tmp_path, "mixer", "journal", "--all", "--json", "--url", mixer.url)
    assert [e["id"] for e in json.loads(shown.stdout)["entries"]] == [e["id"] for e in kept]

    for version in ("1.0.0", "1.1.0"):
        done = run_fluxmix(home, tmp_path, "scenario", "untag", f"gated:{version}")
        assert done.returncode == 0, done.stderr
    report = run_fluxmix(home, tmp_path, "store", "gc", "--grace", "0", "--json")
    assert report.returncode == 0, report.stderr
    removed = set(json.loads(report.stdout)["removed"])
    assert hashes[0] in removed  # only pruned entries referenced it
    assert hashes[1] not in removed  # a kept entry moved from it: still referenced
    assert hashes[2] not in removed  # active


def test_a_version_that_fails_to_start_never_imposes_its_schemas(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "gated.yaml"
    path.write_text(THRESHOLD_SCENARIO.format(version="1.0.0", out=json.dumps(str(out))))
    mixer = start_mixer("-s", str(path), "--no-watch")
    mixer.wait_ready()
    broken = tmp_path / "broken.yaml"
    text = THRESHOLD_SCENARIO.format(version="2.0.0", out=json.dumps("/proc/fluxmix-nowhere/out.jsonl"))
    broken.write_text(text.replace("{type: integer, minimum: 0, maximum: 10}", "{type: string}")
                      .replace("initial: 5", 'initial: "five"'))
    status, entry = mixer.post("/activate", {"ref": str(broken)})
    assert entry["outcome"] in ("rejected", "rolled-back"), entry
    status, body = mixer.request("PUT", "/state/threshold", 3, token=mixer.auth_token())  # the running version's schema still rules
    assert status == 200, body
    status, body = mixer.request("PUT", "/state/threshold", "three", token=mixer.auth_token())
    assert status == 422, body
