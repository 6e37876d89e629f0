"""fluxmix words schema violations itself, so a jsonschema upgrade cannot change what users read."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from fluxmix.schema_errors import describe, excerpt


def _only(schema: dict[str, Any], instance: Any) -> str:
    [error] = list(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    return describe(error)


@pytest.mark.parametrize(
    ("schema", "instance", "expected"),
    [
        ({"type": "integer"}, "many", "'many' is not of type 'integer'"),
        ({"type": ["string", "null"]}, 3, "3 is not of type 'string', 'null'"),
        ({"type": "object", "required": ["a", "b"], "properties": {"a": {}}}, {"a": 1}, "'b' is a required property"),
        ({"minimum": 0}, -1, "-1 is less than the minimum of 0"),
        ({"maximum": 10}, 11, "11 is greater than the maximum of 10"),
        ({"exclusiveMinimum": 0}, 0, "0 is less than or equal to the minimum of 0"),
        ({"exclusiveMaximum": 1}, 1, "1 is greater than or equal to the maximum of 1"),
        ({"enum": ["all", "first"]}, "some", "'some' is not one of ['all', 'first']"),
        ({"const": "x"}, "y", "'x' was expected"),
        ({"pattern": "^[a-z]+$"}, "Big", "'Big' does not match '^[a-z]+$'"),
        ({"minLength": 1}, "", "'' should be non-empty"),
        ({"minLength": 3}, "ab", "'ab' should have at least 3 characters"),
        ({"maxLength": 2}, "abc", "'abc' should have at most 2 characters"),
        ({"minItems": 1}, [], "[] should be non-empty"),
        ({"maxItems": 1}, [1, 2], "[1, 2] should have at most 1 items"),
        ({"uniqueItems": True}, [1, 1], "[1, 1] has non-unique elements"),
        (
            {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
            {"a": 1, "zz": 2},
            "Additional properties are not allowed ('zz' was unexpected)",
        ),
        (
            {"type": "object", "patternProperties": {"^[a-z]+$": {}}, "additionalProperties": False},
            {"Big": 1},
            "'Big' does not match any of the regexes: '^[a-z]+$'",
        ),
    ],
)
def test_common_keywords_have_fluxmix_wording(schema: dict[str, Any], instance: Any, expected: str) -> None:
    assert _only(schema, instance) == expected


def test_values_are_quoted_as_short_excerpts() -> None:
    message = _only({"type": "integer"}, "x" * 900_000)
    assert len(message) < 120 and message.endswith("is not of type 'integer'")
    assert excerpt(list(range(1000))) == "a list of 1000 items"


def test_rare_keywords_fall_back_to_one_bounded_line() -> None:
    message = _only({"not": {"type": "string"}}, "s" * 10_000)
    assert "\n" not in message and len(message) <= 200
