"""The documentation checked against the code and the tree, so neither can drift.

``docs/events.md`` against ``bus/events.py``: every event type is documented and
nothing else is; each type's table lists exactly its Struct's fields, each with
the type and default the Struct declares (rendered by ``type_text`` and
``default_text`` below). ``README.md``, ``benchmarks/README.md`` and every file
under ``docs/``: no link leaves the repository or points at a path (or heading)
that does not exist, and every repository path written in backticks exists.
README's "Layout": each module and subpackage of ``bus/``, ``projections/`` and
``server/`` is described, and nothing named there is gone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from bus.events import (
    EVENT_TYPES,
    LABEL_NAME_PATTERN,
    METRIC_NAME_PATTERN,
    EventBase,
    LoopStarted,
)

ROOT = Path(__file__).resolve().parents[1]
EVENTS_DOC = ROOT / "docs" / "events.md"
TABLE_HEADER = ("field", "type", "default", "meaning")


# -- reading Markdown ------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield number, line


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside code blocks."""
    found = []
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, heading in headings(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row (``\\|`` is a literal bar)."""
    body = line.strip()
    body = body.removeprefix("|").removesuffix("|")
    return [cell.replace("\\|", "|").strip() for cell in re.split(r"(?<!\\)\|", body)]


def plain(cell: str) -> str:
    """A cell's text without code spans' backticks."""
    return cell.replace("`", "").strip()


def sections(text: str, level: int) -> dict[str, list[str]]:
    """Heading text -> the lines below it, up to the next heading of ``level`` or higher."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if match and len(match.group(1)) <= level:
            current = None
            if len(match.group(1)) == level:
                current = out.setdefault(match.group(2), [])
            continue
        if current is not None:
            current.append(line)
    return out


def tables(lines: list[str]) -> list[list[list[str]]]:
    """Every table in ``lines``: header row first, the separator row left out."""
    found: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*lines, ""]:
        if line.lstrip().startswith("|"):
            cells = split_row(line)
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


# -- what the code says ----------------------------------------------------------


class Row(NamedTuple):
    type: str
    default: str
    meaning: str


def _bound(value: float) -> str:
    return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))


def type_text(t: Any) -> str:
    """How docs/events.md writes a field's type (see its "Types and defaults")."""
    ins = msgspec.inspect
    if isinstance(t, ins.Metadata):
        pattern = (t.extra_json_schema or {}).get("pattern")
        inner = type_text(t.type)
        return f"{inner} matching {pattern}" if pattern else inner
    if isinstance(t, ins.StrType):
        if t.max_length is not None or t.pattern is not None or t.min_length not in (None, 1):
            raise AssertionError(f"no notation for {t!r}: add one to type_text and the doc")
        return "string, non-empty" if t.min_length == 1 else "string"
    if isinstance(t, ins.IntType | ins.FloatType):
        base = "integer" if isinstance(t, ins.IntType) else "number"
        if t.gt is not None or t.lt is not None or t.multiple_of is not None:
            raise AssertionError(f"no notation for {t!r}: add one to type_text and the doc")
        if t.ge is not None and t.le is not None:
            return f"{base} {_bound(t.ge)}\u2013{_bound(t.le)}"  # an en dash
        if t.ge is not None:
            return f"{base} ≥ {_bound(t.ge)}"
        if t.le is not None:
            return f"{base} ≤ {_bound(t.le)}"
        return base
    if isinstance(t, ins.BoolType):
        return "boolean"
    if isinstance(t, ins.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in sorted(t.values))
    if isinstance(t, ins.UnionType):
        parts = [type_text(x) for x in t.types if not isinstance(x, ins.NoneType)]
        nullable = any(isinstance(x, ins.NoneType) for x in t.types)
        return " or ".join(parts + (["null"] if nullable else []))
    if isinstance(t, ins.DictType):
        return f"object of {type_text(t.key_type)} → {type_text(t.value_type)}"
    if isinstance(t, ins.ListType):
        if t.min_length is not None or t.max_length is not None:
            raise AssertionError(f"no notation for {t!r}: add one to type_text and the doc")
        return f"array of {type_text(t.item_type)}"
    raise AssertionError(f"no notation for {t!r}: add one to type_text and the doc")


def default_text(field: msgspec.inspect.Field) -> str:
    """``required``, or the default as JSON."""
    if field.required:
        return "required"
    value = field.default
    if value is msgspec.NODEFAULT:
        value = field.default_factory()
    return msgspec.json.encode(value).decode()


def struct_fields(cls: type[EventBase]) -> dict[str, tuple[str, str]]:
    """Field name -> (type text, default text), as the Struct declares them."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.encode_name: (type_text(f.type), default_text(f)) for f in info.fields}


def tag_field() -> str:
    info = msgspec.inspect.type_info(next(iter(EVENT_TYPES.values())))
    assert isinstance(info, msgspec.inspect.StructType)
    return str(info.tag_field)


COMMON = struct_fields(EventBase)


# -- what the doc says -----------------------------------------------------------


def field_table(lines: list[str], where: str) -> dict[str, Row]:
    """The one ``| field | type | default | meaning |`` table in ``lines``."""
    found = [t for t in tables(lines) if tuple(c.lower() for c in t[0]) == TABLE_HEADER]
    assert len(found) == 1, f"{where}: expected one field table, found {len(found)}"
    rows: dict[str, Row] = {}
    for cells in found[0][1:]:
        assert len(cells) == len(TABLE_HEADER), f"{where}: row {cells!r} has the wrong width"
        name = plain(cells[0])
        assert name not in rows, f"{where}: field {name!r} listed twice"
        rows[name] = Row(plain(cells[1]), plain(cells[2]), cells[3])
    return rows


def documented_events(text: str) -> dict[str, dict[str, Row]]:
    """Event type -> its field table, from every ``### `type``` heading."""
    out: dict[str, dict[str, Row]] = {}
    for heading, lines in sections(text, 3).items():
        match = re.fullmatch(r"`(\w+)`", heading)
        if match:
            out[match.group(1)] = field_table(lines, f"docs/events.md, {heading}")
    return out


def drift(cls: type[EventBase], rows: dict[str, Row]) -> list[str]:
    """How a documented table differs from ``cls``'s own fields (the common ones excluded)."""
    fields = {k: v for k, v in struct_fields(cls).items() if k not in COMMON}
    problems = [f"{name}: in the code, not documented" for name in fields.keys() - rows.keys()]
    problems += [f"{name}: documented, not in the code" for name in rows.keys() - fields.keys()]
    for name in fields.keys() & rows.keys():
        want_type, want_default = fields[name]
        row = rows[name]
        if row.type != want_type:
            problems.append(f"{name}: type {row.type!r} documented, the code says {want_type!r}")
        if row.default != want_default:
            problems.append(f"{name}: default {row.default!r} documented, code {want_default!r}")
        if not row.meaning.strip():
            problems.append(f"{name}: no meaning given")
    return problems


@pytest.fixture(scope="module")
def events_doc() -> str:
    return EVENTS_DOC.read_text(encoding="utf-8")


# -- docs/events.md against bus/events.py ----------------------------------------


def test_every_event_type_has_a_section_and_no_other(events_doc: str) -> None:
    documented = documented_events(events_doc)
    assert sorted(documented) == sorted(EVENT_TYPES), (
        f"undocumented: {sorted(EVENT_TYPES.keys() - documented.keys())}; "
        f"documented but unknown: {sorted(documented.keys() - EVENT_TYPES.keys())}"
    )


def test_overview_lists_every_event_type_once(events_doc: str) -> None:
    lines = sections(events_doc, 2)["Event types"]
    overview = [t for t in tables(lines) if plain(t[0][0]).lower() == "type"]
    assert len(overview) == 1
    listed = [plain(cells[0]) for cells in overview[0][1:]]
    assert sorted(listed) == sorted(EVENT_TYPES)
    assert len(listed) == len(set(listed))


def test_common_fields_match_event_base(events_doc: str) -> None:
    rows = field_table(sections(events_doc, 2)["Common fields"], "Common fields")
    tag = tag_field()
    assert rows.keys() == {tag, *COMMON}
    assert (rows[tag].type, rows[tag].default) == ("string", "required")
    for name, (type_, default) in COMMON.items():
        assert (rows[name].type, rows[name].default) == (type_, default), name
        assert rows[name].meaning


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_event_fields_match_the_struct(events_doc: str, event_type: str) -> None:
    cls = EVENT_TYPES[event_type]
    assert set(COMMON) <= set(struct_fields(cls)), f"{event_type} lost a common field"
    rows = documented_events(events_doc).get(event_type)
    assert rows is not None, f"docs/events.md has no section for {event_type}"
    assert drift(cls, rows) == [], f"docs/events.md, {event_type}"


def test_a_field_added_to_a_struct_without_its_doc_is_caught(events_doc: str) -> None:
    class Grown(LoopStarted, frozen=True, tag="loop_started"):
        note: str = ""

    rows = documented_events(events_doc)["loop_started"]
    assert drift(LoopStarted, rows) == []
    assert drift(Grown, rows) == ["note: in the code, not documented"]


def test_metric_name_patterns_are_the_code_s(events_doc: str) -> None:
    lines = "\n".join(sections(events_doc, 3)["`metric`"])
    assert f"`{METRIC_NAME_PATTERN}`" in lines
    assert f"`{LABEL_NAME_PATTERN}`" in lines


# -- links and paths in the repository's Markdown ---------------------------------


def markdown_files() -> list[Path]:
    docs = sorted((ROOT / "docs").rglob("*.md"))
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *docs]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def links(text: str) -> list[str]:
    """Targets of inline links, images and reference definitions, outside code."""
    prose = "\n".join(_CODE_SPAN.sub("", line) for _, line in prose_lines(text))
    found = [m.group(1) for m in _INLINE_LINK.finditer(prose)]
    found += [m.group(1) for line in prose.splitlines() if (m := _REF_DEF.match(line))]
    return found


def link_problem(source: Path, target: str) -> str | None:
    if _SCHEME.match(target) or target.startswith("//"):
        return None  # a URL, not a repository path
    path_part, _, anchor = target.partition("#")
    if not path_part:
        dest = source
    else:
        if path_part.startswith("/"):
            return "absolute path"
        dest = (source.parent / path_part).resolve()
        if not dest.is_relative_to(ROOT):
            return "outside the repository"
        if not dest.exists():
            return "no such file or directory"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text("utf-8")):
        return f"no heading #{anchor} in {_rel(dest)}"
    return None


def test_link_check_catches_what_it_is_for() -> None:
    readme = ROOT / "README.md"
    text = "[a](../shared/DESIGN.md#x) `[b](code.md)`\n```\n[c](fenced.md)\n```\n[d]: <docs/x.md>"
    assert links(text) == ["../shared/DESIGN.md#x", "docs/x.md"]
    assert link_problem(readme, "../shared/DESIGN.md") == "outside the repository"
    assert link_problem(readme, "docs/nowhere.md") == "no such file or directory"
    assert link_problem(readme, "#no-such-heading") == "no heading #no-such-heading in README.md"
    assert link_problem(readme, "#for-conductor-loop-users") is None
    assert link_problem(readme, "bus/") is None
    assert link_problem(readme, "https://example.com/x") is None
    assert slug("Event catalogue, schema v1") == "event-catalogue-schema-v1"
    assert slug("`metric`") == "metric"


@pytest.mark.parametrize("path", markdown_files(), ids=_rel)
def test_links_stay_in_the_repository_and_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    problems = [
        f"{target}: {problem}"
        for target in links(text)
        if (problem := link_problem(path, target)) is not None
    ]
    assert problems == []


@pytest.mark.parametrize("path", markdown_files(), ids=_rel)
def test_no_reference_to_the_developers_design_notes(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text
    assert "../shared" not in text


#: Top-level directories of the repository: a code span starting with one is a path.
_TOP = (
    "bus",
    "projections",
    "server",
    "tests",
    "benchmarks",
    "docs",
    "scripts",
    ".ci",
    "contrib",
)
_PATHLIKE = re.compile(r"[\w.-]+(/[\w.-]+)*/?")


@pytest.mark.parametrize("path", markdown_files(), ids=_rel)
def test_repository_paths_in_code_spans_exist(path: Path) -> None:
    """`` `projections/dispatch.py` `` in prose must name a file or directory that exists.

    Spans with placeholders (``<offset>``, ``*``) are not paths; relative ones are tried
    beside the Markdown file first, then at the repository root.
    """
    missing = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in _CODE_SPAN.finditer(line):
            span = match.group(2).strip()
            if not _PATHLIKE.fullmatch(span) or "/" not in span:
                continue
            if span.split("/")[0] not in _TOP and not (path.parent / span).exists():
                continue
            if not ((path.parent / span).exists() or (ROOT / span).exists()):
                missing.append(f"line {number}: {span}")
    assert missing == []


# -- README's Layout against the tree ----------------------------------------------


def layout_bullets() -> dict[str, str]:
    """``pkg/`` -> the text of README's Layout bullet that starts with `` `pkg/` ``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    bullets: dict[str, str] = {}
    current: str | None = None
    for line in sections(readme, 2)["Layout"]:
        match = re.match(r"- `([\w.-]+/)`", line)
        if match:
            current = match.group(1)
            bullets[current] = line
        elif current is not None and line.startswith("  "):
            bullets[current] += " " + line.strip()
        else:
            current = None
    return bullets


@pytest.mark.parametrize("package", ["bus", "projections", "server"])
def test_readme_layout_describes_every_module_that_exists(package: str) -> None:
    """Each module and subpackage of ``package`` is named in its bullet; no name is stale."""
    text = layout_bullets()[f"{package}/"]
    spans = {m.group(2) for m in _CODE_SPAN.finditer(text)}
    named = {s for s in spans if re.fullmatch(r"[\w.]+\.(py|c)|\w+/", s)} - {f"{package}/"}
    top = ROOT / package
    on_disk = {
        p.name + "/" if p.is_dir() else p.name
        for p in top.iterdir()
        if not p.name.startswith("__")
        and ((p.is_dir() and (p / "__init__.py").exists()) or p.suffix in (".py", ".c"))
    }
    stale = sorted(s for s in named if next(top.rglob(s.rstrip("/")), None) is None)
    assert stale == [], f"README Layout names what {package}/ does not hold"
    assert sorted(on_disk - named) == [], f"README Layout does not describe these of {package}/"
