"""The top-level checks scenario and spec documents share: unknown keys, name, version, description.

One wording for both kinds, so `fluxmix scenario validate` and `fluxmix spec import` describe
the same mistake the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fluxmix.errors import Problem
from fluxmix.problem_text import describe, json_path, name_list
from fluxmix.refs import NAME_RE, tag_problem
from fluxmix.suggest import did_you_mean

# Tags in the store refuse build metadata: SemVer ignores it when ordering, so two tags would tie.
_BUILD_METADATA = (
    "{value!r} has build metadata (+...), which SemVer ignores when ordering versions; "
    "use a pre-release (1.2.0-rc.1) or a new version"
)


def check_header(raw: Mapping[Any, Any], allowed: Sequence[str], what: str, problems: list[Problem]) -> None:
    """Append the problems of the top-level keys, `name`, `version` and `description` of a `what` document."""
    check_unknown_keys(raw, allowed, "", "top-level", problems)
    _check_name(raw, problems, what)
    if "version" in raw:
        _check_version(raw["version"], "version", problems)
    if "description" in raw and not isinstance(raw["description"], str):
        problems.append(Problem("description", f"must be a string; found {describe(raw['description'])}"))


def check_unknown_keys(raw: Mapping[Any, Any], allowed: Sequence[str], base: str, what: str, problems: list[Problem]) -> None:
    """Append one problem per key of `raw` not in `allowed`, with the closest allowed key as a hint."""
    for key in raw:
        if key not in allowed:
            location = json_path(base, [key])
            problems.append(
                Problem(location, f"unknown {what} key {key!r}{did_you_mean(key, allowed)} (allowed: {name_list(allowed)})")
            )


def _check_version(value: object, location: str, problems: list[Problem]) -> None:
    """A `version:` must be what the store accepts as a tag (fluxmix.refs.canonical_tag)."""
    if isinstance(value, str):
        if tag_problem(value) is None:
            return
        if "+" in value and tag_problem(value.split("+", 1)[0]) is None:
            problems.append(Problem(location, _BUILD_METADATA.format(value=value)))
            return
    hint = " (quote it, or YAML reads it as a number)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    problems.append(Problem(location, f"must be a SemVer version like 1.2.0 or v1.2.0; found {describe(value)}{hint}"))


def _check_name(raw: Mapping[str, Any], problems: list[Problem], what: str) -> None:
    if "name" not in raw:
        problems.append(Problem("name", f"required: the {what}'s name, e.g. payment-flow"))
        return
    name = raw["name"]
    if not isinstance(name, str):
        problems.append(Problem("name", f"must be a string; found {describe(name)}"))
    elif not NAME_RE.fullmatch(name):
        problems.append(
            Problem(
                "name",
                f"{name!r} is not a valid name: 1-64 characters of a-z 0-9 . _ -, starting with a letter or digit",
            )
        )
