"""Partial reload end to end: real `fluxmix-mixer` subprocesses, memory wires and real nats-server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.mixer import MixerProcess, assert_exactly_once, atomic_write, read_lines, run_fluxmix
from tests.support.polling import block_until


NAME = {"name": "branches"}  # the standard-wire test sets a unique one (streams are per name)


def two_branches(tmp_path: Path, *, name: str | None = None, tag: str = "v1", comment: str = "",
                 transport: str = "memory", sink_b: str | None = None, third: bool = False) -> str:
    """generate -> a -> sink_a and generate -> b -> sink_b; `tag` configures b only; `third` adds
    generate -> c -> sink_c (two gears and two wires)."""
    a, b, c = tmp_path / "a.jsonl", sink_b or str(tmp_path / "b.jsonl"), tmp_path / "c.jsonl"
    gears = [
        "{name: source, type: generate, config: {rate: 300, body: {kind: demo}}}",
        "{name: a, type: map, config: {set: {branch: a}}}",
        "{name: sink_a, type: file-out, config: {path: %s}}" % json.dumps(str(a)),
        "{name: b, type: map, config: {set: {branch: b, tag: %s}}}" % tag,
        "{name: sink_b, type: file-out, config: {path: %s}}" % json.dumps(b),
    ]
    wires = [("source", "a"), ("a", "sink_a"), ("source", "b"), ("b", "sink_b")]
    if third:
        gears += ["{name: c, type: map, config: {set: {branch: c}}}",
                  "{name: sink_c, type: file-out, config: {path: %s}}" % json.dumps(str(c))]
        wires += [("source", "c"), ("c", "sink_c")]
    lines = [f"name: {name or NAME['name']}", f"# {comment}", "gears:", *(f"  - {g}" for g in gears), "wires:",
             *(f"  - {{from: {x}.out, to: {y}.in, transport: {transport}}}" for x, y in wires)]
    return "\n".join(lines) + "\n"


def seqs(path: Path) -> list[int]:
    return [line["seq"] for line in read_lines(path)]


def grows(mixer: MixerProcess, path: Path, by: int) -> None:
    start = len(read_lines(path))
    block_until(lambda: len(read_lines(path)) >= start + by, f"{by} more lines in {path.name}", proc=mixer)


def gears(mixer: MixerProcess) -> dict[str, Any]:
    return mixer.status()["gears"]


def reload_to(mixer: MixerProcess, path: Path, text: str) -> dict[str, Any]:
    """Save `text` like an editor; the journal entry of the reload that read it."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    atomic_write(path, text)
    return mixer.wait_journal(lambda e: e["trigger"] == "watch" and e["to_hash"] == digest, f"the reload to {digest[:12]}")


def check_partial_reload(tmp_path: Path, home: Path, mixer: MixerProcess, path: Path, transport: str) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    mixer.wait_ready()
    grows(mixer, a, 30)
    grows(mixer, b, 30)
    before = gears(mixer)

    entry = reload_to(mixer, path, two_branches(tmp_path, tag="v2", transport=transport))
    assert entry["outcome"] == "activated", entry["reason"]
    assert entry["reload"]["mode"] == "partial" and entry["reload"]["gears_restarted"] == ["b"]
    after = gears(mixer)
    for name in ("source", "a", "sink_a", "sink_b"):  # same instance, same start, counters going on
        assert after[name]["instance"] == before[name]["instance"] == 1, name
        assert after[name]["up_since"] == before[name]["up_since"], name
        assert after[name]["since_start"]["handled"] >= before[name]["since_start"]["handled"], name
    assert after["b"]["instance"] == 2 and after["b"]["up_since"] > before["b"]["up_since"]
    assert after["b"]["handled"] >= before["b"]["handled"]  # the total survives the restart
    grows(mixer, b, 30)
    assert any(line.get("tag") == "v2" for line in read_lines(b))

    shown = run_fluxmix(home, tmp_path, "mixer", "journal", "--url", mixer.url)
    assert shown.returncode == 0 and "restarted 1 of 5 gears" in shown.stdout, shown.stdout

    # A comment-only edit restarts nothing.
    entry = reload_to(mixer, path, two_branches(tmp_path, tag="v2", comment="only a comment", transport=transport))
    assert entry["outcome"] == "activated" and entry["reload"]["gears_restarted"] == [], entry
    assert entry["gap_seconds"] == 0.0
    assert {n: g["instance"] for n, g in gears(mixer).items()} == {n: g["instance"] for n, g in after.items()}

    # A sink that cannot start: its previous instance comes back, nothing is lost.
    bad = two_branches(tmp_path, tag="v2", transport=transport, sink_b="/proc/no-such-dir/sub/b.jsonl")
    entry = reload_to(mixer, path, bad)
    assert entry["outcome"] == "rolled-back", entry["reason"]
    assert gears(mixer)["sink_b"]["instance"] == 3 and gears(mixer)["source"]["instance"] == 1
    grows(mixer, b, 30)
    grows(mixer, a, 30)

    # Wires (and gears) added, then removed, at runtime: the source is an end of the new wire, so it
    # restarts too (from its checkpoint); nothing is lost on any branch.
    c = tmp_path / "c.jsonl"
    entry = reload_to(mixer, path, two_branches(tmp_path, tag="v2", transport=transport, third=True))
    assert entry["outcome"] == "activated", entry["reason"]
    assert sorted(entry["reload"]["gears_added"]) == ["c", "sink_c"] and entry["reload"]["gears_restarted"] == ["source"]
    assert len(entry["reload"]["wires_added"]) == 2 and "a.out->sink_a.in" in entry["reload"]["wires_kept"]
    grows(mixer, c, 30)
    entry = reload_to(mixer, path, two_branches(tmp_path, tag="v2", comment="c removed", transport=transport))
    assert entry["outcome"] == "activated", entry["reason"]
    assert sorted(entry["reload"]["gears_removed"]) == ["c", "sink_c"] and len(entry["reload"]["wires_removed"]) == 2
    grows(mixer, b, 30)
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert_exactly_once(seqs(a))
    assert_exactly_once(seqs(b))
    got_c = seqs(c)
    assert got_c == list(range(got_c[0], got_c[0] + len(got_c))), "branch c lost or repeated a message"


def test_partial_reload_on_memory_wires(tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    path = tmp_path / "branches.yaml"
    path.write_text(two_branches(tmp_path))
    mixer = start_mixer("-s", str(path))
    check_partial_reload(tmp_path, home, mixer, path, "memory")


@pytest.mark.nats
def test_partial_reload_on_standard_wires(tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess],
                                          nats_url: str, unique_name: str) -> None:
    NAME["name"] = unique_name
    try:
        path = tmp_path / "branches.yaml"
        path.write_text(two_branches(tmp_path, transport="standard"))
        mixer = start_mixer("-s", str(path), "--nats-url", nats_url)
        check_partial_reload(tmp_path, home, mixer, path, "standard")
    finally:
        NAME["name"] = "branches"


def test_reload_full_restarts_every_gear_as_before(tmp_path: Path, home: Path,
                                                   start_mixer: Callable[..., MixerProcess]) -> None:
    path = tmp_path / "branches.yaml"
    path.write_text(two_branches(tmp_path))
    mixer = start_mixer("-s", str(path), "--reload", "full")
    mixer.wait_ready()
    grows(mixer, tmp_path / "b.jsonl", 30)
    before = gears(mixer)
    entry = reload_to(mixer, path, two_branches(tmp_path, tag="v2"))
    assert entry["outcome"] == "activated", entry["reason"]
    assert entry["reload"]["mode"] == "full" and len(entry["reload"]["gears_restarted"]) == 5
    after = gears(mixer)
    assert all(after[n]["up_since"] > before[n]["up_since"] for n in before)
    assert after["sink_a"]["handled"] < before["sink_a"]["handled"] + 10_000  # a new runtime: counters anew
    grows(mixer, tmp_path / "a.jsonl", 20)
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert_exactly_once(seqs(tmp_path / "a.jsonl"))
    assert_exactly_once(seqs(tmp_path / "b.jsonl"))
