"""`map`, `filter`, `route`: behaviour, expression errors per message, config validation."""

from __future__ import annotations

import pytest

from fluxmix.errors import ReadOnlyBodyError

from fluxmix.gears.expressions import ExpressionEvalError
from fluxmix.gears.testing import GearHarness, config_problems
from fluxmix.gears.transform import Filter, Map, Route

# ---------------------------------------------------------------- map


async def test_map_renames_then_sets_then_drops() -> None:
    config = {
        "rename": {"amt": "amount"},
        "set": {"total": {"expr": "amount * 2"}, "source": "web", "tags": ["a"], "amount_copy": {"expr": "amount"}},
        "drop": ["secret", "not-there"],
    }
    async with GearHarness("map", config) as h:
        out = await h.send({"amt": 10, "secret": "x", "keep": True})
    assert out == {"out": [{"amount": 10, "keep": True, "total": 20, "source": "web", "tags": ["a"], "amount_copy": 10}]}


async def test_map_expressions_see_the_body_after_rename_not_each_other() -> None:
    config = {"set": {"a": {"expr": "b + 1"}, "b": {"expr": "a + 1"}}}
    async with GearHarness("map", config) as h:
        out = await h.send({"a": 1, "b": 10})
    assert out["out"] == [{"a": 11, "b": 2}]


async def test_map_constant_strings_are_never_code() -> None:
    async with GearHarness("map", {"set": {"label": "amount * 2", "eq": "=1+1"}}) as h:
        out = await h.send({"amount": 1})
    assert out["out"] == [{"amount": 1, "label": "amount * 2", "eq": "=1+1"}]


async def test_map_does_not_modify_the_input_nor_share_constants() -> None:
    async with GearHarness("map", {"set": {"tags": ["a"]}, "drop": ["x"]}) as h:
        message_body = {"x": 1}
        first = await h.send(message_body)
        with pytest.raises(ReadOnlyBodyError):  # what a gear emits is read-only downstream
            first["out"][0]["tags"].append("b")
        second = await h.send(message_body)
    assert message_body == {"x": 1}
    assert second["out"][0]["tags"] == ["a"]


async def test_map_without_config_passes_through() -> None:
    async with GearHarness("map", {}) as h:
        assert await h.send({"a": 1}) == {"out": [{"a": 1}]}


async def test_map_missing_field_fails_that_message_only() -> None:
    async with GearHarness("map", {"set": {"y": {"expr": "x * 2"}}}) as h:
        with pytest.raises(ExpressionEvalError, match="field 'x' is not in the message body"):
            await h.send({"z": 1})
        assert await h.send({"x": 2}) == {"out": [{"x": 2, "y": 4}]}


async def test_map_passes_headers_and_derives_ids() -> None:
    async with GearHarness("map", {}, name="m") as h:
        await h.send({"a": 1}, id="parent-1", headers={"trace": "t1"})
        await h.send({"a": 1}, id="parent-1")
    first, again = h.ctx.emitted["out"]
    assert first.headers == {"trace": "t1"}
    assert first.id == again.id  # re-handling a redelivered message re-emits the same id
    assert first.origin == "m.out"


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        ({"set": {"t": {"expr": "amount *"}}}, [("config.set.t.expr", "invalid expression: invalid syntax")]),
        ({"set": {"t": {"expr": "a.b"}}}, [("config.set.t.expr", "invalid expression: attribute access")]),
        ({"set": {"t": {"expr": "1", "other": 2}}}, [("config.set.t", "a mapping with `expr` must have no other keys")]),
        ({"rename": {"a": "c", "b": "c"}}, [("config.rename.b", "renames to 'c' like 'a' does")]),
        ({"rename": {"a": ""}}, [("config.rename.a", "")]),
        ({"drop": "a"}, [("config.drop", "")]),
        ({"drop": ["a", "a"]}, [("config.drop", "")]),
        ({"where": "x"}, [("config", "Additional properties")]),
    ],
)
def test_map_config_problems(config: dict, problems: list[tuple[str, str]]) -> None:
    found = config_problems(Map, config)
    assert [p.location for p in found] == [loc for loc, _ in problems]
    for p, (_, reason) in zip(found, problems):
        assert reason in p.reason


def test_map_ports() -> None:
    assert [p.name for p in Map.input_ports({})] == ["in"]
    assert Map.input_ports({})[0].required
    assert [p.name for p in Map.output_ports({})] == ["out", "error"]


# ---------------------------------------------------------------- filter


async def test_filter_splits_out_and_rejected() -> None:
    async with GearHarness("filter", {"where": 'amount > 100 and currency == "EUR"'}) as h:
        assert await h.send({"amount": 150, "currency": "EUR"}) == {"out": [{"amount": 150, "currency": "EUR"}]}
        assert await h.send({"amount": 50, "currency": "EUR"}) == {"rejected": [{"amount": 50, "currency": "EUR"}]}


async def test_filter_uses_truthiness() -> None:
    async with GearHarness("filter", {"where": "items"}) as h:
        assert "out" in await h.send({"items": [1]})
        assert "rejected" in await h.send({"items": []})


async def test_filter_unwired_rejected_is_dropped() -> None:
    async with GearHarness("filter", {"where": "ok"}, wired=["out"]) as h:
        assert await h.send({"ok": False}) == {}
        assert await h.send({"ok": True}) == {"out": [{"ok": True}]}


async def test_filter_error_fails_the_message() -> None:
    async with GearHarness("filter", {"where": "amount > 1"}) as h:
        with pytest.raises(ExpressionEvalError, match="amount"):
            await h.send({})


@pytest.mark.parametrize(
    ("config", "location", "reason"),
    [
        ({}, "config", "'where' is a required property"),
        ({"where": ""}, "config.where", ""),
        ({"where": 3}, "config.where", "is not of type 'string'"),
        ({"where": "amount >"}, "config.where", "invalid expression: invalid syntax"),
        ({"where": "__import__('os')"}, "config.where", "invalid expression: unknown function '__import__'"),
    ],
)
def test_filter_config_problems(config: dict, location: str, reason: str) -> None:
    (problem,) = config_problems(Filter, config)
    assert problem.location == location
    assert reason in problem.reason


def test_filter_ports() -> None:
    assert [p.name for p in Filter.output_ports({"where": "x"})] == ["out", "rejected", "error"]


# ---------------------------------------------------------------- route

ROUTES = {"routes": {"big": "amount > 1000", "eur": 'currency == "EUR"', "usd": 'currency == "USD"'}}


async def test_route_first_match_wins_in_written_order() -> None:
    async with GearHarness("route", ROUTES) as h:
        assert await h.send({"amount": 5000, "currency": "EUR"}) == {"big": [{"amount": 5000, "currency": "EUR"}]}
        assert await h.send({"amount": 5, "currency": "EUR"}) == {"eur": [{"amount": 5, "currency": "EUR"}]}
        assert await h.send({"amount": 5, "currency": "USD"}) == {"usd": [{"amount": 5, "currency": "USD"}]}
        assert await h.send({"amount": 5, "currency": "JPY"}) == {"default": [{"amount": 5, "currency": "JPY"}]}


async def test_route_mode_all_sends_to_every_match() -> None:
    async with GearHarness("route", {**ROUTES, "mode": "all"}) as h:
        out = await h.send({"amount": 5000, "currency": "EUR"})
        assert sorted(out) == ["big", "eur"]
        assert await h.send({"amount": 1, "currency": "CHF"}) == {"default": [{"amount": 1, "currency": "CHF"}]}


async def test_route_error_in_any_condition_fails_the_message() -> None:
    async with GearHarness("route", ROUTES) as h:
        with pytest.raises(ExpressionEvalError, match="currency"):
            await h.send({"amount": 1})


def test_route_output_ports_come_from_config() -> None:
    ports = Route.output_ports(ROUTES)
    assert [p.name for p in ports] == ["big", "eur", "usd", "default", "error"]
    assert "amount > 1000" in ports[0].description
    assert [p.name for p in Route.output_ports({})] == ["default", "error"]
    assert [p.name for p in Route.input_ports(ROUTES)] == ["in"]


@pytest.mark.parametrize(
    ("config", "location", "reason"),
    [
        ({}, "config", "'routes' is a required property"),
        ({"routes": {}}, "config.routes", ""),
        ({"routes": {"Big": "x"}}, "config.routes", "does not match"),
        ({"routes": {"a.b": "x"}}, "config.routes", "does not match"),
        ({"routes": {"default": "x"}}, "config.routes.default", "'default' is reserved"),
        ({"routes": {"error": "x"}}, "config.routes.error", "'error' is reserved"),
        ({"routes": {"in": "x"}}, "config.routes.in", "'in' is reserved"),
        ({"routes": {"a": "x >"}}, "config.routes.a", "invalid expression"),
        ({"routes": {"a": 1}}, "config.routes.a", "is not of type 'string'"),
        ({"routes": {"a": "x"}, "mode": "some"}, "config.mode", "is not one of"),
    ],
)
def test_route_config_problems(config: dict, location: str, reason: str) -> None:
    (problem,) = config_problems(Route, config)
    assert problem.location == location
    assert reason in problem.reason
