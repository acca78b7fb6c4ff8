"""Test reports: JUnit XML (as pytest, gotestsum, cargo nextest, Jest and Maven write it)
and tally's own JSON object, read into one ``TestCounts``.

Rule: pure functions of the report's bytes; no files, no processes. A report that
cannot be read raises ``ReportError`` naming what was wrong; the caller skips it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final

import msgspec

from bus.errors import TallyError

__all__ = ["ReportError", "TestCounts", "parse_junit", "parse_tests_output"]


class ReportError(TallyError, ValueError):
    """Raised when a test report is not JUnit XML or tally's JSON object of counts."""

    exit_code = 2


class TestCounts(msgspec.Struct, frozen=True, kw_only=True):
    """One test run: ``total`` is ``passed + failed`` (skipped tests are not counted)."""

    __test__ = False  # not a pytest test class

    passed: int
    failed: int
    total: int
    flaky: int = 0
    skipped: int = 0


#: A testcase child that makes the attempt a failure.
_FAILED: Final = frozenset({"failure", "error"})
#: A testcase child that says an earlier attempt failed before the one reported passed
#: (Maven Surefire, cargo nextest and pytest-rerunfailures write these).
_RERUN: Final = frozenset({"flakyFailure", "flakyError", "rerunFailure", "rerunError"})


def _outcome(case: ET.Element) -> tuple[str, bool]:
    """(``passed``, ``failed`` or ``skipped``; whether an earlier attempt failed)."""
    tags = {child.tag for child in case}
    reran = bool(tags & _RERUN)
    if tags & _FAILED:
        return "failed", reran
    if "skipped" in tags:
        return "skipped", reran
    return "passed", reran


def _from_suite_attributes(root: ET.Element) -> TestCounts:
    """Counts from ``<testsuite tests= failures= errors= skipped=>`` when no testcase is listed."""
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failed = skipped = 0
    for suite in suites:
        try:
            tests += int(suite.get("tests", "0"))
            failed += int(suite.get("failures", "0")) + int(suite.get("errors", "0"))
            skipped += int(suite.get("skipped", "0")) + int(suite.get("disabled", "0"))
        except ValueError as exc:
            raise ReportError(f"<testsuite> has a count that is not a number: {exc}") from None
    passed = max(tests - failed - skipped, 0)
    return TestCounts(passed=passed, failed=failed, total=passed + failed, skipped=skipped)


def parse_junit(data: bytes) -> TestCounts:
    """Count the tests of a JUnit XML report (a ``<testsuites>`` or ``<testsuite>`` root).

    A test is a ``<testcase>`` by (classname, name). Listed more than once (gotestsum
    ``--rerun-fails`` writes each attempt), its last attempt counts, and it is flaky if
    an earlier attempt failed and the last passed. A passing testcase that carries a
    ``<flakyFailure>``, ``<flakyError>``, ``<rerunFailure>`` or ``<rerunError>`` is flaky
    too. ``<failure>`` and ``<error>`` fail a test; ``<skipped>`` leaves it out.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ReportError(f"not XML: {exc}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ReportError(f"not a JUnit report: the root is <{root.tag}>")
    attempts: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for case in root.iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        attempts.setdefault(key, []).append(_outcome(case))
    if not attempts:
        return _from_suite_attributes(root)
    passed = failed = flaky = skipped = 0
    for runs in attempts.values():
        last, reran = runs[-1]
        match last:
            case "passed":
                passed += 1
                failed_before = any(outcome == "failed" for outcome, _ in runs[:-1])
                flaky += reran or failed_before
            case "failed":
                failed += 1
            case _:
                skipped += 1
    return TestCounts(
        passed=passed, failed=failed, total=passed + failed, flaky=flaky, skipped=skipped
    )


class _JsonCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    passed: int
    failed: int
    total: int | None = None
    flaky: int = 0


def parse_tests_output(data: bytes) -> TestCounts:
    """What a ``--tests-cmd`` printed: JUnit XML, or one JSON object of counts.

    The JSON object is ``{"passed": P, "failed": F, "total": T, "flaky": K}``;
    ``total`` defaults to ``passed + failed`` and ``flaky`` to 0; other keys are ignored.
    """
    text = data.strip()
    if text.startswith(b"<"):
        return parse_junit(text)
    if not text.startswith(b"{"):
        raise ReportError("expected JUnit XML or a JSON object {passed, failed, total, flaky}")
    try:
        doc = msgspec.json.decode(text, type=_JsonCounts)
    except msgspec.MsgspecError as exc:
        raise ReportError(f"not a JSON object of counts: {exc}") from None
    numbers = (doc.passed, doc.failed, doc.flaky, doc.total or 0)
    if min(numbers) < 0:
        raise ReportError("counts must not be negative")
    total = doc.total if doc.total is not None else doc.passed + doc.failed
    return TestCounts(passed=doc.passed, failed=doc.failed, total=total, flaky=doc.flaky)
