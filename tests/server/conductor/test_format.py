"""conductor-loop message-bus parsing: case tables for records and headers, whole files, resumes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.conductor.format import (
    BusEntry,
    ParseResult,
    exit_code_in,
    parse_bus,
    synthesize_id,
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def entry(*, msg_id: str, msg_type: str, when: str = "2026-02-20T15:54:54Z", **fields: str) -> str:
    """One entry the way conductor-loop's writer puts it (a blank line before the next)."""
    header = "".join(f"{key}: {value}\n" for key, value in fields.items())
    body = fields.pop("body", "") if "body" in fields else "run started"
    return f"---\nmsg_id: {msg_id}\nts: {when}\ntype: {msg_type}\n{header}---\n{body}\n\n"


def parse(text: str | bytes, **kwargs: object) -> ParseResult:
    data = text.encode() if isinstance(text, str) else text
    return parse_bus(data, **kwargs)  # type: ignore[arg-type]


def kinds(result: ParseResult) -> list[tuple[str, str]]:
    return [(e.style, e.msg_type) for e in result.entries]


# -- one-line records --------------------------------------------------------------

RECORDS = [
    ("[2026-02-05 12:51:53] DECISION: Starting", "DECISION", "Starting", "2026-02-05 12:51:53"),
    ("[2026-02-05T12:51:53] FACT: x", "FACT", "x", "2026-02-05 12:51:53"),
    ("[2026-01-31T20:58:00Z] QUESTION: why?", "QUESTION", "why?", "2026-01-31 20:58:00"),
    ("[2026-01-31T22:58:00+02:00] FACT: tz", "FACT", "tz", "2026-01-31 20:58:00"),
    ("[2026-02-05 12:51:53.250] FACT: frac", "FACT", "frac", "2026-02-05 12:51:53.250"),
    ("[2026-02-05 12:51:53] progress: lower", "PROGRESS", "lower", "2026-02-05 12:51:53"),
    ("[2026-02-05 12:51:53] run/step-1: slash", "RUN/STEP-1", "slash", "2026-02-05 12:51:53"),
    ("[2026-02-05 12:51:53] ======", "INFO", "======", "2026-02-05 12:51:53"),
    ("[2026-02-05 14:15:30] --- Core Examples ---", "INFO", "--- Core Examples ---", None),
    ("[2026-02-05 12:51:53] SESSION SUMMARY: x", "INFO", "SESSION SUMMARY: x", None),
    ("[2026-02-05 12:51:53] Message Bus: /a/b", "INFO", "Message Bus: /a/b", None),
    ("[2026-02-05 12:51:53] FACT:", "FACT", "FACT:", None),
    ("  [2026-02-05 12:51:53] FACT: indented  ", "FACT", "indented", None),
    ("[2026-02-05 12:51:53] FACT: CRLF\r", "FACT", "CRLF", None),
]


@pytest.mark.parametrize(("line", "msg_type", "body", "when"), RECORDS)
def test_record_lines(line: str, msg_type: str, body: str, when: str | None) -> None:
    result = parse(line + "\n")
    assert len(result.entries) == 1, result
    record = result.entries[0]
    assert (record.style, record.msg_type, record.body) == ("record", msg_type, body)
    assert record.msg_id.startswith("LINE-")
    if when is not None:
        assert record.ts == pytest.approx(ts(when))


@pytest.mark.parametrize(
    "line",
    [
        "[$(date '+%Y-%m-%d %H:%M:%S')] FACT: the shell never expanded it",
        "[2026-02-05 12:51:53Z] FACT: a zone needs the T form",
        "[2026-13-05 12:51:53] FACT: month 13",
        "[2026-02-05 12:51:53]",
        "[] FACT: no time",
        "2026-02-05 12:51:53 FACT: no brackets",
        "- [2026-02-05 12:51:53] FACT: inside a list item",
        "**Start**: prose",
    ],
)
def test_lines_that_are_not_records_are_ignored(line: str) -> None:
    result = parse(line + "\n", final=True)
    assert (result.entries, result.errors, result.pending_line) == ([], [], None)


# -- entries --------------------------------------------------------------------------


def test_entry_fields() -> None:
    text = entry(
        msg_id="MSG-1",
        msg_type="RUN_START",
        when="2026-02-20T15:54:54.390976Z",
        project_id="conductor-loop",
        task_id="session7",
        run_id="20260220-1554540000-30154",
    )
    result = parse(text, final=True)
    assert result.entries == [
        BusEntry(
            line=1,
            offset=0,
            msg_type="RUN_START",
            msg_id="MSG-1",
            ts=pytest.approx(ts("2026-02-20 15:54:54.390976")),  # type: ignore[arg-type]
            project="conductor-loop",
            task="session7",
            run_id="20260220-1554540000-30154",
            body="run started",
        )
    ]
    assert result.consumed == len(text)


def test_older_header_spellings() -> None:
    text = (
        "---\nmessageId: MSG-20260202-223212-a1b2\ntype: PROGRESS\nagent: codex\n"
        "timestamp: 2026-02-02T22:32:12Z\nrunId: run_1\ntaskId: TASK-X\n---\nbody\n"
        "---\nmsg_id: MSG-2\nts: 2026-02-04T18:17:10Z\ntype: ISSUE\nproject: swarm\n"
        "task: planning\n---\nbody\n"
    )
    first, second = parse(text, final=True).entries
    assert (first.msg_id, first.task, first.run_id) == (
        "MSG-20260202-223212-a1b2",
        "TASK-X",
        "run_1",
    )
    assert first.ts == ts("2026-02-02 22:32:12")
    assert (second.project, second.task, second.msg_type) == ("swarm", "planning", "ISSUE")


def test_header_without_msg_id_gets_a_deterministic_one() -> None:
    text = "---\ntype: FACT\nproject_id: p\n---\nbody\n"
    one = parse(text, final=True, id_seed="p/PROJECT-MESSAGE-BUS.md").entries[0]
    two = parse(text, final=True, id_seed="p/PROJECT-MESSAGE-BUS.md").entries[0]
    other = parse(text, final=True, id_seed="q/PROJECT-MESSAGE-BUS.md").entries[0]
    assert one.msg_id.startswith("ENTRY-")
    assert one.msg_id == two.msg_id != other.msg_id


def test_synthesized_ids_differ_by_place_and_content() -> None:
    line = b"[2026-02-05 12:51:54] =========="
    ids = {
        synthesize_id("a", 0, line),
        synthesize_id("a", 40, line),
        synthesize_id("b", 0, line),
        synthesize_id("a", 0, line + b"="),
    }
    assert len(ids) == 4
    result = parse((line.decode() + "\n") * 3)
    assert len({e.msg_id for e in result.entries}) == 3  # identical lines, different offsets


BROKEN = [
    ("---\nmsg_id: A\ntype: [unclosed\n---\n", "not valid YAML"),
    ("---\nmsg_id: A\ntype: FACT\n  bad: indent\n---\n", "not valid YAML"),
    ("---\nmsg_id: A\nproject_id: p\n---\n", "has no type"),
    ("---\nmsg_id: A\ntype:\n---\n", "has no type"),
    ("---\nmsg_id: A\ntype: {nested: map}\n---\n", "has no type"),
    ("---\nmsg_id: A\n... \nmore: x\n---\n", "not valid YAML"),
    ("---\nts: 2026-13-45T10:00:00Z\ntype: FACT\n---\n", "not valid YAML"),  # month 13
]


@pytest.mark.parametrize(("block", "reason"), BROKEN)
def test_broken_headers_are_reported_and_neighbours_kept(block: str, reason: str) -> None:
    before = "[2026-02-05 12:00:00] FACT: before\n"
    after = entry(msg_id="MSG-after", msg_type="FACT")
    result = parse(before + block + "prose between\n" + after, final=True)
    ids = [e.msg_id for e in result.entries]
    assert ids[0].startswith("LINE-")
    assert ids[-1] == "MSG-after"
    assert len(ids) == 2
    assert len(result.errors) == 1
    assert result.errors[0].line == 2
    assert result.errors[0].offset == len(before)
    assert reason in result.errors[0].reason


def test_stray_rules_and_prose_lose_nothing() -> None:
    text = (
        "# Conductor Loop Implementation - Message Bus\n\n**Project**: Conductor Loop\n\n"
        "---\n\n"  # a rule under the title, then records
        "[2026-02-05 12:51:53] DECISION: one\n"
        "---\n"  # a rule directly before a record
        "[2026-02-05 12:51:54] FACT: two\n"
        + entry(msg_id="MSG-3", msg_type="FACT", body="prose\n\n---\n\nmore prose after a rule")
        + "---\n---\n"  # an empty header is not a header
        + entry(msg_id="MSG-4", msg_type="FACT")
    )
    result = parse(text, final=True)
    assert [e.msg_id for e in result.entries if e.style == "entry"] == ["MSG-3", "MSG-4"]
    assert [e.msg_type for e in result.entries] == ["DECISION", "FACT", "FACT", "FACT"]
    assert result.errors == []
    assert result.consumed == len(text)


def test_records_after_an_entry_body_count() -> None:
    text = (
        "---\nmsg_id: MSG-S8\nts: 2026-02-20T17:45:00Z\ntype: SESSION_START\n"
        "project_id: conductor-loop\n---\n\n"
        "[2026-02-20 17:45:00] ==========\n"
        "[2026-02-20 17:45:00] PROGRESS: Starting session #8\n\n"
        "## Completed Tasks\n- go build ./...: PASS\n"
    )
    result = parse(text, final=True)
    assert kinds(result) == [("entry", "SESSION_START"), ("record", "INFO"), ("record", "PROGRESS")]
    assert [e.line for e in result.entries] == [1, 8, 9]


def test_both_styles_mixed_in_one_file() -> None:
    text = (
        "[2026-01-31T20:58:00Z] type=info project=swarm task=planning\n"
        "Message: Read ideas.md and created SUBSYSTEMS.md.\n\n"
        + entry(msg_id="MSG-1", msg_type="RUN_START", run_id="r1")
        + "[2026-02-20 12:43:00] FACT: go build ./... passes\n"
        + entry(msg_id="MSG-2", msg_type="RUN_STOP", run_id="r1", body="run stopped with code 0")
        + "[2026-02-20 12:43:30] ==========\n"
    )
    result = parse(text, final=True)
    assert kinds(result) == [
        ("record", "INFO"),
        ("entry", "RUN_START"),
        ("record", "FACT"),
        ("entry", "RUN_STOP"),
        ("record", "INFO"),
    ]
    assert result.entries[3].body == "run stopped with code 0"
    lines = text.split("\n")
    for found in result.entries:
        assert lines[found.line - 1] in ("---", text[found.offset :].split("\n", 1)[0])


def test_crlf_file_reads_like_lf() -> None:
    lf = (
        "[2026-02-05 12:51:53] DECISION: one\n"
        + entry(msg_id="MSG-1", msg_type="FACT", project_id="p")
        + "---\nmsg_id: MSG-2\ntype: [broken\n---\n"
        + entry(msg_id="MSG-3", msg_type="RUN_STOP", run_id="r")
    )
    crlf = lf.replace("\n", "\r\n")
    a, b = parse(lf, final=True), parse(crlf, final=True)
    strip = [(e.line, e.msg_type, e.ts, e.project, e.run_id, e.body) for e in a.entries]
    assert strip == [(e.line, e.msg_type, e.ts, e.project, e.run_id, e.body) for e in b.entries]
    assert [e.line for e in a.errors] == [e.line for e in b.errors] == [10]
    assert b.consumed == len(crlf.encode())


# -- completeness and resuming -----------------------------------------------------------


def test_entry_being_written_is_not_consumed() -> None:
    done = "[2026-02-05 12:51:53] FACT: done\n"
    whole = entry(msg_id="MSG-1", msg_type="FACT")
    for cut in range(len(whole)):
        part = done + whole[:cut]
        result = parse(part, final=True)
        complete = whole[:cut].count("\n") >= 6  # the closing "---" and one body line
        assert len(result.entries) == (2 if complete else 1), cut
        if cut and not complete:
            assert (result.consumed, result.pending_line) == (len(done), 2), cut
    result = parse(done + whole, final=False)  # a writer may still be adding body lines
    assert (len(result.entries), result.consumed, result.pending_line) == (1, len(done), 2)
    result = parse(done + whole, final=True)
    assert (len(result.entries), result.consumed, result.pending_line) == (
        2,
        len(done + whole),
        None,
    )


def test_partial_last_line_waits_for_its_newline() -> None:
    result = parse("[2026-02-05 12:51:53] FACT: one\n[2026-02-05 12:51:54] FACT: tw", final=True)
    assert [e.body for e in result.entries] == ["one"]
    assert (result.consumed, result.consumed_line, result.pending_line) == (32, 2, 2)


def test_unclosed_header_far_from_a_closer_is_a_stray_rule() -> None:
    text = "---\nnote: this is prose, not a header\n" + "more prose\n" * 250
    text += "[2026-02-05 12:51:53] FACT: after\n"
    result = parse(text, final=True)
    assert kinds(result) == [("record", "FACT")]
    assert result.consumed == len(text)


MIXED = (
    "# Title\n\n---\n\n"
    "[2026-02-05 12:51:53] DECISION: one\n"
    + entry(msg_id="MSG-1", msg_type="RUN_START", run_id="r1")
    + "---\nmsg_id: MSG-X\ntype: [broken\n---\nbody of the broken one\n"
    + entry(msg_id="MSG-2", msg_type="RUN_CRASH", run_id="r1", body="run stopped with code 2")
    + "[2026-02-05 12:51:54] FACT: two\r\n"
    + entry(msg_id="MSG-3", msg_type="FACT")
)


def test_resuming_at_any_byte_gives_the_same_messages() -> None:
    data = MIXED.encode()
    whole = parse(data, final=True, id_seed="s")
    assert len(whole.entries) == 5 and len(whole.errors) == 1
    for cut in range(len(data) + 1):
        first = parse_bus(data[:cut], final=False, id_seed="s")
        rest = parse_bus(
            data[first.consumed :],
            offset=first.consumed,
            line=first.consumed_line,
            final=True,
            id_seed="s",
        )
        assert first.entries + rest.entries == whole.entries, cut
        assert first.errors + rest.errors == whole.errors, cut


def test_offsets_and_lines_point_at_the_message() -> None:
    data = MIXED.encode()
    result = parse_bus(data, final=True)
    lines = data.split(b"\n")
    for found in result.entries:
        head = data[found.offset :].split(b"\n", 1)[0]
        assert lines[found.line - 1] == head
        assert head == b"---" if found.style == "entry" else head.startswith(b"[")


@pytest.mark.parametrize(
    ("body", "code"),
    [("run stopped with code 0", 0), ("run stopped with code 41\nstderr: x", 41), ("done", None)],
)
def test_exit_code_in_body(body: str, code: int | None) -> None:
    assert exit_code_in(body) == code
