"""`log`: bodies go to the gear's logger at the configured level."""

from __future__ import annotations

import logging

import pytest

from fluxmix.gears.logsink import Log
from fluxmix.gears.testing import GearHarness, config_problems


async def test_logs_each_body_with_the_gear_name_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fluxmix.gear.show"):
        async with GearHarness("log", {}, name="show") as h:
            assert await h.send({"seq": 1, "name": "Zoë"}) == {}
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, 'show: {"seq":1,"name":"Zoë"}')]


async def test_level_prefix_and_envelope(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="fluxmix.gear.g"):
        async with GearHarness("log", {"level": "warning", "prefix": ">>", "envelope": True}, name="g") as h:
            await h.send({"raw": b"\x01"}, id="m-1")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == '>> m-1 test.out {"raw":"AQ=="}'


async def test_empty_prefix_and_level_filtering(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fluxmix.gear.g"):
        async with GearHarness("log", {"level": "debug"}, name="g") as h:
            await h.send({"a": 1})  # below the logger's level: nothing, and no encoding work
        async with GearHarness("log", {"prefix": ""}, name="g") as h:
            await h.send({"a": 1})
    assert [r.getMessage() for r in caplog.records] == ['{"a":1}']


@pytest.mark.parametrize(("config", "location"), [({"level": "loud"}, "config.level"), ({"prefix": 1}, "config.prefix"), ({"x": 1}, "config")])
def test_config_problems(config: dict, location: str) -> None:
    assert [p.location for p in config_problems(Log, config)] == [location]


def test_ports() -> None:
    assert [p.name for p in Log.input_ports({})] == ["in"]
    assert [p.name for p in Log.output_ports({})] == ["error"]
