"""Resuming (`-s` empty) after the followed file was edited while the mixer was down.

The stored bytes are resumed by hash (the contract), then the file, now holding other bytes, is
activated through the normal path, journaled as a `watch` trigger, with both hashes in the log.
Real `fluxmix-mixer` processes, memory wires, as in test_mixer_daemon.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from tests.support.mixer import MixerProcess, assert_exactly_once, read_lines, scenario_yaml, seqs
from tests.support.polling import block_until


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_version(path: Path, out: Path, version: str) -> None:
    """The followed file: the test pipeline writing `out`, its lines tagged `version`."""
    path.write_text(scenario_yaml(out, version=version, rate=100))


def ran_then_stopped(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> tuple[Path, Path, str]:
    """A first mixer runs live.yaml (v1, writing out.jsonl) and stops gracefully:
    returns (the followed file, the output file, the hash it ran)."""
    out, path = tmp_path / "out.jsonl", tmp_path / "live.yaml"
    write_version(path, out, "v1")
    first = start_mixer("-s", str(path))
    ran = first.wait_ready()["scenario"]["hash"]
    block_until(lambda: len(read_lines(out)) >= 3, "first lines", proc=first)
    assert first.stop() == 0, first.output()[-3000:]
    return path, out, ran


def test_resume_then_activate_the_file_edited_while_down(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    path, out, stored = ran_then_stopped(tmp_path, start_mixer)
    assert stored == sha256(path)

    write_version(path, out, "v2")  # edited while no mixer runs
    edited = sha256(path)
    second = start_mixer()  # -s empty: resume
    second.wait_ready()
    resumed = second.wait_journal(lambda e: e["trigger"] == "resume", "the resume")
    assert resumed["to_hash"] == stored and resumed["outcome"] == "activated"  # by hash, as the contract says
    caught_up = second.wait_journal(lambda e: e["trigger"] == "watch", "the edited file activated")
    assert caught_up["outcome"] == "activated", caught_up
    assert (caught_up["from_hash"], caught_up["to_hash"]) == (stored, edited)
    status = second.status()
    assert status["scenario"]["hash"] == edited
    assert status["watching"] == str(path.resolve())
    block_until(lambda: any(line["version"] == "v2" for line in read_lines(out)), "v2 lines", proc=second)
    log = second.output()
    assert stored in log and edited in log, log[-3000:]  # both hashes, in full
    assert second.stop() == 0, second.output()[-3000:]
    assert_exactly_once(seqs(read_lines(out)))


def test_an_invalid_edit_while_down_is_rejected_and_the_resumed_scenario_keeps_running(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    path, out, stored = ran_then_stopped(tmp_path, start_mixer)

    path.write_text(scenario_yaml(out, version="v2", rate=100).replace("type: filter", "type: no-such-gear"))
    edited = sha256(path)
    second = start_mixer()
    second.wait_ready()
    rejected = second.wait_journal(lambda e: e["trigger"] == "watch", "the edited file tried")
    assert rejected["outcome"] == "rejected", rejected
    assert any("no-such-gear" in p for p in rejected["problems"]) or "no-such-gear" in rejected["reason"]
    status = second.status()
    assert status["scenario"]["hash"] == stored and status["state"] == "running"
    assert status["watching"] == str(path.resolve())  # still watching: fixing the file is enough
    count = len(read_lines(out))
    block_until(lambda: len(read_lines(out)) >= count + 3, "the resumed scenario still writing", proc=second)
    log = second.output()
    assert stored in log and edited in log, log[-3000:]

    write_version(path, out, "v3")  # the fix, seen by the watcher
    second.wait_journal(lambda e: e["trigger"] == "watch" and e["outcome"] == "activated", "the fixed file activated")
    block_until(lambda: any(line["version"] == "v3" for line in read_lines(out)), "v3 lines", proc=second)
    assert second.stop() == 0, second.output()[-3000:]
    assert_exactly_once(seqs(read_lines(out)))


def test_an_unchanged_file_is_only_resumed(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    path, out, stored = ran_then_stopped(tmp_path, start_mixer)
    second = start_mixer()
    assert second.wait_ready()["scenario"]["hash"] == stored
    count = len(read_lines(out))
    block_until(lambda: len(read_lines(out)) >= count + 3, "lines after the resume", proc=second)
    assert [e["trigger"] for e in second.journal()][:1] == ["resume"]  # newest first: nothing after it
    assert second.stop() == 0, second.output()[-3000:]


def test_with_no_watch_the_difference_is_logged_not_activated(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    path, out, stored = ran_then_stopped(tmp_path, start_mixer)
    write_version(path, out, "v2")
    edited = sha256(path)
    second = start_mixer("--no-watch")
    assert second.wait_ready()["scenario"]["hash"] == stored
    block_until(lambda: edited in second.output(), "the difference logged", proc=second)
    assert "--no-watch: not activating it" in second.output()
    assert [e["trigger"] for e in second.journal()][:1] == ["resume"]
    assert second.stop() == 0, second.output()[-3000:]


def test_a_resume_that_cannot_start_is_followed_by_the_fixed_file(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    """The stored scenario no longer starts (its sink path became a directory) and the operator
    fixed the file while the mixer was down: the file comes up after the failed resume."""
    path, out, stored = ran_then_stopped(tmp_path, start_mixer)
    out.unlink()
    out.mkdir()  # the stored scenario's sink cannot open it any more
    fixed_out = tmp_path / "fixed.jsonl"
    write_version(path, fixed_out, "v2")
    second = start_mixer()
    status = second.wait_ready()
    assert status["scenario"]["hash"] == sha256(path) != stored
    entries = second.journal()
    assert entries[0]["trigger"] == "watch" and entries[0]["outcome"] == "activated", entries[:2]
    assert entries[1]["trigger"] == "resume" and entries[1]["outcome"] in ("failed", "rolled-back"), entries[:2]
    block_until(lambda: len(read_lines(fixed_out)) >= 3, "lines from the fixed file", proc=second)
    assert status["watching"] == str(path.resolve())
    assert second.stop() == 0, second.output()[-3000:]
