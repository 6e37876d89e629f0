"""A fleet member as its operator watches it: /readyz follows the fleet's KV, /metrics shows the
fleet. A real `fluxmix-mixer --fleet` on a real nats-server that the test stops and starts."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mixer import MixerProcess, read_lines
from tests.support.nats import restartable_nats_server
from tests.support.polling import block_until

pytestmark = pytest.mark.nats

SCENARIO = """\
name: opsdemo
gears:
  - {name: source, type: generate, config: {rate: 50}}
  - {name: sink, type: file-out, config: {path: %s, envelope: true}}
wires:
  - {from: source.out, to: sink.in, transport: memory}
"""


def samples(mixer: MixerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics: (name, sorted labels) -> value."""
    status, text = mixer.request("GET", "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def fleet_metric(mixer: MixerProcess, name: str, **labels: str) -> float | None:
    return samples(mixer).get((f"fluxmix_fleet_{name}", tuple(sorted(labels.items()))))


def test_readyz_follows_the_fleet_kv_and_metrics_show_the_fleet(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    port, start_server = restartable_nats_server(tmp_path)
    server = start_server()
    try:
        out = tmp_path / "out.jsonl"
        path = tmp_path / "ops.yaml"
        path.write_text(SCENARIO % out)
        mixer = start_mixer("-s", str(path), "--fleet", "ops", "--fleet-member", "m1",
                            "--nats-url", f"nats://127.0.0.1:{port}", "--fleet-member-ttl", "3",
                            "--fleet-lease-ttl", "3")
        mixer.wait_ready()
        block_until(lambda: len(read_lines(out)) >= 5, "lines written under the lease", proc=mixer)

        def settled() -> dict[str, Any] | None:  # what one heartbeat (every TTL/3) makes visible
            values = {name: fleet_metric(mixer, name) for name in
                      ("connected", "members", "members_in_sync", "leases_held", "desired_match")}
            values["lease"] = fleet_metric(mixer, "lease_held", lease="opsdemo.source")
            values["committed"] = fleet_metric(mixer, "claims_total", result="committed")
            return values if values["members_in_sync"] == 1 and (values["committed"] or 0) > 0 else None

        values = block_until(settled, "the fleet series", proc=mixer)
        assert values == {"connected": 1, "members": 1, "members_in_sync": 1, "leases_held": 1,
                          "desired_match": 1, "lease": 1, "committed": values["committed"]}
        assert fleet_metric(mixer, "claims_total", result="skipped") == 0  # one member: nothing done elsewhere
        assert mixer.status()["fleet"]["connection"]["ready"] is True

        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

        def not_ready() -> Any:
            answer = mixer.try_get("/readyz")
            return answer if answer and answer[0] == 503 else None

        _, body = block_until(not_ready, "/readyz 503 while the fleet's NATS is down", proc=mixer)
        assert body["reason"].startswith("fleet ops: "), body
        assert fleet_metric(mixer, "connected") == 0
        assert samples(mixer)[("fluxmix_ready", ())] == 0
        assert mixer.request("GET", "/healthz")[0] == 200  # alive, just not ready

        server = start_server()
        mixer.wait_ready()  # reconnected, and the next heartbeat reached the KV
        assert fleet_metric(mixer, "connected") == 1
        count = len(read_lines(out))
        block_until(lambda: len(read_lines(out)) > count + 5, "lines again after the outage", proc=mixer)
        assert mixer.stop() == 0, mixer.output()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def test_metrics_of_a_mixer_outside_a_fleet_have_no_fleet_series(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]
) -> None:
    from tests.support.mixer import run_fluxmix

    mixer = start_mixer()
    mixer.wait_ready()
    assert not [name for name, _ in samples(mixer) if name.startswith("fluxmix_fleet_")]
    # asking it for its fleet is the operator's mistake: one line, exit 2
    shown = run_fluxmix(home, tmp_path, "mixer", "status", "--fleet", "--url", mixer.url)
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr == f"error: {mixer.url}: this mixer is not a fleet member (it was started without --fleet)\n"


RELEASED = """\
name: relsc
gears:
  - {name: source, type: generate, config: {rate: 10}}
  - {name: sink, type: file-out, config: {path: out/sink.jsonl, envelope: true}}
wires:
  - {from: source.out, to: sink.in, transport: memory}
"""


async def test_release_settles_a_gone_members_file_and_its_leases(
    tmp_path: Path, home: Path, nats_url: str, unique_name: str
) -> None:
    """A member killed for good: m1, m2 committed and recorded, m3 committed but not recorded,
    m4 written but never committed (another member will write it). Release keeps m1-m3, cuts m4,
    frees the source lease it held; refused while the member is registered."""
    import asyncio
    import json

    import nats

    from fluxmix.fleet import kvconn
    from fluxmix.fleet.claims import SinkClaims
    from fluxmix.fleet.leases import SourceLeases
    from fluxmix.fleet.membership import Membership
    from fluxmix.fleet.release import SinkContext
    from fluxmix.gears.file_out import FileOut
    from fluxmix.message import Message
    from fluxmix.store import open_store
    from tests.support.mixer import run_fluxmix

    fleet = unique_name
    (tmp_path / "relsc.yaml").write_text(RELEASED)
    imported = run_fluxmix(home, tmp_path, "scenario", "import", "relsc.yaml", "--json")
    assert imported.returncode == 0, imported.stderr
    digest = json.loads(imported.stdout)["hash"].removeprefix("sha256:")
    store = open_store(home)
    store.set_active(digest, "relsc:latest", known_good=True)  # what the member's mixer ran last
    store.close()

    nc = await nats.connect(nats_url)
    b = await kvconn.open_buckets(nc.jetstream(), fleet, member_ttl=30, lease_ttl=30, claim_ttl=600, replicas=1)
    gone = Membership(b.members, "gone", "g1", ttl=30, describe=dict)
    lease = SourceLeases(b.leases, "gone", "g1", ttl=30)
    path = tmp_path / "out" / "sink.jsonl"
    msgs = [Message(f"relsc/source/{i}", {"seq": i}) for i in range(1, 5)]
    try:
        await gone.register()
        assert await lease.acquire("relsc", "source", asyncio.Event())
        sink = FileOut("sink", {"path": str(path), "envelope": True},
                       SinkContext("relsc", digest, "sink", SinkClaims(b.claims, "gone", "g1", gone.alive, live_wait=5)))
        await sink.start()
        await sink.handle_batch("in", msgs[:2])
        await sink.flush()
        await sink.handle_batch("in", msgs[2:])
        assert sink._claims is not None
        await sink._write_claimed()  # m3, m4 written ...
        await sink._claims.commit([msgs[2].id])  # ... m3 committed, then killed for good
        sink._close()
        await lease.close()  # no more renewals; the key stays until its TTL

        def release(*extra: str) -> Any:
            return run_fluxmix(home, tmp_path, "fleet", "release", "gone", "--fleet", fleet, "--nats-url", nats_url,
                               "--dir", str(tmp_path), *extra)

        refused = await asyncio.to_thread(release)
        assert refused.returncode == 2 and "member gone is registered" in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1
        await b.members.delete("gone")  # its registration aged out

        done = await asyncio.to_thread(release)
        assert done.returncode == 0, done.stderr
        assert re.search(r"^sink +\S+sink\.jsonl +[1-9]\d* B$", done.stdout, re.M), done.stdout  # m4's line cut
        assert "leases released: relsc.source" in done.stdout, done.stdout
        assert [json.loads(line)["body"]["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]
        with pytest.raises(Exception):  # the lease is free at once, not after its TTL
            await b.leases.get("relsc.source")

        again = await asyncio.to_thread(release, "--json")  # settled: nothing more to do
        assert again.returncode == 0, again.stderr
        report = json.loads(again.stdout)
        assert report["sinks"] == [{"gear": "sink", "path": str(path), "cut_bytes": 0}]
        assert report["leases_released"] == []
        assert [json.loads(line)["body"]["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]
    finally:
        await nc.close()


def test_release_without_nats_is_one_line(tmp_path: Path, home: Path) -> None:
    from tests.support.mixer import run_fluxmix
    from tests.support.ports import reserve_port

    url = f"nats://127.0.0.1:{reserve_port()}"  # nothing listens there
    done = run_fluxmix(home, tmp_path, "fleet", "release", "m1", "--fleet", "ops", "--nats-url", url)
    assert done.returncode == 1 and done.stderr == f"error: fleet: cannot reach NATS at {url}: TimeoutError\n"
    done = run_fluxmix(home, tmp_path, "fleet", "release", "no good", "--fleet", "ops", "--nats-url", url)
    assert done.returncode == 2 and done.stderr.startswith("error: MEMBER 'no good': a member id is")
    missing = tmp_path / "no-such-dir"
    done = run_fluxmix(home, tmp_path, "fleet", "release", "m1", "--fleet", "ops", "--nats-url", url,
                       "--dir", str(missing))
    assert done.returncode == 2 and done.stderr == f"error: --dir {str(missing)!r}: no such directory (the member's working directory)\n"
