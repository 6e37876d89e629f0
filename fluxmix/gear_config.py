"""Checking one gear's `config:` against its type: JSON Schema first, then the type's own checks.

The compiled validator is cached per gear type: checking the schema and building a validator for
every gear would cost 5 of the 6 seconds of validating a 1,000-gear scenario (bench/RESULTS.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from fluxmix.errors import Problem
from fluxmix.gears.base import Gear
from fluxmix.problem_text import json_path, name_list
from fluxmix.schema_errors import describe as describe_schema_error
from fluxmix.suggest import did_you_mean

_VALIDATORS: dict[type, tuple[int, Any]] = {}  # gear class -> (id of its schema, validator)


def config_validator(cls: type[Gear]) -> Any:
    """One checked validator per gear type (rebuilt only when the class's schema object changes)."""
    schema = cls.config_schema
    cached = _VALIDATORS.get(cls)
    if cached is not None and cached[0] == id(schema):
        return cached[1]
    validator_cls = validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    _VALIDATORS[cls] = (id(schema), validator)
    return validator


def config_problems(cls: type[Gear], type_name: str, config: Mapping[str, Any], base: str) -> list[Problem]:
    """Every problem of `config` for gear type `cls`, located under `base`; empty when it is valid.

    The type's semantic checks (`check_config`) run only once the schema passes, and a plugin's
    bug in them (even sys.exit) is reported as a problem, not the end of validation.
    """
    try:
        validator = config_validator(cls)
        errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    except SchemaError as exc:
        return [Problem(base, f"gear type {type_name!r} declares an invalid config schema: {exc.message}")]
    if errors:
        return [Problem(location, reason) for error in errors for location, reason in _schema_error_problems(error, base, type_name)]
    try:
        semantic = list(cls.check_config(config))
    except (Exception, SystemExit) as exc:
        return [Problem(base, f"gear type {type_name!r} failed to check this config: {exc}")]
    problems = []
    for path, reason in semantic:
        parts = [p for p in re.split(r"\.", path) if p] if isinstance(path, str) else list(path)
        problems.append(Problem(json_path(base, parts), reason))
    return problems


def _schema_error_problems(error: jsonschema.ValidationError, base: str, type_name: str) -> list[tuple[str, str]]:
    location = json_path(base, error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list((error.schema.get("properties") or {}).keys()) if isinstance(error.schema, Mapping) else []
        patterns = list((error.schema.get("patternProperties") or {}).keys()) if isinstance(error.schema, Mapping) else []
        extras = [k for k in error.instance if k not in known and not any(re.search(p, str(k)) for p in patterns)]
        if extras:
            where = f"for gear type {type_name!r}" if location == base else "here"
            return [
                (
                    json_path(location, [extra]),
                    f"unknown config key {extra!r} {where}{did_you_mean(extra, known)} (known: {name_list(known)})",
                )
                for extra in extras
            ]
    return [(location, describe_schema_error(error))]
