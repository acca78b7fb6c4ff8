"""Test reports as the common runners write them, case by case."""

from __future__ import annotations

import pytest

from server.loop.junit import ReportError, TestCounts, parse_junit, parse_tests_output


def case(name: str, body: str = "", classname: str = "t") -> str:
    return f'<testcase classname="{classname}" name="{name}">{body}</testcase>'


FAIL = '<failure message="x">x</failure>'
ERROR = '<error message="x">x</error>'
SKIP = '<skipped message="x"/>'

CASES = [
    # pytest: <testsuites><testsuite>
    (
        f"<testsuites><testsuite>{case('a')}{case('b', FAIL)}{case('c', ERROR)}"
        f"{case('d', SKIP)}</testsuite></testsuites>",
        TestCounts(passed=1, failed=2, total=3, skipped=1),
    ),
    # Jest (jest-junit), Maven: a <testsuite> root
    (f"<testsuite>{case('a')}{case('b')}</testsuite>", TestCounts(passed=2, failed=0, total=2)),
    # Maven Surefire / nextest: passed after a rerun
    (
        f"<testsuite>{case('a', '<flakyFailure>x</flakyFailure>')}"
        f"{case('b', '<rerunFailure>x</rerunFailure>')}"
        f"{case('c', FAIL + '<rerunFailure>x</rerunFailure>')}</testsuite>",
        TestCounts(passed=2, failed=1, total=3, flaky=2),
    ),
    # gotestsum --rerun-fails: each attempt listed; the last counts
    (
        f"<testsuites><testsuite>{case('a', FAIL)}{case('b', FAIL)}</testsuite>"
        f"<testsuite>{case('a')}{case('b', FAIL)}</testsuite></testsuites>",
        TestCounts(passed=1, failed=1, total=2, flaky=1),
    ),
    # the same name in two classes is two tests
    (
        f"<testsuite>{case('a', classname='x')}{case('a', FAIL, classname='y')}</testsuite>",
        TestCounts(passed=1, failed=1, total=2),
    ),
    # counts only, no testcase listed
    (
        '<testsuites><testsuite tests="5" failures="1" errors="1" skipped="1"/>'
        '<testsuite tests="2" failures="0" errors="0"/></testsuites>',
        TestCounts(passed=4, failed=2, total=6, skipped=1),
    ),
    ("<testsuites/>", TestCounts(passed=0, failed=0, total=0)),
]


@pytest.mark.parametrize(("xml", "counts"), CASES)
def test_junit_reports(xml: str, counts: TestCounts) -> None:
    assert parse_junit(xml.encode()) == counts


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not XML"),
        (b"<testsuite>", "not XML"),
        (b"<html/>", "the root is <html>"),
        (b'<testsuite tests="x"/>', "not a number"),
    ],
)
def test_bad_junit(data: bytes, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        parse_junit(data)


@pytest.mark.parametrize(
    ("data", "counts"),
    [
        (b'{"passed": 3, "failed": 1}', TestCounts(passed=3, failed=1, total=4)),
        (
            b' {"passed": 3, "failed": 1, "total": 5, "flaky": 2, "extra": "x"}\n',
            TestCounts(passed=3, failed=1, total=5, flaky=2),
        ),
        (f"\n<testsuite>{case('a')}</testsuite>".encode(), TestCounts(passed=1, failed=0, total=1)),
    ],
)
def test_tests_output(data: bytes, counts: TestCounts) -> None:
    assert parse_tests_output(data) == counts


@pytest.mark.parametrize(
    "data", [b"", b"3 passed", b'{"passed": 1}', b'{"passed": -1, "failed": 0}', b"{"]
)
def test_bad_tests_output(data: bytes) -> None:
    with pytest.raises(ReportError):
        parse_tests_output(data)
