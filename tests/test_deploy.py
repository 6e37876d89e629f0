"""deploy/: what can be checked without a Docker engine or a Kubernetes cluster.

Every YAML file parses; the NATS configurations pass the real `nats-server -t`; the image's
command line is accepted by `fluxmix-mixer`; the probes and healthchecks of the Dockerfile,
the compose file and the manifests are run against a real mixer (started with the image's
arguments on a free loopback port) and answer 200.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from fluxmix.cli.mixerd import main as mixerd_main
from fluxmix.transports.embedded import find_nats_server
from tests.support.mixer import MixerProcess

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()


def k8s(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_yaml_file_parses_and_manifests_are_well_formed() -> None:
    for path in sorted(DEPLOY.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, path
        if path.parent.name == "k8s":
            for doc in docs:
                assert {"apiVersion", "kind", "metadata"} <= set(doc), (path, doc.get("kind"))
                if doc["kind"] == "StatefulSet":
                    spec = doc["spec"]
                    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    steps = instructions()
    assert [k for k, _ in steps].count("FROM") >= 2
    assert any(k == "COPY" and args.startswith("--from=build") for k, args in steps)
    user = next(args for k, args in steps if k == "USER")
    assert user.split(":")[0] not in ("root", "0")
    exposed = next(args for k, args in steps if k == "EXPOSE")
    health = next(args for k, args in steps if k == "HEALTHCHECK")
    assert f"127.0.0.1:{exposed}/healthz" in health
    # Everything the build copies exists and is not excluded by .dockerignore.
    allowed = {line.strip("!/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    for k, args in steps:
        if k == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists() and source.rstrip("/") in allowed, source


def _image_args() -> list[str]:
    steps = instructions()
    entry = json.loads(next(args for k, args in steps if k == "ENTRYPOINT"))
    assert entry == ["fluxmix-mixer"]
    return json.loads(next(args for k, args in steps if k == "CMD"))


def _on_port(args: list[str], port: int) -> list[str]:
    """The same arguments, listening on a free loopback port instead of 0.0.0.0:8470."""
    return [f"127.0.0.1:{port}" if a == "0.0.0.0:8470" else a for a in args]


def test_image_compose_and_manifest_arguments_are_accepted_by_fluxmix_mixer() -> None:
    services = compose()["services"]
    statefulset = of_kind(k8s("mixer.yaml"), "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    for args in (_image_args(), services["mixer"]["command"], container["args"]):
        assert "0.0.0.0:8470" in args
        mixerd_main.make_context("fluxmix-mixer", list(args))  # raises on an unknown flag or bad value
    # The mixer is pointed at every NATS node, with a token since it listens beyond loopback.
    urls = services["mixer"]["environment"]["FLUXMIX_NATS_URL"].split(",")
    assert urls == [f"nats://{name}:4222" for name in ("nats-1", "nats-2", "nats-3")]
    assert {"nats-1", "nats-2", "nats-3"} <= set(services)
    assert "FLUXMIX_API_TOKEN" in services["mixer"]["environment"]
    env = {e["name"]: e for e in container["env"]}
    nats_set = of_kind(k8s("nats.yaml"), "StatefulSet")
    replicas, service = nats_set["spec"]["replicas"], nats_set["spec"]["serviceName"]
    assert env["FLUXMIX_NATS_URL"]["value"].split(",") == [f"nats://nats-{i}.{service}:4222" for i in range(replicas)]
    assert "secretKeyRef" in env["FLUXMIX_API_TOKEN"]["valueFrom"]


def test_probes_and_healthchecks_answer_200_on_a_real_mixer(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    mixer = start_mixer()  # idle: the image's default (`-s ""` with an empty store)
    mixer.wait_ready()
    port = mixer.port
    # The Dockerfile's and compose file's healthcheck commands, run as written (port swapped).
    docker_health = next(args for k, args in instructions() if k == "HEALTHCHECK")
    docker_cmd = json.loads(docker_health.split("CMD", 1)[1].strip())
    compose_cmd = compose()["services"]["mixer"]["healthcheck"]["test"][1:]
    for cmd in (docker_cmd, compose_cmd):
        assert cmd[0] == "python"
        cmd = [sys.executable] + [a.replace("127.0.0.1:8470", f"127.0.0.1:{port}") for a in cmd[1:]]
        assert subprocess.run(cmd, timeout=30).returncode == 0
    # Every HTTP probe of the mixer's manifest, on the port it names.
    container = of_kind(k8s("mixer.yaml"), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert named_ports[probe["port"]] == 8470
        with urllib.request.urlopen(f"{mixer.url}{probe['path']}", timeout=10) as response:
            assert response.status == 200
    service = of_kind(k8s("mixer.yaml"), "Service")
    assert service["spec"]["ports"][0]["targetPort"] in named_ports


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_nats_configurations_pass_nats_server_check(tmp_path: Path, source: str) -> None:
    if source == "compose":
        conf, env = (DEPLOY / "compose" / "nats.conf").read_text(), {"NATS_NAME": "nats-1"}
        expected_routes = [f"nats-route://nats-{i}:6222" for i in (1, 2, 3)]
    else:
        conf, env = of_kind(k8s("nats.yaml"), "ConfigMap")["data"]["nats.conf"], {"POD_NAME": "nats-0"}
        expected_routes = [f"nats-route://nats-{i}.nats-cluster:6222" for i in range(3)]
    assert re.findall(r"nats-route://\S+", conf) == expected_routes
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    done = subprocess.run([find_nats_server(), "-t", "-c", str(path)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr
    assert shlex.split("-c /etc/nats/nats.conf") == compose()["services"]["nats-1"]["command"]


def test_the_fleet_in_compose_and_kubernetes_is_three_members_of_one_fleet() -> None:
    """deploy/compose/fleet.yaml and deploy/k8s/fleet.yaml: every member's command line is accepted,
    names the same fleet and a member id of its own, and keeps its own store volume."""
    services = yaml.safe_load((DEPLOY / "compose" / "fleet.yaml").read_text())["services"]
    mixers = {name: s for name, s in services.items() if name.startswith("mixer-")}
    assert len(mixers) == 3 and {"nats-1", "nats-2", "nats-3"} <= set(services)
    members, volumes = set(), set()
    for name, service in mixers.items():
        args = service["command"]
        mixerd_main.make_context("fluxmix-mixer", list(args))  # raises on an unknown flag or bad value
        assert args[args.index("--fleet") + 1] == "demo"
        members.add(args[args.index("--fleet-member") + 1])
        volumes.add(next(v for v in service["volumes"] if v.endswith(":/var/lib/fluxmix")))
        assert service["environment"]["FLUXMIX_NATS_URL"].count("nats://") == 3
        assert service["restart"] == "unless-stopped"
    assert members == set(mixers) and len(volumes) == 3

    docs = k8s("fleet.yaml")
    statefulset = of_kind(docs, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3 and spec["volumeClaimTemplates"]
    container = spec["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--fleet-member") + 1] == "$(POD_NAME)"  # the pod name: stable across restarts
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pod_args = [a.replace("$(POD_NAME)", "fluxmix-fleet-0") for a in args]
    context = mixerd_main.make_context("fluxmix-mixer", pod_args)
    assert context.params["fleet"] == "demo" and context.params["fleet_member"] == "fluxmix-fleet-0"
    # SIGTERM drains and releases the leases before Kubernetes kills the pod.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > context.params["stop_timeout"]
    assert of_kind(docs, "Service")["spec"]["clusterIP"] == "None"
