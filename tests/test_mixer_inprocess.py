"""The Mixer class driven in-process, as arq's Worker is in its tests: run() until stop()."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from fluxmix.errors import UserError
from fluxmix.mixer.daemon import Mixer
from fluxmix.mixer.settings import MixerSettings
from fluxmix.status import MemoryWireStatus

SCENARIO = """\
name: inproc
gears:
  - name: source
    type: generate
    config: {{count: {count}, body: {{kind: demo}}}}
  - name: sink
    type: file-out
    config: {{path: {out}}}
wires:
  - {{from: source.out, to: sink.in, transport: memory}}
"""


def _settings(tmp_path: Path, count: int = 5, **overrides: object) -> tuple[MixerSettings, Path]:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "inproc.yaml"
    path.write_text(SCENARIO.format(count=count, out=out))
    base = {"ref": str(path), "home": tmp_path / "home", "http_enabled": False, "watch": False, "stop_timeout": 10.0}
    return MixerSettings(**{**base, **overrides}), out  # type: ignore[arg-type]


async def _until(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_run_serves_the_scenario_until_stop_then_drains_and_returns_0(tmp_path: Path) -> None:
    settings, out = _settings(tmp_path)
    mixer = Mixer(settings, handle_signals=False)
    running = asyncio.create_task(mixer.run())
    await asyncio.wait_for(mixer.started.wait(), 60)
    service = mixer.service
    assert service is not None and service.readiness() == (True, "running")
    await _until(lambda: service.status().gears["sink"].handled == 5, "the sink to handle 5 messages")
    status = service.status()
    assert status.scenario is not None and status.scenario.name == "inproc"
    wire = status.wires["source.out->sink.in"]
    assert isinstance(wire, MemoryWireStatus) and wire.received == 5
    mixer.stop()
    mixer.stop()  # idempotent
    assert await asyncio.wait_for(running, 60) == 0
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert service.phase == "stopping"


async def test_the_api_answers_on_a_free_port_while_it_runs(tmp_path: Path) -> None:
    settings, _ = _settings(tmp_path, http_enabled=True, http_port=0)
    mixer = Mixer(settings, handle_signals=False)
    running = asyncio.create_task(mixer.run())
    try:
        await asyncio.wait_for(mixer.started.wait(), 60)
        assert mixer.http is not None
        host, port = mixer.http.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/status") as response:
                assert response.status == 200
                body = await response.json()
            assert body["scenario"]["name"] == "inproc" and "source.out->sink.in" in body["wires"]
            async with session.post(f"http://{host}:{port}/reload", json={}) as response:
                assert response.status == 401  # the token was generated into the store, and is required
    finally:
        mixer.stop()
        assert await asyncio.wait_for(running, 60) == 0
    assert mixer.http is None  # the API was shut down


async def test_a_bad_startup_reference_raises_before_anything_runs(tmp_path: Path) -> None:
    settings, _ = _settings(tmp_path, ref=str(tmp_path / "missing.yaml"))
    mixer = Mixer(settings, handle_signals=False)
    with pytest.raises(UserError, match="missing.yaml"):
        await mixer.run()
    assert mixer.service is None and not mixer.started.is_set()


async def test_stop_before_run_comes_up_idle_and_returns_0_without_activating(tmp_path: Path) -> None:
    settings, out = _settings(tmp_path)
    mixer = Mixer(settings, handle_signals=False)
    mixer.stop()
    assert await asyncio.wait_for(mixer.run(), 60) == 0
    assert not out.exists()
    assert mixer.service is not None and mixer.service.outcomes == {}


async def test_reload_reads_the_edited_file_in_process(tmp_path: Path) -> None:
    settings, out = _settings(tmp_path, count=3)
    mixer = Mixer(settings, handle_signals=False)
    running = asyncio.create_task(mixer.run())
    try:
        await asyncio.wait_for(mixer.started.wait(), 60)
        service = mixer.service
        assert service is not None
        await _until(lambda: service.status().gears["sink"].handled == 3, "the first 3 messages")
        first = service.status().scenario
        Path(settings.ref or "").write_text(SCENARIO.format(count=6, out=out))
        await mixer.reload()  # what SIGHUP does
        second = service.status().scenario
        assert first is not None and second is not None and second.hash != first.hash
        assert service.outcomes["activated"] == 2
        await _until(lambda: len(out.read_text().splitlines()) == 6, "the next 3 messages")
    finally:
        mixer.stop()
        assert await asyncio.wait_for(running, 60) == 0
