"""Claude Code's JSON output read for context usage, fed in chunks as a pipe delivers it."""

from __future__ import annotations

import json

import pytest

from server.loop.context import (
    CONTEXT_PARSERS,
    DEFAULT_CONTEXT_WINDOW,
    ClaudeJsonParser,
    ContextReading,
    context_window,
)

USAGE = {
    "input_tokens": 100,
    "cache_read_input_tokens": 40_000,
    "cache_creation_input_tokens": 9_000,
    "output_tokens": 900,
}
RESULT = {"type": "result", "subtype": "success", "usage": USAGE, "result": "done"}


def read(output: bytes, chunk: int) -> ContextReading | None:
    parser = CONTEXT_PARSERS["claude-json"]()
    for i in range(0, len(output), chunk):
        parser.feed(output[i : i + chunk])
    return parser.reading()


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_json_output(chunk: int) -> None:
    result = {**RESULT, "modelUsage": {"claude-opus-4-1": {"contextWindow": 200_000}}}
    reading = read(json.dumps(result).encode() + b"\n", chunk)
    assert reading == ContextReading(tokens=50_000, window=200_000, model="claude-opus-4-1")
    assert reading.percent(200_000) == 25.0


@pytest.mark.parametrize("chunk", [1, 13, 1 << 20])
def test_stream_json_takes_the_last_result(chunk: int) -> None:
    lines = [
        {"type": "system", "subtype": "init", "model": "claude-sonnet-4-5[1m]"},
        {"type": "assistant", "message": {"usage": {"input_tokens": 5}}},
        {**RESULT, "usage": {"input_tokens": 1}},
        "not json at all",
        RESULT,
    ]
    out = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()
    reading = read(out.rstrip(b"\n"), chunk)  # no newline after the last line
    assert reading == ContextReading(tokens=50_000, window=0, model="claude-sonnet-4-5[1m]")
    assert context_window(reading.model) == 1_000_000


def test_pretty_printed_json() -> None:
    assert read(json.dumps(RESULT, indent=2).encode(), 5) == ContextReading(tokens=50_000)


@pytest.mark.parametrize("output", [b"", b"plain text\n", b'{"type": "assistant"}\n'])
def test_no_result_is_no_reading(output: bytes) -> None:
    assert read(output, 4) is None


def test_windows_and_percent() -> None:
    assert context_window("claude-haiku-4-5") == 200_000
    assert context_window("some-model") == DEFAULT_CONTEXT_WINDOW
    assert ContextReading(tokens=300_000).percent(200_000) == 100.0  # capped: the event's range
    assert ContextReading(tokens=1).percent(0) == 0.0
    assert isinstance(CONTEXT_PARSERS["claude-json"](), ClaudeJsonParser)
