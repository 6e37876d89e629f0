"""The `globals:` section of a scenario: initial values and a JSON Schema per global key.

```yaml
globals:
  threshold:
    description: amounts above it pass the filter
    initial: 100
    schema: {type: integer, minimum: 0}
  blocked:
    initial: []
    schema: {type: array, items: {type: string}, maxItems: 1000}
```

`initial` is written when the scenario activates and the key has no value yet (an operator's
value is never overwritten by a reload). `schema` is checked on every write (API, CLI, the
`set-global` gear); a write that breaks it is refused and nothing changes. fluxmix.validation
calls `check_globals_section` with every other check, so all problems are reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from fluxmix.errors import GlobalsError, Problem
from fluxmix.problem_text import describe
from fluxmix.suggest import did_you_mean

ENTRY_KEYS = ("description", "initial", "schema")


def check_globals_section(raw: Mapping[str, Any]) -> list[Problem]:
    """Every problem of `raw["globals"]` (absent or null: none)."""
    from fluxmix.store._globals import MAX_KEYS, check_key, check_value

    section = raw.get("globals")
    if section is None:
        return []
    if not isinstance(section, Mapping):
        return [Problem("globals", f"must be a mapping of key -> {{initial, schema, description}}; found {describe(section)}")]
    problems: list[Problem] = []
    if len(section) > MAX_KEYS:
        problems.append(Problem("globals", f"declares {len(section)} keys; at most {MAX_KEYS}"))
    for key, entry in section.items():
        where = f"globals.{key}" if isinstance(key, str) else "globals"
        try:
            check_key(key)
        except GlobalsError as error:
            problems.append(Problem(where, str(error)))
            continue
        if not isinstance(entry, Mapping):
            problems.append(Problem(where, f"must be a mapping with initial, schema and/or description; found {describe(entry)}"))
            continue
        for unknown in (k for k in entry if k not in ENTRY_KEYS):
            problems.append(Problem(f"{where}.{unknown}", f"unknown key{did_you_mean(unknown, ENTRY_KEYS)} (allowed: {', '.join(ENTRY_KEYS)})"))
        if "description" in entry and not isinstance(entry["description"], str):
            problems.append(Problem(f"{where}.description", f"must be a string; found {describe(entry['description'])}"))
        validator = None
        if "schema" in entry:
            schema = entry["schema"]
            if not isinstance(schema, (Mapping, bool)):
                problems.append(Problem(f"{where}.schema", f"must be a JSON Schema (a mapping); found {describe(schema)}"))
            else:
                cls = validator_for(schema, default=jsonschema.Draft202012Validator)
                try:
                    cls.check_schema(schema)
                    validator = cls(schema)
                except SchemaError as error:
                    problems.append(Problem(f"{where}.schema", f"not a valid JSON Schema: {error.message[:200]}"))
        if "initial" in entry:
            try:
                value = check_value(key, entry["initial"])
            except GlobalsError as error:
                problems.append(Problem(f"{where}.initial", str(error)))
                continue
            if validator is not None:
                error = jsonschema.exceptions.best_match(validator.iter_errors(value))
                if error is not None:
                    problems.append(Problem(f"{where}.initial", f"does not match its schema: {error.message[:200]}"))
    return problems
