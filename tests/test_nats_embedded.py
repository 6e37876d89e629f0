"""The embedded nats-server: start/stop, one per store dir, leftovers from a crashed mixer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nats
import pytest

from fluxmix.errors import NatsUnavailableError
from fluxmix.transports.embedded import EmbeddedNats, find_nats_server

from tests.support.nats import pid_alive

pytestmark = pytest.mark.nats


async def _jetstream_works(url: str) -> None:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().account_info()
        assert info is not None
    finally:
        await nc.close()


async def test_starts_with_jetstream_and_stops(nats_embedded: EmbeddedNats) -> None:
    url = nats_embedded.url
    assert url is not None and url.startswith("nats://127.0.0.1:")
    await _jetstream_works(url)
    pid = nats_embedded.pid
    assert pid is not None and pid_alive(pid)
    assert (nats_embedded.store_dir / "jetstream").is_dir()
    assert nats_embedded.log_path.exists() and nats_embedded.state_path.exists()
    await nats_embedded.stop()
    assert not pid_alive(pid)
    assert not nats_embedded.state_path.exists()
    await nats_embedded.stop()  # idempotent


async def test_two_homes_get_two_servers_and_one_home_refuses_a_second(tmp_path: Path) -> None:
    a, b = EmbeddedNats(tmp_path / "a"), EmbeddedNats(tmp_path / "b")
    try:
        url_a, url_b = await a.start(), await b.start()
        assert url_a != url_b and a.pid != b.pid
        with pytest.raises(NatsUnavailableError, match="another process owns"):
            await EmbeddedNats(tmp_path / "a").start()
        assert a.running  # the refused second start did not touch the first
    finally:
        await a.stop()
        await b.stop()


async def test_a_leftover_server_from_a_crash_is_replaced(tmp_path: Path) -> None:
    """A server whose mixer died (here: started by hand, no parent-death signal) is replaced."""
    store = tmp_path / "nats"
    store.mkdir()
    leftover = subprocess.Popen(
        [str(find_nats_server()), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", "-1",
         "--pid", str(store / "nats-server.pid"), "-l", str(store / "old.log")],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not (store / "nats-server.pid").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        server = EmbeddedNats(store)
        try:
            await server.start()
            assert leftover.wait(10) is not None  # the leftover was terminated
            assert server.pid != leftover.pid
            await _jetstream_works(server.url or "")
        finally:
            await server.stop()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


async def test_messages_survive_a_server_restart_on_the_same_store(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = await server.start()
    try:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s.>"])
        await js.publish("s.x", b"kept")
        await nc.close()
        await server.stop()
        url = await server.start()
        nc = await nats.connect(url)
        info = await nc.jetstream().stream_info("S")
        assert info.state.messages == 1
        await nc.close()
    finally:
        await server.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_does_not_outlive_a_killed_mixer(tmp_path: Path) -> None:
    """kill -9 of the owning process takes the server down (the next start would replace it anyway)."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from fluxmix.transports.embedded import EmbeddedNats
        async def main():
            server = EmbeddedNats({str(tmp_path / "nats")!r})
            await server.start()
            print(server.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline() if owner.stdout else ""
        if not line.strip():
            pytest.fail(f"owner did not start a server (exit {owner.poll()})")
        pid = int(line)
        assert pid_alive(pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


async def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", extra_args=["--no-such-flag"])
    with pytest.raises(NatsUnavailableError, match="nats-server exited"):
        await server.start()
    await server.stop()
