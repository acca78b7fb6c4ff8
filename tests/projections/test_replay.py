"""Durations for ``--step`` and ``--until``: parsed, or refused with a clear message."""

from __future__ import annotations

import pytest

from projections.replay import DurationError, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        ("45", 45.0),
        (" 5m ", 300.0),
        (".5h", 1800.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "1x", "-1s", "1 s", "1h30m", "abc", "1e3s"])
def test_parse_duration_rejects_with_a_clear_message(text: str) -> None:
    with pytest.raises(DurationError, match=r"invalid duration .* like 30s"):
        parse_duration(text)
    with pytest.raises(ValueError):  # also usable as an argparse type
        parse_duration(text)
