"""conductor-loop's message-bus files, parsed: bytes in, messages out.

(A run's ``run-info.yaml`` is ``conductor_runinfo``'s; YAML values and times are read
by ``conductor_values``.)

Rule: no I/O and no clock here. The caller hands in bytes read from a line start
and gets back the messages and broken blocks found there, each with its line, and
``consumed``: the offset up to which everything is settled. What lies after it
(an entry still being written) is handed in again next time.

The format, as conductor-loop writes it and as real files hold it:

* An entry is a ``---`` line, a YAML header (``msg_id``, ``ts``, ``type``,
  ``project_id``, ``task_id``, ``run_id``, optional ``issue_id``, ``parents``,
  ``links``, ``meta``), a ``---`` line, then a free-text body that runs to the
  next ``---`` line or one-line record.
* A one-line record is ``[YYYY-MM-DD HH:MM:SS] TYPE: body`` (also with ``T`` or
  an RFC 3339 time); when the token before the colon is not ``[A-Za-z0-9_/-]+``
  the type is ``INFO``. Records count anywhere outside a header, also after an
  entry's body (older writers appended them with ``echo``).
* A ``---`` opens a header only when the next line looks like a YAML key and a
  closing ``---`` follows within ``MAX_HEADER_LINES`` lines, with no record line
  between; otherwise it is a stray rule and scanning goes on with the next line.
  A closed header that is not a YAML mapping with a ``type`` is a broken block,
  reported with its line; scanning goes on right after its opening ``---``, so
  no message around it is lost. Any other line (prose, headings) is ignored.

When an entry is complete, and so consumed: once a later line ends its body (a
``---`` or a record); or, with ``final`` (the file is quiet: a one-shot import,
or a follower that saw the same size twice), once its header is closed and a body
line follows it, ending with a newline (conductor-loop writes at least ``\n``).
An unclosed header and a last line without its newline are never consumed.

A record has no ``msg_id``; one is derived from ``id_seed`` (the file's name
with any ``.archived`` suffix dropped, so rotation keeps it), the line's byte
offset and its bytes: the same line in the same place always gets the same id.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import yaml

from server.conductor.values import (
    MSG_ID_KEYS,
    PROJECT_KEYS,
    RUN_ID_KEYS,
    TASK_KEYS,
    TS_KEYS,
    TYPE_KEYS,
    YAML_ERRORS,
    as_timestamp,
    first_field,
    load_yaml,
    parse_time,
)

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_HEADER_LINES",
    "RUN_CRASH",
    "RUN_START",
    "RUN_STOP",
    "BlockError",
    "BusEntry",
    "ParseResult",
    "exit_code_in",
    "parse_bus",
    "synthesize_id",
]

RUN_START: Final = "RUN_START"
RUN_STOP: Final = "RUN_STOP"
RUN_CRASH: Final = "RUN_CRASH"

MAX_HEADER_LINES: Final = 200
MAX_HEADER_BYTES: Final = 64 << 10

_SEPARATOR: Final = b"---"
_KEY_LINE: Final = re.compile(rb"[A-Za-z_][A-Za-z0-9_.-]*[ \t]*:(?:[ \t]|$)")
_RECORD: Final = re.compile(r"\[([^\]]+)\](.*)")
_TYPE_TOKEN: Final = re.compile(r"[A-Za-z0-9_/-]+")
_EXIT_CODE: Final = re.compile(r"\bcode[ :=]+(-?\d+)\b")


@dataclass(frozen=True, slots=True)
class BusEntry:
    """One message: a YAML entry (``style="entry"``) or a one-line record (``"record"``)."""

    line: int
    offset: int
    msg_type: str
    msg_id: str
    ts: float | None = None
    project: str = ""
    task: str = ""
    run_id: str = ""
    body: str = ""
    style: Literal["entry", "record"] = "entry"


@dataclass(frozen=True, slots=True)
class BlockError:
    """A header that could not be read: where it starts, and why."""

    line: int
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one call found; ``consumed``/``consumed_line`` are where the next call starts."""

    entries: list[BusEntry]
    errors: list[BlockError]
    consumed: int
    consumed_line: int
    pending_line: int | None  # first line left unconsumed (an incomplete entry or line), if any


def synthesize_id(seed: str, offset: int, raw: bytes, prefix: str = "LINE") -> str:
    """A deterministic id for a message that has none: ``PREFIX-<20 hex digits>``."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(f"{seed}\0{offset}\0".encode())
    digest.update(raw)
    return f"{prefix}-{digest.hexdigest()}"


def exit_code_in(body: str) -> int | None:
    """The exit code a RUN_STOP/RUN_CRASH body states ("run stopped with code 1"), if any."""
    match = _EXIT_CODE.search(body)
    return int(match[1]) if match else None


# -- the scanner ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    doc: dict[Any, Any]
    raw: bytes
    closer: int  # index of the closing "---" line


@dataclass(frozen=True, slots=True)
class _Broken:
    reason: str


_HeaderOutcome = _Header | _Broken | Literal["pending", "stray"]


@dataclass(slots=True)
class _Open:
    start: int  # index of the opening "---"
    header: _Header


@dataclass(slots=True)
class _Scan:
    data: bytes
    offset: int
    line: int
    seed: str
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    entries: list[BusEntry] = field(default_factory=list)
    errors: list[BlockError] = field(default_factory=list)

    def __post_init__(self) -> None:
        data, start = self.data, 0
        end = data.find(b"\n")
        while end >= 0:
            self.starts.append(start)
            self.ends.append(end)
            start = end + 1
            end = data.find(b"\n", start)

    def content(self, i: int) -> bytes:
        """Line ``i`` without its newline and a trailing CR."""
        text = self.data[self.starts[i] : self.ends[i]]
        return text[:-1] if text.endswith(b"\r") else text

    def run(self, final: bool) -> ParseResult:
        count = len(self.ends)
        tail = (self.ends[-1] + 1 if self.ends else 0) < len(self.data)
        stop: int | None = None  # index of the first line not consumed
        current: _Open | None = None
        i = 0
        while i < count:
            text = self.content(i)
            if text == _SEPARATOR:
                if current is not None:
                    self.finish(current, i)
                    current = None
                outcome = self.header_at(i)
                match outcome:
                    case _Header():
                        current = _Open(i, outcome)
                        i = outcome.closer + 1
                    case _Broken(reason=reason):
                        self.errors.append(BlockError(self.line + i, self.at(i), reason))
                        i += 1
                    case "stray":
                        i += 1
                    case "pending":
                        stop = i
                        break
                continue
            record = _record(text)
            if record is not None:
                if current is not None:
                    self.finish(current, i)
                    current = None
                ts, msg_type, body = record
                at = self.at(i)
                self.entries.append(
                    BusEntry(
                        self.line + i,
                        at,
                        msg_type,
                        synthesize_id(self.seed, at, text),
                        ts,
                        body=body,
                        style="record",
                    )
                )
            i += 1
        if stop is None and current is not None:
            if final and not tail and count > current.header.closer + 1:
                self.finish(current, count)
            else:
                stop = current.start
        pending: int | None
        if stop is not None:
            consumed, consumed_line = self.starts[stop], self.line + stop
            pending = consumed_line
        else:
            consumed = self.ends[-1] + 1 if self.ends else 0
            consumed_line = self.line + count
            pending = consumed_line if tail else None
        return ParseResult(
            self.entries, self.errors, self.offset + consumed, consumed_line, pending
        )

    def at(self, i: int) -> int:
        return self.offset + self.starts[i]

    def header_at(self, i: int) -> _HeaderOutcome:
        """Whether the ``---`` at line ``i`` opens a header, and if so, the header."""
        count = len(self.ends)
        if i + 1 >= count:
            return "pending"
        if _KEY_LINE.match(self.content(i + 1)) is None:
            return "stray"
        size = 0
        j = i + 1
        while True:
            if j >= count:
                return "pending"
            text = self.content(j)
            if text == _SEPARATOR:
                break
            if text.startswith(b"[") and _record(text) is not None:
                return "stray"
            size += len(text) + 1
            if j - i > MAX_HEADER_LINES or size > MAX_HEADER_BYTES:
                return "stray"
            j += 1
        raw = b"\n".join(self.content(k) for k in range(i + 1, j))
        try:
            doc = load_yaml(raw.decode("utf-8", "replace"))
        except YAML_ERRORS as exc:
            return _Broken(_yaml_reason(exc, self.line + i + 1))
        if not isinstance(doc, dict):
            return _Broken("header is not a YAML mapping")
        if not first_field(doc, TYPE_KEYS):
            return _Broken("header has no type")
        return _Header(doc, raw, j)

    def finish(self, current: _Open, end: int) -> None:
        """Emit the open entry whose body is lines ``closer + 1 .. end - 1``."""
        header = current.header
        doc = header.doc
        body = "\n".join(
            self.content(k).decode("utf-8", "replace") for k in range(header.closer + 1, end)
        )
        offset = self.at(current.start)
        msg_id = first_field(doc, MSG_ID_KEYS) or synthesize_id(
            self.seed, offset, header.raw, "ENTRY"
        )
        stamps = (as_timestamp(doc.get(name)) for name in TS_KEYS)
        self.entries.append(
            BusEntry(
                line=self.line + current.start,
                offset=offset,
                msg_type=first_field(doc, TYPE_KEYS),
                msg_id=msg_id,
                ts=next((ts for ts in stamps if ts is not None), None),
                project=first_field(doc, PROJECT_KEYS),
                task=first_field(doc, TASK_KEYS),
                run_id=first_field(doc, RUN_ID_KEYS),
                body=body.strip("\n"),
            )
        )


def _record(text: bytes) -> tuple[float, str, str] | None:
    """``(ts, type, body)`` of a one-line record, or None for any other line."""
    stripped = text.strip()
    if not stripped.startswith(b"["):
        return None
    match = _RECORD.match(stripped.decode("utf-8", "replace"))
    if match is None:
        return None
    ts = parse_time(match[1])
    content = match[2].strip()
    if ts is None or not content:
        return None
    head, colon, rest = content.partition(":")
    token = head.strip()
    if colon and head and _TYPE_TOKEN.fullmatch(token):
        return ts, token.upper(), rest.strip() or content
    return ts, "INFO", content


def _yaml_reason(exc: BaseException, first_line: int) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        where = first_line + exc.problem_mark.line
        return f"header is not valid YAML: {exc.problem or exc.context} (line {where})"
    return f"header is not valid YAML: {exc}"


def parse_bus(
    data: bytes, *, offset: int = 0, line: int = 1, final: bool = False, id_seed: str = ""
) -> ParseResult:
    """Parse ``data``, the bytes of a bus file from ``offset`` (a line start, line ``line``) on.

    ``final`` says the file is quiet: an entry at the very end whose header is
    closed and whose data ends with a newline is then complete. ``id_seed``
    names the file in the ids derived for records and for headers without one.
    """
    return _Scan(data, offset, line, id_seed).run(final)
