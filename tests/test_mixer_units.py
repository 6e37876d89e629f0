"""Unit tests of the daemon's small parts: flags -> settings, log formats, the API client, tables."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from fluxmix.errors import MixerApiError, UserError
from fluxmix.mixer.client import MixerClient
from fluxmix.mixer.logs import JsonFormatter, TextFormatter, configure_logging
from fluxmix.mixer.settings import is_loopback, nats_settings, parse_listen, split_urls
from tests.support.ports import reserve_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8470", ("127.0.0.1", 8470)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        (":9000", ("127.0.0.1", 9000)),
        ("9000", ("127.0.0.1", 9000)),
        ("[::1]:8470", ("::1", 8470)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["host:port", "1.2.3.4:70000", "[::1]8470", "[::1"])
def test_parse_listen_refuses_garbage(text: str) -> None:
    with pytest.raises(UserError, match="--http"):
        parse_listen(text)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")


def test_split_urls_accepts_repeats_commas_and_spaces() -> None:
    assert split_urls(("nats://a:4222,nats://b:4222", "nats://c:4222")) == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert split_urls(("nats://a:4222, nats://b:4222",)) == ["nats://a:4222", "nats://b:4222"]
    assert split_urls(()) == []


def test_nats_settings_map_flags_to_connect_options(tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("x")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = nats_settings(["nats://a:4222"], replicas=3, creds=creds, user="u", password="p", token="t", tls_ca=ca)
    assert settings.servers == ["nats://a:4222"]
    assert settings.replicas == 3
    assert settings.connect_options == {
        "user_credentials": str(creds.resolve()),
        "user": "u",
        "password": "p",
        "token": "t",
        "tls_ca": str(ca.resolve()),
    }
    assert nats_settings([]).connect_options == {}


def test_nats_settings_refuse_inconsistent_flags(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--nats-creds .*no such file"):
        nats_settings([], creds=tmp_path / "missing.creds")
    with pytest.raises(UserError, match="--nats-user and --nats-password"):
        nats_settings([], user="u")
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(UserError, match="--nats-tls-key needs --nats-tls-cert"):
        nats_settings([], tls_key=key)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("fluxmix.mixer", logging.INFO, __file__, 1, "ready: %s", ("hello",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_log_lines_carry_extra_fields() -> None:
    line = JsonFormatter().format(_record(scenario="hello", gears=3))
    obj = json.loads(line)
    assert obj["level"] == "info" and obj["logger"] == "fluxmix.mixer" and obj["msg"] == "ready: hello"
    assert obj["scenario"] == "hello" and obj["gears"] == 3
    assert obj["ts"].endswith("Z")


def test_text_log_lines_quote_values_with_spaces() -> None:
    line = TextFormatter().format(_record(reason="two words", gears=3))
    assert "INFO" in line and "fluxmix.mixer: ready: hello" in line
    assert 'reason="two words"' in line and "gears=3" in line


def test_configure_logging_json_writes_one_object_per_line() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    try:
        logging.getLogger("fluxmix.test").info("hello %s", "world", extra={"n": 1})
        logging.getLogger("fluxmix.test").debug("hidden")
    finally:
        configure_logging("text", "warning", io.StringIO())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["msg"] == "hello world"


def test_client_says_connection_refused_in_one_line() -> None:
    url = f"http://127.0.0.1:{reserve_port()}"  # nothing listens there
    with pytest.raises(MixerApiError) as info:
        MixerClient(url, timeout=5).get("/status")
    assert str(info.value) == f"cannot reach the mixer at {url}: connection refused"


def test_mixer_cli_connection_refused_exit_1() -> None:
    from click.testing import CliRunner

    from fluxmix.cli.mixer import mixer

    url = f"http://127.0.0.1:{reserve_port()}"
    result = CliRunner().invoke(mixer, ["status", "--url", url])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: cannot reach the mixer at {url}: connection refused"


def test_status_rendering_shows_gears_and_wires() -> None:
    from fluxmix.cli.mixer import render_status

    text = render_status(
        {
            "state": "running",
            "ready": True,
            "scenario": {"name": "hello", "tag": "v0.1.0", "hash": "ab" * 32},
            "following": "hello:latest",
            "uptime_seconds": 75,
            "gears": {"source": {"type": "generate", "state": "running", "handled": 0, "errors": 0, "emitted": 10}},
            "wires": {"source.out->sink.in": {"transport": "memory", "sent": 10, "received": 9, "in_queue": 1}},
            "brokers": {"memory": {"kind": "memory", "queue_size": 1024}},
            "last_reload": None,
        }
    )
    assert "hello:v0.1.0" in text and "abababababab" in text
    assert "1m 15s" in text
    assert "source.out->sink.in" in text and "generate" in text
    assert "broker memory: queue_size=1024" in text


def test_nats_settings_carry_the_jetstream_knobs() -> None:
    settings = nats_settings([], ack_wait=3.0, duplicate_window=10.0, max_bytes=1 << 30)
    assert (settings.ack_wait, settings.duplicate_window, settings.max_bytes) == (3.0, 10.0, 1 << 30)
    defaults = nats_settings([])
    # the window is sized from what it must cover: ack_wait + a restart allowance (issue 17)
    assert (defaults.ack_wait, defaults.duplicate_window, defaults.max_bytes) == (30.0, 60.0, None)
    assert nats_settings([], ack_wait=150.0).duplicate_window == 180.0


def test_nats_settings_refuse_a_duplicate_window_not_longer_than_ack_wait() -> None:
    with pytest.raises(UserError, match=r"--nats-duplicate-window 60 must be longer than --nats-ack-wait 60"):
        nats_settings([], ack_wait=60.0, duplicate_window=60.0)
    with pytest.raises(UserError, match=r"--nats-ack-wait 1: must be at least 3 seconds"):
        nats_settings([], ack_wait=1.0)
    with pytest.raises(UserError, match=r"--nats-max-bytes 0"):
        nats_settings([], max_bytes=0)


def test_mixer_flags_for_jetstream_reach_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fluxmix.cli.mixerd import main
    from fluxmix.mixer import daemon

    seen = []

    async def fake_serve(settings: object) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(daemon, "serve", fake_serve)
    monkeypatch.setattr("fluxmix.cli.mixerd.configure_logging", lambda *a: None)
    args = ["--store", str(tmp_path), "--no-http", "--nats-ack-wait", "5", "--nats-duplicate-window", "45", "--nats-max-bytes", "1048576"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    nats = seen[0].nats  # type: ignore[attr-defined]
    assert (nats.ack_wait, nats.duplicate_window, nats.max_bytes) == (5.0, 45.0, 1048576)
    refused = CliRunner().invoke(main, ["--store", str(tmp_path), "--no-http", "--nats-ack-wait", "150",
                                        "--nats-duplicate-window", "120"])
    assert refused.exit_code == 2 and "--nats-duplicate-window 120 must be longer than --nats-ack-wait 150" in refused.output
    assert "Traceback" not in refused.output


def test_sighup_before_the_daemon_runs_is_ignored_not_fatal() -> None:
    """A `systemctl reload` racing the mixer's start must not kill it (systemd would not restart
    a unit that died of SIGHUP): the console script's module ignores SIGHUP until serve()
    installs the reload handler. Checked in a fresh interpreter, without racing a real signal."""
    import subprocess
    import sys

    probe = "import signal, fluxmix.cli.mixerd; print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"
