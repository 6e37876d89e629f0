"""GET /events: Server-Sent Events from the real mixer, and a stuck client dropped without
slowing anything (the bus over a real aiohttp server and a socket that never reads)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, Callable

import pytest
from aiohttp import web

from fluxmix.errors import NatsUnavailableError
from fluxmix.mixer import events
from fluxmix.transports.embedded import EmbeddedNats
from tests.support.mixer import EventReader, MixerProcess, atomic_write, read_lines, scenario_yaml
from tests.support.polling import block_until
from tests.support.nats import nats_unavailable


def test_stream_says_hello_reports_a_reload_in_order_and_ticks_counters(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "hello.yaml"
    path.write_text(scenario_yaml(out, rate=100))
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    reader = EventReader("127.0.0.1", mixer.port)
    try:
        block_until(lambda: reader.kinds().count("counters") >= 2, "two counters events", proc=mixer)
        first = reader.events[0]
        assert first[1] == "hello"
        assert set(first[2]["layout"]["nodes"][i]["name"] for i in range(4)) == {"source", "stamp", "keep", "sink"}
        assert first[2]["status"]["scenario"]["name"] == "hello"
        ticks = [data for _, kind, data in reader.events if kind == "counters"]
        assert ticks[-1]["gears"]["sink"]["handled"] >= ticks[0]["gears"]["sink"]["handled"]
        assert {"state", "ready", "paused", "gears", "wires"} <= set(ticks[0])

        atomic_write(path, scenario_yaml(out, rate=100, version="v2"))
        block_until(lambda: "activation-finished" in reader.kinds(), "activation-finished", proc=mixer)
        kinds = reader.kinds()
        started, finished = kinds.index("activation-started"), kinds.index("activation-finished")
        assert started < finished
        assert reader.events[started][2]["trigger"] == "watch"
        entry = reader.events[finished][2]
        assert entry["outcome"] == "activated" and entry["trigger"] == "watch"
        assert entry["id"] == mixer.journal()[0]["id"]  # the journal entry itself
        ids = [event_id for event_id, _, _ in reader.events[1:]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "events arrive in order"

        # Gear state changes are reported too: pause makes the source `paused`.
        assert mixer.post("/pause")[0] == 200
        block_until(lambda: any(k == "gear-state" and d["gear"] == "source" and d["state"] == "paused"
                               for _, k, d in reader.events), "gear-state paused", proc=mixer)
        assert "paused" in reader.kinds()
        block_until(lambda: read_lines(out) and mixer.status()["gears"]["sink"]["handled"]
                   == mixer.status()["gears"]["source"]["emitted"], "drained", proc=mixer)
    finally:
        reader.close()
    # The mixer stops promptly although a client was streaming (shutdown ends the streams).
    assert mixer.stop() == 0, mixer.output()[-3000:]


async def test_a_stuck_client_is_dropped_and_never_slows_publishing() -> None:
    bus = events.EventBus(None, queue_size=4)
    app = web.Application()
    events.setup(app, bus)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    received: list[int] = []
    try:
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # ... and never reads
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        w.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()

        async def read_good() -> None:
            while True:
                line = await r.readline()
                if not line:
                    return
                if line.startswith(b"id: "):
                    received.append(int(line[4:]))

        good = asyncio.create_task(read_good())
        async with asyncio.timeout(10):
            while len(bus.subscribers) < 2:
                await asyncio.sleep(0.01)
        big = {"pad": "x" * 65536}
        published = 0
        async with asyncio.timeout(30):
            while bus.dropped_total == 0:
                bus.publish("counters", big)  # synchronous: it cannot wait on a client
                published += 1
                await asyncio.sleep(0.005)  # the good client keeps up
        assert bus.dropped_total == 1 and len(bus.subscribers) == 1
        # The healthy client got every event, in order, and keeps getting them.
        bus.publish("counters", {"last": True})
        async with asyncio.timeout(10):
            while not received or received[-1] != published + 1:
                await asyncio.sleep(0.01)
        assert received == [0, *range(1, published + 2)]  # hello is id 0
        # The stuck client's connection was closed by the mixer.
        stuck.settimeout(10)
        await asyncio.to_thread(read_until_closed, stuck)
        good.cancel()
        w.close()
    finally:
        stuck.close()
        await bus.close()
        await runner.cleanup()


def read_until_closed(sock: socket.socket) -> None:
    """Read what the server had sent until it closes the connection (EOF or reset); a socket
    still open after the timeout raises."""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            return
        if not chunk:
            return


def test_publish_order_and_ids_without_clients() -> None:
    bus = events.EventBus(None)
    bus.publish("x", {})  # nobody listens: nothing queued, nothing fails
    frame = events.encode(7, "gear-state", {"gear": "a"})
    assert frame == b'id: 7\nevent: gear-state\ndata: {"gear":"a"}\n\n'


@pytest.mark.nats
async def test_nats_disconnect_and_reconnect_are_events(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess], unique_name: str  # noqa: F811
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = EmbeddedNats(tmp_path / "nats", port=port)  # the same port after the restart
    try:
        url = await server.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    reader = None
    try:
        path = tmp_path / "flow.yaml"
        path.write_text(scenario_yaml(tmp_path / "out.jsonl", name=unique_name, rate=50)
                        .replace("transport: memory", "transport: standard"))
        mixer = start_mixer("-s", str(path), "--nats-url", url)
        mixer.wait_ready()
        reader = EventReader("127.0.0.1", mixer.port)
        block_until(lambda: "counters" in reader.kinds(), "a counters event", proc=mixer)
        assert reader.events[0][2]["status"]["brokers"]["standard"]["state"] == "connected"

        def nats_states() -> list[str]:
            return [data["state"] for _, kind, data in reader.events if kind == "nats"]

        await server.stop()
        block_until(lambda: "disconnected" in nats_states(), "a nats disconnected event", proc=mixer)
        await server.start()
        block_until(lambda: nats_states()[-1:] == ["connected"], "a nats connected event", proc=mixer)
        assert nats_states() == ["disconnected", "connected"]
        assert mixer.stop() == 0, mixer.output()[-3000:]
    finally:
        if reader is not None:
            reader.close()
        await server.stop()


def test_changes_between_snapshots_become_events_in_order() -> None:
    bus = events.EventBus(None)
    seen: list[tuple[str, Any]] = []
    bus.publish = lambda kind, data: seen.append((kind, data))  # type: ignore[method-assign]

    def snap(state: str, depth: int, nats: str) -> dict[str, Any]:
        return {"scenario": {"hash": "a"}, "gears": {"src": {"state": state}},
                "wires": {"src.out->sink.in": {"in_queue": depth, "capacity": 4}},
                "brokers": {"standard": {"state": nats}}}

    bus._compare(snap("running", 0, "connected"), snap("running", 4, "connected"))
    bus._compare(snap("running", 4, "connected"), snap("paused", 1, "disconnected"))
    assert [(k, d.get("state")) for k, d in seen] == [
        ("backpressure", "on"), ("gear-state", "paused"), ("backpressure", "off"), ("nats", "disconnected")]
    seen.clear()
    other = snap("running", 0, "connected")
    other["scenario"] = {"hash": "b"}  # a reload: every gear of the new runtime is announced
    bus._compare(snap("paused", 0, "connected"), other)
    assert seen == [("gear-state", {"gear": "src", "state": "running", "was": None, "last_error": None})]


def test_an_expectation_changing_state_is_an_event_and_counters_carry_them() -> None:
    bus = events.EventBus(None)
    seen: list[tuple[str, Any]] = []
    bus.publish = lambda kind, data: seen.append((kind, data))  # type: ignore[method-assign]

    def snap(state: str, scenario: str = "a") -> dict[str, Any]:
        return {"scenario": {"hash": scenario}, "gears": {},
                "expectations": [{"expect": "sink.handled >= 3", "state": state, "value": 1, "reason": "why"}]}

    bus._compare(snap("pending"), snap("pending"))
    assert seen == []
    bus._compare(snap("pending"), snap("passing"))
    bus._compare(snap("passing"), snap("failing"))
    bus._compare(snap("failing"), snap("pending", "b"))  # a reload: announced afresh
    assert [(k, d["state"], d["was"]) for k, d in seen] == [
        ("expectation", "passing", "pending"), ("expectation", "failing", "passing"), ("expectation", "pending", None)]
    assert events.counters(snap("failing"))["expectations"][0]["state"] == "failing"
