"""Pre-flight validation of spec documents: name, optional version and description, and a valid JSON Schema."""

from __future__ import annotations

from collections.abc import Mapping

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from fluxmix.document_checks import check_header
from fluxmix.errors import Problem
from fluxmix.problem_text import describe, json_path

SPEC_KEYS = ("name", "version", "description", "schema")


def validate_spec(raw: object) -> list[Problem]:
    """Every problem in a spec document: name, optional version/description, `schema` a valid JSON Schema."""
    problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        return [Problem("", f"a spec must be a YAML mapping with name and schema; found {describe(raw)}")]
    check_header(raw, SPEC_KEYS, "spec", problems)
    if "schema" in raw:
        schema = raw["schema"]
        if not isinstance(schema, (Mapping, bool)):
            problems.append(Problem("schema", f"must be a JSON Schema (a mapping); found {describe(schema)}"))
        else:
            try:
                validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
            except SchemaError as exc:
                problems.append(Problem(json_path("schema", exc.absolute_path), f"not a valid JSON Schema: {exc.message}"))
    return problems
