"""How NatsBroker connects: options passed through, authentication, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmix.errors import NatsUnavailableError, TransportError
from fluxmix.transports.embedded import EmbeddedNats
from fluxmix.transports.nats import CONNECT_OPTION_KEYS, NatsBroker, _connect_kwargs

from tests.support.nats import nats_unavailable

pytestmark = pytest.mark.nats


def test_the_daemon_flags_map_onto_accepted_keys() -> None:
    # what fluxmix.mixer.settings.nats_settings produces from --nats-creds/-user/-password/-token/-tls-*
    assert {"user_credentials", "user", "password", "token", "tls_ca", "tls_cert", "tls_key"} <= CONNECT_OPTION_KEYS
    kwargs = _connect_kwargs({"user": "u", "password": "p", "token": None})
    assert kwargs == {"user": "u", "password": "p"}


def test_a_missing_tls_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NatsUnavailableError, match="NATS TLS setup failed"):
        _connect_kwargs({"tls_ca": str(tmp_path / "nope.pem")})


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(TransportError, match="unknown NATS connect option"):
        _connect_kwargs({"passwd": "x"})


async def test_user_and_password_reach_the_server(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", extra_args=["--user", "mixer", "--pass", "s3cret"])
    try:
        url = await server.start()
    except NatsUnavailableError as exc:
        nats_unavailable(str(exc))
    try:
        good = NatsBroker(url, connect_options={"user": "mixer", "password": "s3cret"})
        await good.connect()
        assert good.ready == (True, "")
        await good.close()
        bad = NatsBroker(url, connect_options={"user": "mixer", "password": "wrong"}, initial_connect_timeout=1.0)
        with pytest.raises(NatsUnavailableError, match="cannot connect to NATS"):
            await bad.connect()
        await bad.close()
    finally:
        await server.stop()


async def test_an_unreachable_server_is_reported_with_its_cause() -> None:
    """nats-py's connect timeout carries no text; the error must still say why."""
    import socket

    from fluxmix.errors import NatsUnavailableError
    from fluxmix.transports.nats import NatsBroker

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker = NatsBroker([f"nats://127.0.0.1:{port}"], initial_connect_timeout=1.0)
    with pytest.raises(NatsUnavailableError) as info:
        await broker.connect()
    assert str(info.value).startswith(f"cannot connect to NATS at nats://127.0.0.1:{port}: ")
    assert str(info.value).split(": ", 1)[1].strip()
    await broker.close()
