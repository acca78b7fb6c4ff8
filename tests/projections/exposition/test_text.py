"""Number formatting, escaping, label sets and the derived render cache."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.exposition.prometheus import render_prometheus
from projections.exposition.text import (
    escape_help,
    escape_label_value,
    format_canonical,
    format_float,
    render_labels,
)
from projections.metrics.families import CounterFamily

GO_FLOATS = [
    (0.0, "0"),
    (-0.0, "0"),
    (1.0, "1"),
    (-1.0, "-1"),
    (1.5, "1.5"),
    (0.1, "0.1"),
    (0.30000000000000004, "0.30000000000000004"),
    (1e-4, "0.0001"),
    (0.00012345, "0.00012345"),
    (1e-5, "1e-05"),
    (1.5e-7, "1.5e-07"),
    (4095.0, "4095"),
    (4096.0, "4096"),
    (-4096.0, "-4096"),
    (123456.0, "123456"),
    (999999.0, "999999"),
    (100000.5, "100000.5"),
    (1e6, "1e+06"),
    (-1e6, "-1e+06"),
    (2179032.0, "2.179032e+06"),
    (1234567.5, "1.2345675e+06"),
    (-2.5e6, "-2.5e+06"),
    (123456789012.0, "1.23456789012e+11"),
    (1e15 + 0.5, "1.0000000000000005e+15"),
    (1e16, "1e+16"),
    (1e22, "1e+22"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (5e-324, "5e-324"),
    (math.inf, "+Inf"),
    (-math.inf, "-Inf"),
    (math.nan, "NaN"),
]


@pytest.mark.parametrize(("value", "text"), GO_FLOATS)
def test_format_float_matches_go(value: float, text: str) -> None:
    assert format_float(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_float_round_trips(value: float) -> None:
    text = format_float(value)
    assert float(text) == value
    mantissa = text.lstrip("-").split("e")[0]
    assert len(mantissa.replace(".", "").lstrip("0")) <= 17


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0.0"),
        (0.001, "0.001"),
        (0.002, "0.002"),
        (0.01, "0.01"),
        (0.1, "0.1"),
        (0.9, "0.9"),
        (0.95, "0.95"),
        (0.99, "0.99"),
        (0.999, "0.999"),
        (1.0, "1.0"),
        (1.7, "1.7"),
        (10.0, "10.0"),
        (1e-10, "1e-10"),
        (1e-09, "1e-09"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (100000.0, "100000.0"),
        (1e06, "1e+06"),
        (1e10, "1e+10"),
        (math.inf, "+Inf"),
        (-5.0, "-5.0"),
    ],
)
def test_format_canonical_openmetrics_examples(value: float, text: str) -> None:
    assert format_canonical(value) == text


def test_format_canonical_thousandths_up_to_ten() -> None:
    for i in range(10_001):
        expected = f"{i / 1000:.3f}".rstrip("0")
        expected += "0" if expected.endswith(".") else ""
        assert format_canonical(i / 1000) == expected


@pytest.mark.parametrize(
    ("raw", "help_text", "label_text"),
    [
        ("plain", "plain", "plain"),
        ("a\\b", "a\\\\b", "a\\\\b"),
        ("line\nbreak", "line\\nbreak", "line\\nbreak"),
        ('say "hi"', 'say "hi"', 'say \\"hi\\"'),
        ('\\"\n', '\\\\"\\n', '\\\\\\"\\n'),
        ("é ✓ 日本", "é ✓ 日本", "é ✓ 日本"),
        ("tab\tcr\r", "tab\tcr\r", "tab\tcr\r"),
    ],
)
def test_escaping(raw: str, help_text: str, label_text: str) -> None:
    assert escape_help(raw) == help_text
    assert escape_label_value(raw) == label_text


@pytest.mark.parametrize(
    ("names", "values", "extra", "text"),
    [
        ((), (), None, ""),
        ((), (), ("le", "+Inf"), '{le="+Inf"}'),
        (("a",), ("x",), None, '{a="x"}'),
        (("b", "a"), ("y", "x"), None, '{b="y",a="x"}'),
        (("a", "b"), ('q"', "\n"), ("quantile", "0.5"), '{a="q\\"",b="\\n",quantile="0.5"}'),
    ],
)
def test_render_labels(
    names: tuple[str, ...], values: tuple[str, ...], extra: tuple[str, str] | None, text: str
) -> None:
    assert render_labels(names, values, extra) == text


def _fresh_copy(family: CounterFamily) -> CounterFamily:
    copy = CounterFamily(family.name, family.help, family.label_names)
    copy.values.update(family.values)
    return copy


_ops = st.lists(
    st.tuples(
        st.sampled_from(["inc", "set", "del", "render"]),
        st.sampled_from(["a", "b", "c", "d", "é"]),
        st.sampled_from([0.0, -0.0, 1.0, 2.5, math.nan, math.inf]),
    ),
    max_size=40,
)


@given(_ops)
def test_cached_render_equals_fresh_render(ops: list[tuple[str, str, float]]) -> None:
    """The render cache never shows: a long-lived family renders like a brand-new copy."""
    family = CounterFamily("x_total", "X.", ("k",))
    for op, label, value in ops:
        match op:
            case "inc":
                family.inc((label,), 1.0)
            case "set":
                family.values[(label,)] = value
            case "del":
                family.values.pop((label,), None)
            case _:
                assert render_prometheus([family]) == render_prometheus([_fresh_copy(family)])
    assert render_prometheus([family]) == render_prometheus([_fresh_copy(family)])


def test_cache_follows_a_replaced_values_dict() -> None:
    family = CounterFamily("x_total", "X.", ("k",))
    family.inc(("a",))
    family.inc(("b",))
    render_prometheus([family])
    family.values = {("c",): 1.0, ("d",): 2.0}
    assert render_prometheus([family]).endswith(b'x_total{k="c"} 1\nx_total{k="d"} 2\n')


def test_partly_changed_values_are_reformatted() -> None:
    family = CounterFamily("x_total", "X.", ("k",))
    for i in range(100):
        family.inc((f"{i:03d}",), float(i))
    render_prometheus([family])
    family.inc(("007",), 0.5)  # a few changed values: only those are formatted again
    family.values[("050",)] = -0.0
    family.values[("099",)] = math.nan
    body = render_prometheus([family])
    assert body == render_prometheus([_fresh_copy(family)])
    assert b'x_total{k="007"} 7.5\n' in body
    assert b'x_total{k="050"} 0\n' in body
    assert b'x_total{k="099"} NaN\n' in body
