"""The mixer's HTTP API and `fluxmix mixer ...` against a real `fluxmix-mixer` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.support.mixer import FLUXMIX, MixerProcess, read_lines, scenario_yaml
from tests.support.polling import block_until

TOKEN = "s3cret-token"


def _running(tmp_path: Path, start_mixer: Callable[..., MixerProcess], **kwargs: str) -> tuple[MixerProcess, Path]:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "api.yaml"
    path.write_text(scenario_yaml(out, rate=100))
    mixer = start_mixer("-s", str(path), **kwargs)
    mixer.wait_ready()
    block_until(lambda: len(read_lines(out)) >= 3, "first lines", proc=mixer)
    return mixer, path


def test_health_status_journal_and_metrics(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    mixer, path = _running(tmp_path, start_mixer)
    assert mixer.request("GET", "/healthz") == (200, {"status": "ok"})
    code, ready = mixer.request("GET", "/readyz")
    assert code == 200 and ready["status"] == "ready"

    status = mixer.status()
    assert status["state"] == "running" and status["ready"] is True
    assert set(status["scenario"]) >= {"name", "tag", "hash", "ref"}
    assert status["scenario"]["name"] == "hello" and len(status["scenario"]["hash"]) == 64
    assert set(status["gears"]) == {"source", "stamp", "keep", "sink"}
    for gear in status["gears"].values():
        assert {"type", "state", "handled", "errors"} <= set(gear)
    assert status["gears"]["source"]["type"] == "generate"
    assert len(status["wires"]) == 3
    for wire in status["wires"].values():
        assert wire["transport"] == "memory" and {"sent", "received", "dropped"} <= set(wire)
    assert "memory" in status["brokers"]
    assert status["uptime_seconds"] >= 0
    assert status["last_reload"]["outcome"] == "activated" and status["last_reload"]["trigger"] == "startup"

    entries = mixer.get("/journal?limit=5")["entries"]
    assert 1 <= len(entries) <= 5 and entries[0]["outcome"] == "activated"
    assert mixer.request("GET", "/journal?limit=zero")[0] == 400
    assert mixer.request("GET", "/journal?limit=0")[0] == 400

    code, text = mixer.request("GET", "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    handled = {s.labels["gear"]: s.value for s in families["fluxmix_gear_handled"].samples if s.name.endswith("_total")}
    assert set(handled) == {"source", "stamp", "keep", "sink"}
    assert handled["sink"] > 0
    sent = [s for s in families["fluxmix_wire_sent"].samples if s.name == "fluxmix_wire_sent_total"]
    assert {s.labels["transport"] for s in sent} == {"memory"} and len(sent) == 3
    assert "fluxmix_wire_in_queue" in families
    reloads = {s.labels["outcome"]: s.value for s in families["fluxmix_reloads"].samples if s.name == "fluxmix_reloads_total"}
    assert reloads["activated"] == 1
    assert families["fluxmix_ready"].samples[0].value == 1

    code, body = mixer.request("GET", "/nope")
    assert code == 404 and "error" in body
    assert mixer.stop() == 0, mixer.output()[-3000:]


def test_post_endpoints_need_the_token(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    mixer, path = _running(tmp_path, start_mixer, token=TOKEN)
    code, body = mixer.request("POST", "/activate", {"ref": str(path)})
    assert code == 401 and "bearer token" in body["error"]
    assert mixer.request("POST", "/reload", token="wrong")[0] == 401
    assert mixer.request("GET", "/status")[0] == 200  # reads stay open

    code, body = mixer.request("POST", "/activate", raw=b"{not json", token=TOKEN)
    assert code == 400 and "not valid JSON" in body["error"] and "\n" not in body["error"]
    code, body = mixer.request("POST", "/activate", {"reff": "x"}, token=TOKEN)
    assert code == 400 and "ref" in body["error"]

    code, entry = mixer.request("POST", "/reload", token=TOKEN)
    assert code == 200 and entry["outcome"] == "unchanged" and entry["trigger"] == "api"
    code, entry = mixer.request("POST", "/activate", {"ref": "nosuch:v9.9.9"}, token=TOKEN)
    assert code == 422 and entry["outcome"] == "rejected", entry
    assert mixer.request("GET", "/readyz")[0] == 200  # the old scenario still runs
    assert mixer.stop() == 0, mixer.output()[-3000:]


def _handled(mixer: MixerProcess, gear: str) -> float:
    code, text = mixer.request("GET", "/metrics")
    assert code == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fluxmix_gear_handled_total" and sample.labels["gear"] == gear:
                return sample.value
    raise AssertionError(f"no fluxmix_gear_handled_total for {gear}")


def _cli(mixer: MixerProcess, cwd: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLUXMIX_API_TOKEN", "FLUXMIX_MIXER_URL")}
    env["FLUXMIX_MIXER_URL"] = mixer.url
    if token:
        env["FLUXMIX_API_TOKEN"] = token
    return subprocess.run([str(FLUXMIX), "mixer", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_fluxmix_mixer_commands_against_a_running_daemon(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    mixer, path = _running(tmp_path, start_mixer, token=TOKEN)

    result = _cli(mixer, tmp_path, "status")
    assert result.returncode == 0, result.stderr
    assert "hello:" in result.stdout and "GEAR" in result.stdout and "source" in result.stdout
    assert "memory" in result.stdout

    result = _cli(mixer, tmp_path, "status", "--json")
    assert json.loads(result.stdout)["scenario"]["name"] == "hello"

    result = _cli(mixer, tmp_path, "journal")
    assert result.returncode == 0 and "startup" in result.stdout and "activated" in result.stdout

    v2 = tmp_path / "v2.yaml"
    v2.write_text(scenario_yaml(tmp_path / "out.jsonl", version="v2", rate=100))
    result = _cli(mixer, tmp_path, "activate", "v2.yaml")
    assert result.returncode == 1 and "401" in result.stderr  # no token
    handled_before = _handled(mixer, "sink")
    result = _cli(mixer, tmp_path, "activate", "v2.yaml", token=TOKEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("activated")
    assert _handled(mixer, "sink") >= handled_before  # counters stay monotonic across a reload
    assert mixer.status()["following"] == str(v2.resolve())

    result = _cli(mixer, tmp_path, "reload", "--json", token=TOKEN)
    assert result.returncode == 0 and json.loads(result.stdout)["outcome"] == "unchanged"

    bad = tmp_path / "bad.yaml"
    bad.write_text(scenario_yaml(tmp_path / "out.jsonl").replace("type: map", "type: mapp"))
    result = _cli(mixer, tmp_path, "activate", str(bad), token=TOKEN)
    assert result.returncode == 2  # the operator's mistake (journal error_kind "user"), like other bad input
    assert result.stderr.startswith("error: activation rejected")
    assert "Traceback" not in result.stderr
    assert mixer.stop() == 0, mixer.output()[-3000:]

    result = _cli(mixer, tmp_path, "status")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot reach the mixer at {mixer.url}: connection refused"
