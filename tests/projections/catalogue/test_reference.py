"""``docs/metrics.md`` against the catalogue: the tables are the catalogue's, and nothing else.

To rewrite a table after changing the catalogue, print ``reference_tables()`` and
paste each table under its heading.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from projections.catalogue import CONDUCTOR, LOOP, SELF, SERVER
from projections.catalogue.reference import LOOP_PREFIX, SETTINGS, reference_tables
from projections.config import ProjectionConfig
from projections.exposition.text import help_text
from projections.metrics.families import GaugeFamily
from projections.metrics.summary import QUANTILES
from projections.ralph.rollup import LoopRollup

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
_HEADING = re.compile(r"^(#{1,6}) +(.*?) *$")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of any level."""
    lines: list[str] | None = None
    for line in text.splitlines(keepends=True):
        match = _HEADING.match(line)
        if match:
            if lines is not None:
                break
            if match.group(2) == heading:
                lines = []
        elif lines is not None:
            lines.append(line)
    assert lines is not None, f"no heading {heading!r} in {DOC.name}"
    return "".join(lines)


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table: rows of cells, the separator row left out."""
    found: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


@pytest.mark.parametrize("heading", list(reference_tables()))
def test_each_table_is_the_catalogue_s(doc: str, heading: str) -> None:
    assert reference_tables()[heading] in section(doc, heading)


def test_the_doc_lists_every_family_once_and_no_other(doc: str) -> None:
    listed = [
        row[0].strip("`") for table in tables(doc) if table[0][0] == "name" for row in table[1:]
    ]
    declared = [s.name for s in (*CONDUCTOR, *SELF, *SERVER)]
    declared += [f"{LOOP_PREFIX}_{row.suffix}" for row in LOOP]
    assert sorted(listed) == sorted(declared)


def test_every_setting_is_described() -> None:
    assert list(SETTINGS) == list(ProjectionConfig.__struct_fields__)


def _fields(cls: Any, prefix: str = "") -> list[str]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    out: list[str] = []
    for field in info.fields:
        inner = field.type
        if isinstance(inner, msgspec.inspect.StructType):
            out += _fields(inner.cls, f"{prefix}{field.name}.")
        else:
            out.append(prefix + field.name)
    return out


def test_the_rollup_table_has_every_field_and_no_other(doc: str) -> None:
    (table,) = tables(section(doc, "Loop roll-ups (JSON)"))
    assert table[0] == ["field", "meaning"]
    assert [row[0].strip("`") for row in table[1:]] == _fields(LoopRollup)
    assert all(row[1] for row in table[1:])


def test_the_notes_on_metric_events_are_the_code_s(doc: str) -> None:
    notes = section(doc, "Families from `metric` events")
    generated = help_text(GaugeFamily("NAME", ""))
    assert f"`{generated}`" in notes
    assert ", ".join(str(q) for q in QUANTILES[:-1]) + f" and {QUANTILES[-1]}" in notes
    defaults = ProjectionConfig()
    assert " ".join(f"{b:g}" for b in defaults.default_buckets) in notes
    assert f"({defaults.summary_window_s:g} s by default)" in notes
    assert f"`{defaults.loop_prefix}`" in section(doc, "Ralph-loop families")


def test_no_link_leaves_the_repository(doc: str) -> None:
    assert re.findall(r"\]\((?:[a-z]+:|//)", doc) == []
