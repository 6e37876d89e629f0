"""`fluxmix mixer top`: one frame for scripts, and the live view quitting on `q` in a real pty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import termios
import time
from pathlib import Path
from typing import Callable

import pytest

from fluxmix.cli.top import Sampler, frame_data
from tests.support.mixer import FLUXMIX, MixerProcess, run_fluxmix, scenario_yaml
from tests.support.polling import block_until


def test_once_prints_one_frame_with_every_gear_wire_and_rates(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text(scenario_yaml(tmp_path / "out.jsonl", rate=100))
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    done = run_fluxmix(home, tmp_path, "mixer", "top", "--once", "--interval", "0.5", "--url", mixer.url)
    assert done.returncode == 0, done.stderr
    for name in ("source", "stamp", "keep", "sink", "source.out->stamp.in", "keep.out->sink.in", "hello:"):
        assert name in done.stdout
    assert "/s" in done.stdout and "\x1b[" not in done.stdout  # rates; no escape codes when piped

    done = run_fluxmix(home, tmp_path, "mixer", "top", "--once", "--json", "--interval", "0.5", "--url", mixer.url)
    frame = json.loads(done.stdout)
    sink = next(g for g in frame["gears"] if g["name"] == "sink")
    assert sink["in_rate"] > 0 and sink["out_rate"] is None  # a sink has no output rate
    assert {w["wire"] for w in frame["wires"]} == {"source.out->stamp.in", "stamp.out->keep.in", "keep.out->sink.in"}


def test_unreachable_mixer_is_one_line_and_json_needs_once(tmp_path: Path, home: Path) -> None:  # noqa: F811
    done = run_fluxmix(home, tmp_path, "mixer", "top", "--once", "--url", "http://127.0.0.1:9")
    assert done.returncode == 1 and done.stderr.startswith("error: cannot reach the mixer")
    assert done.stderr.count("\n") == 1
    done = run_fluxmix(home, tmp_path, "mixer", "top", "--json", "--url", "http://127.0.0.1:9")
    assert done.returncode == 2 and "--json needs --once" in done.stderr


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_live_view_redraws_and_quits_on_q_or_ctrl_c(
    key: bytes, tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text(scenario_yaml(tmp_path / "out.jsonl", rate=100))
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    leader, follower = pty.openpty()
    env = {**os.environ, "FLUXMIX_HOME": str(home), "COLUMNS": "140", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen([str(FLUXMIX), "mixer", "top", "--interval", "0.3", "--url", mixer.url],
                            stdin=follower, stdout=follower, stderr=follower, env=env, cwd=tmp_path,
                            preexec_fn=_controlling_terminal)
    os.close(follower)
    seen = bytearray()
    try:
        def read_some() -> bool:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    seen.extend(os.read(leader, 65536))
                except OSError:
                    pass
            return seen.count(b"keep.out->sink.in") >= 2  # at least two frames drawn

        block_until(read_some, "two frames of top", proc=mixer)
        os.write(leader, key)  # the pty turns Ctrl-C into SIGINT, as a terminal does
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            read_some()
        assert proc.poll() == 0, seen.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)


def _controlling_terminal() -> None:
    """In the child: a new session whose controlling terminal is the pty (stdin), so the line
    discipline sends SIGINT on Ctrl-C as a real terminal would.

    SIGINT back to its default, as an interactive shell sets it for a foreground job: a suite run
    in the background (`pytest ... &`, two suites at once) inherits SIGINT *ignored*, exec keeps
    that, Python then installs no KeyboardInterrupt handler, and Ctrl-C did nothing (the flake)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_rates_restart_when_the_scenario_changes() -> None:
    sampler = Sampler()
    sampler.add({"scenario": {"hash": "a"}, "gears": {"g": {"handled": 10, "emitted": 0}}, "wires": {}}, 0.0)
    sampler.add({"scenario": {"hash": "a"}, "gears": {"g": {"handled": 30, "emitted": 0}}, "wires": {}}, 2.0)
    assert sampler.rate("gear", "g", "handled") == 10.0
    sampler.add({"scenario": {"hash": "b"}, "gears": {"g": {"handled": 1, "emitted": 0}}, "wires": {}}, 3.0)
    assert sampler.rate("gear", "g", "handled") is None  # counters of another runtime: no rate
    assert frame_data({"gears": {}, "wires": {}}, sampler)["scenario"] is None
