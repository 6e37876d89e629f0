"""Pause and resume: sources hold still, what is in flight drains, and the state survives a
reload and a restart. Runtime-level tests over real memory wires and the real `file-in` and
`generate` gears, then the real `fluxmix-mixer` with `fluxmix mixer pause|resume`."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support import runtime as h
from fluxmix.gears.catalog import Catalog
from fluxmix.runtime import MemoryCheckpoints, Runtime
from fluxmix.transports.memory import MemoryBroker
from tests.support.mixer import MixerProcess, read_lines, run_fluxmix, scenario_yaml
from tests.support.polling import block_until, wait_until


@pytest.fixture(autouse=True)
def _clean() -> None:
    h.reset()


def runtime(scen: Any, checkpoints: Any) -> Runtime:
    cat = Catalog.default()
    cat.register("t-collect", h.Collect)
    return Runtime(scen, "e" * 64, catalog=cat, brokers={"memory": MemoryBroker(queue_size=8)}, checkpoints=checkpoints)


async def test_paused_file_source_emits_nothing_while_in_flight_drains_and_resume_loses_nothing(tmp_path: Path) -> None:
    lines = tmp_path / "in.jsonl"
    lines.write_text("".join(json.dumps({"seq": i}) + "\n" for i in range(1, 1201)))
    scen = h.scenario("pz", [("src", "file-in", {"path": str(lines)}), ("sink", "t-collect", {"delay": 0.001})],
                      [("src.out", "sink.in", {"queue_size": 16})])
    rt = runtime(scen, MemoryCheckpoints())
    await rt.build()
    await rt.start()
    await wait_until(lambda: len(h.SEEN["sink"]) >= 100)
    paused = await rt.pause_sources()
    assert paused == ["src"]
    status = rt.status().to_json()["gears"]
    assert status["src"]["state"] == "paused"
    emitted = status["src"]["emitted"]
    assert emitted < 1200, "the source was still reading when paused"
    # In flight when paused (up to a queue's worth): it still reaches the sink...
    await wait_until(lambda: len(h.SEEN["sink"]) == emitted)
    # ... and nothing new is emitted while paused (the sink stays idle for a while).
    for _ in range(20):
        await asyncio.sleep(0.01)
        assert rt.status().to_json()["gears"]["src"]["emitted"] == emitted
    assert len(h.SEEN["sink"]) == emitted
    assert await rt.pause_sources() == []  # idempotent
    assert await rt.resume_sources() == ["src"]
    await wait_until(lambda: len(h.SEEN["sink"]) == 1200)
    await rt.stop()
    assert [b["seq"] for b in h.SEEN["sink"]] == list(range(1, 1201))  # each line once, in order


async def test_a_runtime_built_paused_starts_its_sources_only_on_resume() -> None:
    scen = h.scenario("pz2", [("src", "generate", {"count": 50}), ("sink", "t-collect", {})], [("src.out", "sink.in")])
    rt = runtime(scen, MemoryCheckpoints())
    rt.sources_paused = True
    await rt.build()
    await rt.start()
    await asyncio.sleep(0.05)
    assert rt.status().to_json()["gears"]["src"]["state"] == "paused" and not h.SEEN["sink"]
    await rt.resume_sources()
    await wait_until(lambda: len(h.SEEN["sink"]) == 50)
    report = await rt.stop()
    assert not report.timed_out and rt.status().to_json()["gears"]["src"]["state"] == "stopped"


async def test_stop_while_paused_is_clean() -> None:
    scen = h.scenario("pz3", [("src", "generate", {"rate": 500}), ("sink", "t-collect", {})], [("src.out", "sink.in")])
    rt = runtime(scen, MemoryCheckpoints())
    await rt.build()
    await rt.start()
    await wait_until(lambda: len(h.SEEN["sink"]) >= 5)
    await rt.pause_sources()
    report = await rt.stop(timeout=5)
    assert not report.timed_out
    assert {g["state"] for g in rt.status().to_json()["gears"].values()} == {"stopped"}


# ---- the real mixer ----------------------------------------------------------------------------


def fluxmix(proc: MixerProcess, home: Path, cwd: Path, *args: str) -> Any:
    done = run_fluxmix(home, cwd, "mixer", *args, "--url", proc.url)
    return done


def test_pause_resume_through_the_cli_survives_reload_and_restart(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "hello.yaml"
    path.write_text(scenario_yaml(out, rate=200))
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    block_until(lambda: len(read_lines(out)) >= 20, "some output", proc=mixer)

    done = fluxmix(mixer, home, tmp_path, "pause")
    assert done.returncode == 0, done.stderr
    assert "paused" in done.stdout
    status = mixer.status()
    assert status["paused"] is True and status["gears"]["source"]["state"] == "paused"
    emitted = status["gears"]["source"]["emitted"]
    shown = fluxmix(mixer, home, tmp_path, "status")
    assert shown.returncode == 0 and re.search(r"^paused +yes", shown.stdout, re.M), shown.stdout
    ready = mixer.get("/readyz")
    assert ready["reason"] == "running, sources paused"
    # Everything emitted before the pause reaches the sink; nothing after it.
    block_until(lambda: len(read_lines(out)) == emitted, "in-flight messages to reach the sink", proc=mixer)
    block_until(lambda: mixer.status()["gears"]["sink"]["handled"] == emitted, "the sink to settle", proc=mixer)
    assert mixer.status()["gears"]["source"]["emitted"] == emitted

    # A reload (file edit) keeps the scenario paused: the partial reload restarts only the map
    # (its config tags the version) and leaves the paused source as it was.
    path.write_text(scenario_yaml(out, rate=200, version="v2"))
    entry = mixer.wait_journal(lambda e: e["outcome"] == "activated" and e["trigger"] == "watch", "the reload")
    status = mixer.status()
    assert status["paused"] is True and status["gears"]["source"]["state"] == "paused"
    assert status["gears"]["source"]["emitted"] == emitted
    assert "source" in entry["reload"]["gears_kept"], entry

    # A restart too (no -s: resume what was active).
    assert mixer.stop() == 0, mixer.output()[-3000:]
    mixer = start_mixer()
    status = mixer.wait_ready()
    assert status["paused"] is True and status["gears"]["source"]["state"] == "paused"
    count = len(read_lines(out))
    assert count == emitted

    done = fluxmix(mixer, home, tmp_path, "resume")
    assert done.returncode == 0, done.stderr
    block_until(lambda: len(read_lines(out)) > count + 10, "output after resume", proc=mixer)
    seqs = [line["seq"] for line in read_lines(out)]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat across pause, reload, restart"
    outcomes = [(e["trigger"], e["outcome"]) for e in mixer.journal()]
    assert ("api", "paused") in outcomes and ("api", "resumed") in outcomes
    assert mixer.stop() == 0, mixer.output()[-3000:]


def test_pause_needs_the_token_like_activate(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:  # noqa: F811
    mixer = start_mixer(token="s3cret")
    mixer.wait_ready()
    for path in ("/pause", "/resume"):
        status, body = mixer.request("POST", path)
        assert status == 401, body
    status, body = mixer.post("/pause")
    assert status == 200 and body["paused"] is True and body["changed"] is True
    assert "no scenario runs" in body["reason"]
    status, body = mixer.post("/pause")
    assert status == 200 and body["changed"] is False and body["entry"] is None
    assert mixer.get("/status")["paused"] is True
    assert "fluxmix_paused 1.0" in mixer.request("GET", "/metrics")[1]


def test_the_paused_flag_is_kept_by_the_store_across_opens(tmp_path: Path) -> None:
    from fluxmix.store import open_store

    with open_store(tmp_path / "home") as store:
        assert store.mixer_state().paused is False
        store.set_paused(True)
        store.set_active("a" * 64, "flow:latest", known_good=True)  # other state leaves it be
    with open_store(tmp_path / "home") as store:
        state = store.mixer_state()
        assert state.paused is True and state.active_ref == "flow:latest"
        store.set_paused(False)
        assert store.mixer_state().paused is False


def test_a_paused_mixer_activates_without_verifying_expectations(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    """Paused sources emit nothing, so `--verify-within` would roll back a good scenario: it is
    activated unverified, and the journal says why."""
    from tests.support.mixer import generate_scenario
    mixer = start_mixer("--verify-within", "2s", "--no-watch", "--scenario-dir", str(tmp_path))
    mixer.wait_ready()
    assert mixer.post("/pause")[0] == 200
    path = tmp_path / "good.yaml"
    path.write_text(generate_scenario("good", "seq > 0", "sink.handled >= 5 within 20s"))
    done = run_fluxmix(home, tmp_path, "mixer", "activate", str(path), "--url", mixer.url)
    assert done.returncode == 0, done.stdout + done.stderr
    entry = mixer.journal()[0]
    assert entry["outcome"] == "activated" and "not verified: the sources are paused" in entry["reason"]
    assert mixer.status()["gears"]["source"]["state"] == "paused"
