"""How full the agent's context window is, read from what the agent prints.

Rule: a parser is fed the child's stdout in chunks, as it comes, and answers at the
end of the run with the tokens in use and the model's window (or nothing). Parsers
see bytes only; the tee that feeds them is ``server/loop/child.py``'s business.
Add an agent by adding a parser class to ``CONTEXT_PARSERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import msgspec

__all__ = [
    "CONTEXT_PARSERS",
    "CONTEXT_WINDOWS",
    "DEFAULT_CONTEXT_WINDOW",
    "ClaudeJsonParser",
    "ContextParser",
    "ContextReading",
    "context_window",
]

#: The window of a model that no row of ``CONTEXT_WINDOWS`` matches, in tokens.
DEFAULT_CONTEXT_WINDOW: Final = 200_000

#: Known context windows, in tokens: the first row whose marker is in the model's name
#: wins. ``--context-window N`` overrides them all.
CONTEXT_WINDOWS: Final[tuple[tuple[str, int], ...]] = (
    ("[1m]", 1_000_000),  # Claude models run with the 1M-token context (e.g. sonnet[1m])
    ("claude-", 200_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-5", 400_000),
    ("gemini-", 1_048_576),
)

#: Bytes of output kept for a last whole-document parse (pretty-printed JSON).
_KEEP_BYTES: Final = 8 << 20


def context_window(model: str) -> int:
    """The context window of ``model`` from ``CONTEXT_WINDOWS``, else the default."""
    for marker, window in CONTEXT_WINDOWS:
        if marker in model:
            return window
    return DEFAULT_CONTEXT_WINDOW


class ContextReading(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens in use against a window; ``window`` is 0 when the output did not say."""

    tokens: int
    window: int = 0
    model: str = ""

    def percent(self, window: int) -> float:
        """Percent of ``window`` in use, at most 100 (the event's range)."""
        return min(100.0, 100.0 * self.tokens / window) if window > 0 else 0.0


class ContextParser(Protocol):
    def feed(self, data: bytes) -> None:
        """Take the next chunk of the child's stdout."""

    def reading(self) -> ContextReading | None:
        """What the output said, once it is complete; ``None`` if it said nothing usable."""


# -- Claude Code: --output-format json / stream-json -----------------------------------


class _Usage(msgspec.Struct, frozen=True):
    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    output_tokens: int = 0

    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
            + self.output_tokens
        )


class _ModelUsage(msgspec.Struct, frozen=True):
    contextWindow: int = 0  # noqa: N815 - Claude Code's spelling


class _Message(msgspec.Struct, frozen=True):
    """A line of stream-json, or the one object of json: only the fields read here."""

    type: str = ""
    model: str = ""
    usage: _Usage | None = None
    modelUsage: dict[str, _ModelUsage] = {}  # noqa: N815 - Claude Code's spelling


_decoder: Final = msgspec.json.Decoder(_Message)


class ClaudeJsonParser:
    """Claude Code's ``--output-format json`` (one result object) or ``stream-json``
    (JSONL; the last ``"type": "result"`` message counts).

    Tokens in use are the result's ``usage``: input + cache read + cache creation +
    output. The window is the result's ``modelUsage[model].contextWindow`` when Claude
    Code states it, else ``CONTEXT_WINDOWS`` by the model named in ``modelUsage`` or in
    the ``system`` init message.
    """

    def __init__(self) -> None:
        self._line = bytearray()
        self._kept = bytearray()
        self._model = ""
        self._result: _Message | None = None

    def feed(self, data: bytes) -> None:
        if len(self._kept) < _KEEP_BYTES:
            self._kept += data[: _KEEP_BYTES - len(self._kept)]
        head, newline, rest = data.rpartition(b"\n")
        if not newline:
            self._line += data
            return
        self._line += head
        for line in bytes(self._line).split(b"\n"):
            self._take(line)
        self._line = bytearray(rest)

    def _take(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"{"):
            return
        try:
            message = _decoder.decode(line)
        except msgspec.MsgspecError:
            return
        if message.model:
            self._model = message.model
        if message.type == "result" and message.usage is not None:
            self._result = message

    def reading(self) -> ContextReading | None:
        if self._line:
            self._take(bytes(self._line))
            self._line.clear()
        if self._result is None:  # maybe one pretty-printed object
            self._take(b" ".join(bytes(self._kept).split()))
        result = self._result
        if result is None or result.usage is None:
            return None
        model, window = self._model, 0
        for name, usage in result.modelUsage.items():
            model = model or name
            window = max(window, usage.contextWindow)
        if not model and result.modelUsage:
            model = next(iter(result.modelUsage))
        return ContextReading(tokens=result.usage.tokens(), window=window, model=model)


#: ``--context-from NAME`` -> a fresh parser for one run of the agent.
CONTEXT_PARSERS: Final[dict[str, Callable[[], ContextParser]]] = {
    "claude-json": ClaudeJsonParser,
}
