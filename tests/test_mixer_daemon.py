"""End-to-end tests of `fluxmix-mixer`: real subprocesses, a real store, memory wires.

Every test starts the console script with FLUXMIX_HOME in tmp_path and the API on a free port,
polls with bounded timeouts (no fixed sleeps, no timing thresholds), and kills what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support.nats import pid_alive, restartable_nats_server
from tests.support.mixer import (
    MIXERD,
    MixerProcess,
    assert_exactly_once,
    atomic_write,
    read_lines,
    run_fluxmix,
    scenario_yaml,
    seqs,
)
from tests.support.polling import block_until


# --------------------------------------------------------------------------------------------
# startup


def test_bad_file_at_startup_exits_2_with_one_line(tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = scenario_yaml(tmp_path / "out.jsonl")
    bad.write_text(text.replace("to: sink.in, transport: memory", "to: sink.in, transport: memroy"))
    env = {**os.environ, "FLUXMIX_HOME": str(home)}
    result = subprocess.run(
        [str(MIXERD), "-s", "bad.yaml", "--http", "127.0.0.1:0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: bad.yaml: wires[2].transport:"), lines[0]
    assert "memroy" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_unparsable_file_and_unknown_ref_at_startup_exit_2(tmp_path: Path, home: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    env = {**os.environ, "FLUXMIX_HOME": str(home)}
    for ref in ("./broken.yaml", "nosuch:v1.0.0", "./missing.yaml"):
        result = subprocess.run(
            [str(MIXERD), "-s", ref, "--http", "127.0.0.1:0"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2, (ref, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (ref, result.stderr)
        assert "Traceback" not in result.stderr


def test_start_from_path_runs_the_pipeline_exactly(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        scenario_yaml(out, rate=None, count=40).replace("where: seq > 0", "where: seq % 2 == 0")
    )
    mixer = start_mixer("-s", "pipeline.yaml")
    status = mixer.wait_ready()
    assert status["scenario"]["name"] == "hello"
    assert status["following"] == str(path.resolve())
    assert status["watching"] == str(path.resolve())
    lines = block_until(lambda: (ls := read_lines(out)) and len(ls) >= 20 and ls, "20 lines", proc=mixer)
    assert [(l["seq"], l["double"], l["version"], l["kind"]) for l in lines] == [
        (seq, seq * 2, "v1", "demo") for seq in range(2, 41, 2)
    ]
    assert "ready: hello:" in mixer.output()
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert len(read_lines(out)) == 20


def test_idle_without_scenario_then_activate_by_api(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    mixer = start_mixer("--scenario-dir", str(tmp_path))  # API path refs must be inside it
    status = mixer.wait_ready()
    assert status["state"] == "idle" and status["scenario"] is None
    assert mixer.request("GET", "/readyz")[1]["reason"] == "idle"
    status_code, body = mixer.post("/reload")
    assert status_code == 409 and "nothing to reload" in body["error"]
    code, entry = mixer.post("/activate", {"ref": "nosuch:v1.0.0"})
    assert code == 422 and entry["outcome"] == "rejected"
    assert mixer.request("GET", "/readyz")[0] == 200  # a refused request while idle changes nothing
    out = tmp_path / "out.jsonl"
    path = tmp_path / "s.yaml"
    path.write_text(scenario_yaml(out, count=5, rate=None))
    code, entry = mixer.post("/activate", {"ref": str(path)})
    assert code == 200 and entry["outcome"] == "activated" and entry["trigger"] == "api"
    block_until(lambda: len(read_lines(out)) == 5, "5 lines", proc=mixer)
    assert mixer.status()["following"] == str(path.resolve())
    assert mixer.stop() == 0, mixer.output()[-3000:]


def test_start_from_name_tag_then_resume_from_empty(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    source = tmp_path / "hello.yaml"
    source.write_text(scenario_yaml(out, rate=100))
    imported = run_fluxmix(home, tmp_path, "scenario", "import", str(source), "--name", "hello", "--tag", "v1.0.0")
    assert imported.returncode == 0, imported.stderr

    first = start_mixer("-s", "hello:v1.0.0")
    status = first.wait_ready()
    assert (status["scenario"]["name"], status["scenario"]["tag"]) == ("hello", "v1.0.0")
    assert status["watching"] is None
    block_until(lambda: len(read_lines(out)) >= 5, "first lines", proc=first)
    assert first.stop() == 0, first.output()[-3000:]
    written = len(read_lines(out))

    second = start_mixer()  # -s omitted: resume by hash
    status = second.wait_ready()
    assert status["scenario"]["hash"] == first_hash(home, "hello", "v1.0.0")
    assert status["following"] == "hello:v1.0.0"  # SIGHUP would re-resolve what the first run was given
    block_until(lambda: len(read_lines(out)) >= written + 5, "lines after resume", proc=second)
    assert second.stop() == 0, second.output()[-3000:]
    assert_exactly_once(seqs(read_lines(out)))
    assert any(e["trigger"] == "resume" and e["outcome"] == "activated" for e in second_journal(home))


def first_hash(home: Path, name: str, tag: str) -> str:
    from fluxmix.store import open_store

    store = open_store(home)
    try:
        return store.resolve(f"{name}:{tag}").hash
    finally:
        store.close()


def second_journal(home: Path) -> list[dict[str, Any]]:
    from fluxmix.store import open_store

    store = open_store(home)
    try:
        return [e.as_dict() for e in store.journal(limit=50)]
    finally:
        store.close()


# --------------------------------------------------------------------------------------------
# reload triggers


def test_editing_the_file_reloads_and_output_changes(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "live.yaml"
    path.write_text(scenario_yaml(out, version="v1", rate=100))
    mixer = start_mixer("-s", str(path))
    before = mixer.wait_ready()["scenario"]["hash"]
    block_until(lambda: len(read_lines(out)) >= 3, "v1 lines", proc=mixer)

    path.write_text(scenario_yaml(out, version="v2", rate=100))  # in-place write
    block_until(lambda: any(l["version"] == "v2" for l in read_lines(out)), "v2 lines after an edit", proc=mixer)
    atomic_write(path, scenario_yaml(out, version="v3", rate=100))  # editor-style save
    block_until(lambda: any(l["version"] == "v3" for l in read_lines(out)), "v3 lines after an atomic save", proc=mixer)

    status = mixer.status()
    assert status["scenario"]["hash"] != before
    assert status["watching"] == str(path.resolve())
    # the journal row is written when the activation returns, which may be after the first new line
    block_until(
        lambda: len([e for e in mixer.journal() if e["trigger"] == "watch" and e["outcome"] == "activated"]) >= 2,
        "two journaled watch reloads",
        proc=mixer,
    )
    assert mixer.stop() == 0, mixer.output()[-3000:]
    lines = read_lines(out)
    assert_exactly_once(seqs(lines))
    versions = [l["version"] for l in lines]
    assert versions == sorted(versions), "output switched versions out of order"


def test_broken_file_and_failing_start_keep_the_old_scenario(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "live.yaml"
    path.write_text(scenario_yaml(out, rate=100))
    mixer = start_mixer("-s", str(path))
    good = mixer.wait_ready()["scenario"]["hash"]
    block_until(lambda: len(read_lines(out)) >= 3, "first lines", proc=mixer)

    # 1. a file that does not validate: rejected, the old scenario never stops
    atomic_write(path, scenario_yaml(out, rate=100).replace("type: filter", "type: no-such-gear"))
    rejected = mixer.wait_journal(lambda e: e["trigger"] == "watch" and e["outcome"] == "rejected", "a rejected reload")
    assert any("no-such-gear" in p for p in rejected["problems"]) or "no-such-gear" in rejected["reason"]
    count = len(read_lines(out))
    block_until(lambda: len(read_lines(out)) > count + 3, "output to keep growing after the rejection", proc=mixer)
    assert mixer.status()["scenario"]["hash"] == good

    # 2. a file that validates but whose sink cannot start: rolled back to the good one
    atomic_write(path, scenario_yaml(out, version="bad", rate=100, sink_path="/proc/no-such-dir/sub/out.jsonl"))
    failed = mixer.wait_journal(
        lambda e: e["trigger"] == "watch" and e["outcome"] in ("rolled-back", "failed", "rejected") and e["id"] != rejected["id"],
        "a failed start",
    )
    assert "sink" in failed["reason"], failed
    block_until(lambda: mixer.status()["scenario"] and mixer.status()["scenario"]["hash"] == good, "the good scenario back", proc=mixer)
    count = len(read_lines(out))
    block_until(lambda: len(read_lines(out)) > count + 3, "output to keep growing after the failed start", proc=mixer)
    assert mixer.request("GET", "/readyz")[0] == 200
    assert mixer.stop() == 0, mixer.output()[-3000:]
    lines = read_lines(out)
    assert all(l["version"] == "v1" for l in lines)
    assert_exactly_once(seqs(lines))


def test_sighup_reresolves_latest_after_a_new_import(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(scenario_yaml(out, version="v1", rate=100))
    v2.write_text(scenario_yaml(out, version="v2", rate=100))
    assert run_fluxmix(home, tmp_path, "scenario", "import", str(v1), "--name", "hello", "--tag", "1.0.0").returncode == 0

    mixer = start_mixer("-s", "hello:latest")
    assert mixer.wait_ready()["scenario"]["tag"] == "v1.0.0"
    block_until(lambda: len(read_lines(out)) >= 3, "v1 lines", proc=mixer)
    imported = run_fluxmix(home, tmp_path, "scenario", "import", str(v2), "--name", "hello", "--tag", "1.1.0")
    assert imported.returncode == 0, imported.stderr
    mixer.proc.send_signal(signal.SIGHUP)
    block_until(lambda: (mixer.status()["scenario"] or {}).get("tag") == "v1.1.0", "v1.1.0 active after SIGHUP", proc=mixer)
    block_until(lambda: any(l["version"] == "v2" for l in read_lines(out)), "v2 lines", proc=mixer)
    mixer.wait_journal(lambda e: e["trigger"] == "signal" and e["outcome"] == "activated", "the SIGHUP reload journaled")
    block_until(lambda: mixer.status()["following"] == "hello:latest", "following hello:latest", proc=mixer)
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert_exactly_once(seqs(read_lines(out)))


GATED_GEAR = """\
import asyncio
import os
from pathlib import Path

from fluxmix.gears.base import Gear


class Gated(Gear):
    \"\"\"Holds the mixer in its startup phase until the test creates $GATE_FILE.\"\"\"

    type = "gated"

    async def start(self) -> None:
        gate = Path(os.environ["GATE_FILE"])
        while not gate.exists():
            await asyncio.sleep(0.02)
"""


def test_sighup_while_starting_reloads_once_startup_is_done(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGHUP that arrives during the startup activation is neither lost nor folded into it."""
    out = tmp_path / "out.jsonl"
    (tmp_path / "gated_gear.py").write_text(GATED_GEAR)
    gate = tmp_path / "gate"
    gated = "  - {name: gate, type: python, config: {class: 'gated_gear:Gated'}}\n"
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(scenario_yaml(out, version="v1", rate=100, extra_gear=gated))
    v2.write_text(scenario_yaml(out, version="v2", rate=100, extra_gear=gated))
    monkeypatch.setenv("FLUXMIX_GEARS_PATH", str(tmp_path))  # the CLI and the mixer both import the gear
    monkeypatch.setenv("GATE_FILE", str(gate))
    imported = run_fluxmix(home, tmp_path, "scenario", "import", str(v1), "--name", "hello", "--tag", "1.0.0")
    assert imported.returncode == 0, imported.stderr
    mixer = start_mixer("-s", "hello:latest")

    def starting() -> Any:
        answer = mixer.try_get("/readyz")
        return answer if answer and answer[0] == 503 and answer[1]["reason"] == "starting" else None

    block_until(starting, "/readyz to say starting", proc=mixer)  # the gate holds startup here
    imported = run_fluxmix(home, tmp_path, "scenario", "import", str(v2), "--name", "hello", "--tag", "1.1.0")
    assert imported.returncode == 0, imported.stderr
    mixer.proc.send_signal(signal.SIGHUP)
    block_until(lambda: "SIGHUP received while starting" in mixer.output(), "the SIGHUP noted", proc=mixer)
    gate.touch()
    block_until(lambda: (mixer.status()["scenario"] or {}).get("tag") == "v1.1.0", "v1.1.0 after the SIGHUP", proc=mixer)
    entry = mixer.wait_journal(lambda e: e["trigger"] == "signal", "the SIGHUP reload journaled")
    assert entry["outcome"] == "activated", entry
    assert [e["trigger"] for e in mixer.journal()] == ["signal", "startup"]
    block_until(lambda: any(l["version"] == "v2" for l in read_lines(out)), "v2 lines", proc=mixer)
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert_exactly_once(seqs(read_lines(out)))


# --------------------------------------------------------------------------------------------
# stop and reload without loss


def checkpoint_seq(home: Path, scenario: str, gear: str) -> int:
    """The generate gear's saved position: the next seq it would emit."""
    from fluxmix.store import open_store

    store = open_store(home)
    try:
        value = store.load_checkpoint(scenario, gear)
    finally:
        store.close()
    if isinstance(value, dict):
        ints = [v for v in value.values() if isinstance(v, int)]
        assert len(ints) == 1, value
        value = ints[0]
    assert isinstance(value, int), value
    return value


def test_sigterm_exits_0_and_loses_nothing_on_memory_wires(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "fast.yaml"
    path.write_text(scenario_yaml(out, rate=None))  # as fast as the wires take: queues are full
    mixer = start_mixer("-s", str(path), "--memory-queue-size", "64")
    mixer.wait_ready()
    block_until(lambda: len(read_lines(out)) >= 500, "500 lines", proc=mixer)
    emitted = mixer.status()["gears"]["source"]["emitted"]
    assert mixer.stop(signal.SIGTERM) == 0
    lines = read_lines(out)
    assert_exactly_once(seqs(lines))
    assert len(lines) >= emitted
    next_seq = checkpoint_seq(home, "hello", "source")
    assert max(seqs(lines)) in (next_seq - 1, next_seq), (max(seqs(lines)), next_seq)
    assert "stopped" in mixer.output()


def test_twenty_reloads_while_producing_keep_every_seq_exactly_once(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(scenario_yaml(out, version="a", rate=500))
    b.write_text(scenario_yaml(out, version="b", rate=500))
    mixer = start_mixer("-s", str(a), "--no-watch")
    mixer.wait_ready()
    block_until(lambda: len(read_lines(out)) >= 10, "first lines", proc=mixer)
    outcomes = []
    for i in range(20):
        target = b if i % 2 == 0 else a
        code, entry = mixer.post("/activate", {"ref": str(target)})
        assert code == 200, entry
        outcomes.append(entry["outcome"])
        count = len(read_lines(out))
        block_until(lambda: len(read_lines(out)) > count, f"output after reload {i + 1}", proc=mixer)
    assert outcomes == ["activated"] * 20
    assert mixer.stop() == 0, mixer.output()[-3000:]
    lines = read_lines(out)
    assert_exactly_once(seqs(lines))
    switches = sum(1 for x, y in zip(lines, lines[1:]) if x["version"] != y["version"])
    assert switches == 20
    reloads = [e for e in second_journal(tmp_path / "home") if e["trigger"] == "api"]
    assert len(reloads) == 20


# --------------------------------------------------------------------------------------------
# more triggers, log format, durable wires through the daemon


def test_follow_latest_activates_a_new_tag(tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    out = tmp_path / "out.jsonl"
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(scenario_yaml(out, version="v1", rate=100))
    v2.write_text(scenario_yaml(out, version="v2", rate=100))
    assert run_fluxmix(home, tmp_path, "scenario", "import", str(v1), "--name", "hello", "--tag", "1.0.0").returncode == 0
    mixer = start_mixer("-s", "hello", "--follow-latest", "0.2")
    assert mixer.wait_ready()["scenario"]["tag"] == "v1.0.0"
    assert run_fluxmix(home, tmp_path, "scenario", "import", str(v2), "--name", "hello", "--tag", "1.1.0").returncode == 0
    mixer.wait_journal(lambda e: e["trigger"] == "tag" and e["outcome"] == "activated", "a tag-triggered activation")
    block_until(lambda: any(l["version"] == "v2" for l in read_lines(out)), "v2 lines", proc=mixer)
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert_exactly_once(seqs(read_lines(out)))


def test_json_log_format_is_one_object_per_line(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "s.yaml"
    path.write_text(scenario_yaml(out, count=3, rate=None))
    mixer = start_mixer("-s", str(path), "--log-format", "json")
    mixer.wait_ready()
    assert mixer.stop() == 0, mixer.output()[-3000:]
    records = [json.loads(line) for line in mixer.output().splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    ready = [r for r in records if r["msg"].startswith("ready: ")]
    assert len(ready) == 1
    assert ready[0]["scenario"] == "hello" and ready[0]["gears"] == 4 and ready[0]["wires"] == 3
    assert len(ready[0]["hash"]) == 64 and ready[0]["ready_seconds"] >= 0


def _standard_scenario(out: Path, name: str, count: int) -> str:
    return scenario_yaml(out, name=name, count=count, rate=None).replace("transport: memory", "transport: standard")


def _embedded_server_pids(mixer_pid: int) -> set[int]:
    """The nats-server processes this mixer started (its children): other tests and other runs on
    the same machine start servers of their own, so a machine-wide count is not evidence."""
    result = subprocess.run(["pgrep", "-P", str(mixer_pid), "-x", "nats-server"], capture_output=True, text=True)
    return {int(pid) for pid in result.stdout.split()}


@pytest.mark.nats
def test_standard_wires_with_the_embedded_server(tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "durable.yaml"
    path.write_text(_standard_scenario(out, "durable", 200))
    mixer = start_mixer("-s", str(path))
    status = mixer.wait_ready()
    if mixer.proc.poll() is not None or "standard" not in status["brokers"]:
        pytest.fail(f"no standard broker\n{mixer.output()}")
    assert status["brokers"]["standard"]["state"] == "connected"
    servers = _embedded_server_pids(mixer.proc.pid)
    assert len(servers) == 1, f"expected one embedded nats-server child, found {servers}"
    block_until(lambda: len(read_lines(out)) == 200, "200 lines over JetStream", proc=mixer)
    code, text = mixer.request("GET", "/metrics")
    assert "fluxmix_nats_connected 1.0" in text
    from prometheus_client.parser import text_string_to_metric_families  # its parser: no format wording

    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    for count in ("disconnects", "reconnects", "errors", "embedded_restarts"):  # they only go up
        assert types.get(f"fluxmix_nats_{count}") == "counter", (count, types.get(f"fluxmix_nats_{count}"))
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert sorted(seqs(read_lines(out))) == list(range(1, 201))
    block_until(lambda: not any(pid_alive(pid) for pid in servers), "the embedded nats-server to stop with the mixer")


@pytest.mark.nats
async def test_standard_wires_with_nats_url(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess], nats_url: str, unique_name: str
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "durable.yaml"
    path.write_text(_standard_scenario(out, unique_name, 50))
    mixer = start_mixer("-s", str(path), "--nats-url", nats_url)
    status = mixer.wait_ready()
    assert status["brokers"]["standard"]["connected_url"] is not None
    block_until(lambda: len(read_lines(out)) == 50, "50 lines over JetStream", proc=mixer)
    assert mixer.stop() == 0, mixer.output()[-3000:]
    assert sorted(seqs(read_lines(out))) == list(range(1, 51))


def test_failed_start_at_startup_keeps_the_mixer_up_and_a_fixed_file_recovers(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "s.yaml"
    path.write_text(scenario_yaml(out, rate=100, sink_path="/proc/no-such-dir/sub/out.jsonl"))
    mixer = start_mixer("-s", str(path))

    def not_ready() -> Any:
        answer = mixer.try_get("/readyz")
        return answer if answer and answer[0] == 503 and "failed" in answer[1]["reason"] else None

    code, body = block_until(not_ready, "/readyz to report the failed start", proc=mixer)
    assert "sink" in body["reason"]
    assert mixer.status()["scenario"] is None and mixer.status()["watching"] == str(path.resolve())

    atomic_write(path, scenario_yaml(out, rate=100))
    block_until(lambda: len(read_lines(out)) >= 3, "output once the file is fixed", proc=mixer)
    assert mixer.request("GET", "/readyz")[0] == 200
    assert mixer.stop() == 0, mixer.output()[-3000:]


@pytest.mark.nats
def test_readyz_says_why_while_nats_is_down_and_recovers(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    port, launch = restartable_nats_server(tmp_path)  # restarted on the same port below
    server = launch()
    try:
        out = tmp_path / "out.jsonl"
        path = tmp_path / "durable.yaml"
        path.write_text(_standard_scenario(out, "outage", 20))
        mixer = start_mixer("-s", str(path), "--nats-url", f"nats://127.0.0.1:{port}")
        mixer.wait_ready()
        block_until(lambda: len(read_lines(out)) == 20, "20 lines", proc=mixer)

        server.terminate()
        server.wait(timeout=30)

        def down() -> Any:
            answer = mixer.try_get("/readyz")
            return answer if answer and answer[0] == 503 else None

        _, body = block_until(down, "/readyz 503 while NATS is down", proc=mixer)
        assert "NATS" in body["reason"] and "standard" in body["reason"]
        assert "fluxmix_nats_connected 0.0" in mixer.request("GET", "/metrics")[1]
        assert mixer.request("GET", "/healthz")[0] == 200  # alive, just not ready

        server = launch()
        mixer.wait_ready()
        assert mixer.stop() == 0, mixer.output()[-3000:]
        assert sorted(seqs(read_lines(out))) == list(range(1, 21))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
