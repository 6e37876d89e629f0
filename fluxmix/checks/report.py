"""How a test run is shown: lines for people, JSON for scripts, JUnit XML for CI systems."""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fluxmix.checks.runner import TestResult


def verdict(result: TestResult) -> str:
    return "PASS" if result.passed else ("ERROR" if result.error else "FAIL")


def render_text(source: str, results: Sequence[TestResult]) -> str:
    """One line per test, then under each failed one what differed, indented."""
    lines: list[str] = []
    for result in results:
        lines.append(f"{verdict(result):5} {result.name} ({result.seconds * 1000:.0f} ms)")
        details = [result.error] if result.error else list(result.failures)
        if not result.passed:
            details += result.notes
        for detail in details:
            first, *rest = str(detail).splitlines()
            lines.append(f"      {first}")
            lines.extend(f"      {line}" for line in rest)
    passed = sum(r.passed for r in results)
    lines.append(f"{source}: {passed} of {len(results)} test{'s' if len(results) != 1 else ''} passed")
    return "\n".join(lines)


def as_json(source: str, scenario: str, results: Sequence[TestResult]) -> dict[str, Any]:
    return {
        "ok": all(r.passed for r in results),
        "source": source,
        "scenario": scenario,
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "tests": [{"verdict": verdict(r).lower(), **r.as_dict()} for r in results],
    }


def junit_xml(scenario: str, results: Sequence[TestResult]) -> bytes:
    """The JUnit XML most CI systems read: one testsuite, one testcase per test."""
    failures = sum(1 for r in results if not r.passed and not r.error)
    errors = sum(1 for r in results if r.error)
    total = round(sum(r.seconds for r in results), 6)
    suites = ET.Element("testsuites", name="fluxmix scenario test", tests=str(len(results)),
                        failures=str(failures), errors=str(errors), time=f"{total}")
    suite = ET.SubElement(suites, "testsuite", name=scenario, tests=str(len(results)),
                          failures=str(failures), errors=str(errors), time=f"{total}")
    for result in results:
        case = ET.SubElement(suite, "testcase", name=result.name, classname=f"scenario.{scenario}",
                             time=f"{result.seconds}")
        if result.error:
            node = ET.SubElement(case, "error", message=result.error.splitlines()[0][:500])
            node.text = "\n".join([result.error, *result.notes])
        elif not result.passed:
            node = ET.SubElement(case, "failure", message=result.failures[0].splitlines()[0][:500])
            node.text = "\n".join([*result.failures, *result.notes])
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename: a CI job never reads half a report."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["as_json", "junit_xml", "render_text", "verdict", "write_atomically"]
