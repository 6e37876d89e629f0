"""End to end over standard wires: the real `fluxmix-mixer` process, a real nats-server.

generate -> map -> filter -> file-out with every wire on JetStream; the sink's `seq` values prove
nothing is lost (or duplicated) across a kill -9 of the mixer, 20 reloads, and a NATS restart.
Those three write envelopes through a file-out with `dedupe`, and count `body.seq`: every seq
exactly once, no tolerance (the wires deliver at least once; the sink de-duplicates by id).
The mixer-process helpers are the daemon tests' own (one harness, one behaviour).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.mixer import MixerProcess, assert_exactly_once, read_lines, scenario_yaml, seqs
from tests.support.nats import pid_alive, restartable_nats_server
from tests.support.polling import block_until


pytestmark = [pytest.mark.nats, pytest.mark.slow]


def standard(text: str) -> str:
    return text.replace("transport: memory", "transport: standard")


# The sink's de-duplication window. Between writing a message and seeing it again, the sink
# writes at most: the batch in hand at a crash (one fetch, NatsBroker.batch_size = 256) plus what
# flows while JetStream waits ack_wait to redeliver it (rate x (ack_wait + restart)), and a replay
# from a source's checkpoint. Every test here writes at most 3000 messages, so 10000 covers all.
DEDUPE = 10_000
KILL_ACK_WAIT = "3"  # seconds: the kill -9 test waits this long for the dead mixer's batch


def exactly_once_sink(text: str, window: int = DEDUPE) -> str:
    """The scenario with a file-out that writes envelopes and skips ids it already wrote."""
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == "type: file-out")
    path_line = next(i for i in range(at, len(lines)) if lines[i].lstrip().startswith("path:"))
    indent = lines[path_line][: len(lines[path_line]) - len(lines[path_line].lstrip())]
    lines[path_line + 1 : path_line + 1] = [f"{indent}envelope: true\n", f"{indent}dedupe: {window}\n"]
    return "".join(lines)


def body_seqs(out: Path) -> list[int]:
    """`seq` of every envelope line the sink wrote, repeats included."""
    return [line["body"]["seq"] for line in read_lines(out)]


def skipped_duplicates(mixer: MixerProcess) -> int:
    """What the sink reported skipping (its info summary when it stops)."""
    found = re.findall(r"skipped (\d+) duplicate messages", mixer.output())
    return sum(int(n) for n in found)


def embedded_state(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((home / "nats" / "embedded.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_generate_map_file_out_delivers_exactly_what_was_generated(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "flow.yaml"
    path.write_text(standard(scenario_yaml(out, name="exact", version="v1", count=1000, rate=None)))
    mixer = start_mixer("-s", str(path))
    status = mixer.wait_ready()
    assert status["brokers"]["standard"]["state"] == "connected"
    block_until(lambda: len(read_lines(out)) >= 1000, "1000 lines over JetStream", proc=mixer)
    wires = mixer.status()["wires"]
    assert all(w["transport"] == "standard" for w in wires.values())
    assert mixer.stop() == 0, mixer.output()[-3000:]
    lines = read_lines(out)
    assert sorted(seqs(lines)) == list(range(1, 1001))
    assert all(line["double"] == line["seq"] * 2 and line["version"] == "v1" and line["kind"] == "demo" for line in lines)


def test_kill_9_mid_stream_then_resume_writes_every_seq_exactly_once(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    """At least once on the wires, exactly once in the file: the batch the sink wrote but had not
    acked when it died comes back (after ack_wait) with the same ids, and file-out's dedupe
    recognises them from the file's tail."""
    total = 3000
    out = tmp_path / "out.jsonl"
    path = tmp_path / "flow.yaml"
    path.write_text(exactly_once_sink(standard(scenario_yaml(out, name="crashy", count=total, rate=1000))))
    first = start_mixer("-s", str(path), "--nats-ack-wait", KILL_ACK_WAIT)
    first.wait_ready()
    block_until(lambda: len(read_lines(out)) >= 500, "500 lines before the crash", proc=first)
    server = embedded_state(home)
    assert server is not None
    first.kill()  # SIGKILL: no drain, no ack of the batch in hand, no checkpoint flush
    at_crash = len(read_lines(out))
    # the embedded server dies with its mixer (Linux) or is replaced by the next start
    second = start_mixer("-s", "", "--nats-ack-wait", KILL_ACK_WAIT)  # resume the last active scenario
    second.wait_ready()
    assert not pid_alive(server["pid"]) or server["pid"] != embedded_state(home)["pid"]  # type: ignore[index]
    block_until(lambda: len(set(body_seqs(out))) >= total, f"all {total} seqs after resume", proc=second, timeout=90)

    def settled() -> bool:  # every redelivery still owed has come (it must have been skipped)
        wires = second.status()["wires"].values()
        return all(w.get("pending") == 0 and w.get("ack_pending") == 0 for w in wires)

    block_until(settled, "every wire settled: nothing pending, nothing unacked", proc=second, timeout=60)
    assert second.stop() == 0, second.output()[-3000:]
    assert at_crash < total
    values = body_seqs(out)
    assert sorted(set(values)) == list(range(1, total + 1)), "a seq was lost"
    assert_exactly_once(values)
    ids = [line["id"] for line in read_lines(out)]
    assert len(ids) == len(set(ids)) == total


def test_twenty_reloads_on_standard_wires_keep_every_seq_exactly_once(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    out = tmp_path / "out.jsonl"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(exactly_once_sink(standard(scenario_yaml(out, name="reloads", version="a", rate=300))))
    b.write_text(exactly_once_sink(standard(scenario_yaml(out, name="reloads", version="b", rate=300))))
    mixer = start_mixer("-s", str(a), "--no-watch")
    mixer.wait_ready()
    block_until(lambda: len(read_lines(out)) >= 10, "first lines", proc=mixer)
    outcomes = []
    for i in range(20):
        code, entry = mixer.post("/activate", {"ref": str(b if i % 2 == 0 else a)})
        assert code == 200, entry
        outcomes.append(entry["outcome"])
        count = len(read_lines(out))
        block_until(lambda count=count: len(read_lines(out)) > count, f"output after reload {i + 1}", proc=mixer)
    assert outcomes == ["activated"] * 20, outcomes
    assert mixer.stop() == 0, mixer.output()[-3000:]
    values = body_seqs(out)
    assert_exactly_once(values)
    # a graceful reload drains, so nothing needed skipping: the guarantee is the wires' own here
    assert skipped_duplicates(mixer) == 0, mixer.output()[-2000:]


def test_nats_restart_mid_stream_loses_nothing(tmp_path: Path, start_mixer: Callable[..., MixerProcess]) -> None:
    port, run_server = restartable_nats_server(tmp_path)

    server = run_server()
    try:
        total = 2000
        out = tmp_path / "out.jsonl"
        path = tmp_path / "flow.yaml"
        path.write_text(exactly_once_sink(standard(scenario_yaml(out, name="outage", count=total, rate=500))))
        mixer = start_mixer("-s", str(path), "--nats-url", f"nats://127.0.0.1:{port}")
        mixer.wait_ready()
        block_until(lambda: len(read_lines(out)) >= 300, "300 lines before the outage", proc=mixer)
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        block_until(lambda: (mixer.try_get("/readyz") or (200,))[0] == 503, "/readyz to report the outage", proc=mixer)
        time.sleep(1.0)  # an outage of a second or so while the source keeps trying
        server = run_server()
        block_until(lambda: len(set(body_seqs(out))) >= total, f"all {total} seqs", proc=mixer, timeout=90)
        assert mixer.stop() == 0, mixer.output()[-3000:]
        values = body_seqs(out)
        assert sorted(set(values)) == list(range(1, total + 1)), "a seq was lost"
        assert_exactly_once(values)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(10)


def test_two_mixers_with_two_homes_get_their_own_embedded_servers(tmp_path: Path) -> None:
    procs = []
    try:
        states = []
        for n in (1, 2):
            home = tmp_path / f"home{n}"
            home.mkdir()
            out = tmp_path / f"out{n}.jsonl"
            path = tmp_path / f"flow{n}.yaml"
            path.write_text(standard(scenario_yaml(out, name="twin", count=20, rate=None)))
            mixer = MixerProcess(tmp_path, home, ["-s", str(path)])
            procs.append(mixer)
            mixer.wait_ready()
            block_until(lambda out=out: len(read_lines(out)) >= 20, "20 lines", proc=mixer)
            states.append(embedded_state(home))
        assert states[0] and states[1]
        assert states[0]["url"] != states[1]["url"] and states[0]["pid"] != states[1]["pid"]
        for mixer in procs:
            assert mixer.stop() == 0, mixer.output()[-3000:]
        for state in states:
            block_until(lambda state=state: not pid_alive(state["pid"]), "the embedded server to stop with its mixer")
    finally:
        for mixer in procs:
            mixer.kill()


def test_sigkill_of_the_embedded_server_is_restarted_and_every_seq_arrives_once(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    """The mixer supervises its embedded nats-server: killed mid-stream, it comes back on the same
    port and store; clients reconnect, consumers re-pull, nothing is lost or written twice."""
    total = 2000
    out = tmp_path / "out.jsonl"
    path = tmp_path / "flow.yaml"
    path.write_text(exactly_once_sink(standard(scenario_yaml(out, name="nats-dies", count=total, rate=500))))
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    block_until(lambda: len(read_lines(out)) >= 300, "300 lines before the kill", proc=mixer)
    server = embedded_state(home)
    assert server is not None
    os.kill(server["pid"], signal.SIGKILL)
    block_until(lambda: (embedded_state(home) or {}).get("pid") not in (None, server["pid"]),
               "the embedded server to be restarted", proc=mixer)
    restarted = embedded_state(home)
    assert restarted is not None and restarted["url"] == server["url"]  # same port
    block_until(lambda: len(set(body_seqs(out))) >= total, f"all {total} seqs", proc=mixer, timeout=90)
    embedded = mixer.status()["brokers"]["standard"]["embedded_server"]
    assert embedded["restarts"] >= 1 and embedded["running"]
    assert not pid_alive(server["pid"])  # reaped, not a zombie
    assert mixer.stop() == 0, mixer.output()[-3000:]
    values = body_seqs(out)
    assert sorted(set(values)) == list(range(1, total + 1)), "a seq was lost"
    assert_exactly_once(values)


def test_reload_and_stop_while_nats_is_unreachable_end_in_bounded_time_and_lose_nothing(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    """The real mixer on an external nats-server that goes away: a (partial) reload is answered
    within --stop-timeout plus a bound, SIGTERM ends the mixer within
    --stop-timeout plus a bound, and a mixer started once NATS is back writes every seq exactly
    once at a de-duplicating sink (the stopped one's unacked messages are redelivered, its
    unconfirmed publishes replayed from the source's checkpoint)."""
    port, run_server = restartable_nats_server(tmp_path)

    stop_timeout, bound = 20.0, 10.0  # MixerProcess passes --stop-timeout 20
    server = run_server()
    try:
        total = 3000
        out = tmp_path / "out.jsonl"
        a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
        a.write_text(exactly_once_sink(standard(scenario_yaml(out, name="down", version="a", count=total, rate=400))))
        b.write_text(exactly_once_sink(standard(scenario_yaml(out, name="down", version="b", count=total, rate=400))))
        args = ("-s", str(a), "--no-watch", "--nats-url", f"nats://127.0.0.1:{port}", "--nats-ack-wait", KILL_ACK_WAIT)
        mixer = start_mixer(*args)
        mixer.wait_ready()
        block_until(lambda: len(read_lines(out)) >= 300, "300 lines before the outage", proc=mixer)
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        block_until(lambda: (mixer.try_get("/readyz") or (200,))[0] == 503, "/readyz to report the outage", proc=mixer)

        # the reload needs no API call (the streams and consumers were ensured on this
        # connection), so it goes ahead: the stop of the gear it restarts (the version stamp)
        # waits up to --stop-timeout for NATS to come back, then is abandoned
        t0 = time.monotonic()
        code, entry = mixer.post("/activate", {"ref": str(b)})
        took = time.monotonic() - t0
        assert code == 200 and took < stop_timeout + bound, f"a reload while NATS was down took {took:.1f} s: {entry}"

        t0 = time.monotonic()
        code = mixer.stop()
        took = time.monotonic() - t0
        assert took < stop_timeout + bound, f"SIGTERM while NATS was down took {took:.1f} s\n{mixer.output()[-3000:]}"
        assert "not confirmed by JetStream" in mixer.output(), "the log must say why the source's stop was abandoned"
        written = len(read_lines(out))
        assert written < total

        server = run_server()
        mixer = start_mixer(*args)
        mixer.wait_ready()
        block_until(lambda: len(set(body_seqs(out))) >= total, f"all {total} seqs", proc=mixer, timeout=90)
        time.sleep(float(KILL_ACK_WAIT) + 1)  # a late redelivery would show up as a repeat
        assert mixer.stop() == 0, mixer.output()[-3000:]
        values = body_seqs(out)
        assert sorted(set(values)) == list(range(1, total + 1)), "a seq was lost"
        assert_exactly_once(values)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(10)
