"""``contrib/``: the Grafana dashboard and the Prometheus rules against the catalogue.

Every PromQL expression in ``contrib/grafana/tally.json`` (panel targets and template
variables) and ``contrib/prometheus/rules.yml`` names only metrics the catalogue
declares (under the default loop prefix, ``ralph_loop``), so renaming a metric breaks
this test rather than the dashboard. The names come from a small tokenizer:
identifiers outside strings, label matchers, ranges and grouping clauses, not called
as functions and not PromQL keywords. Names with a colon are recording rules and must
be recorded in ``rules.yml``. With promtool installed, the rules pass
``promtool check rules`` and their unit tests (``rules_test.yml``), and the
dashboard's expressions parse.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from projections.catalogue import Catalogue
from projections.config import ProjectionConfig

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "contrib" / "grafana" / "tally.json"
RULES = ROOT / "contrib" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "contrib" / "prometheus" / "rules_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

# -- the tokenizer ----------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACKETS = re.compile(r"\[[^\]]*\]")
_BRACES = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
        "group_right", "bool", "offset", "atan2", "inf", "nan",
    }
)  # fmt: skip
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*(?:,\s*\w+\s*)?\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names an expression selects."""
    text = _STRING.sub(" ", expr)
    text = _BRACKETS.sub(" ", text)
    text = _BRACES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group()
        rest = text[match.end() :].lstrip()
        if name.lower() in _KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


def catalogue_names() -> set[str]:
    """Every sample name the catalogue renders under the default configuration."""
    catalogue = Catalogue(ProjectionConfig())
    names = set()
    for spec in (*catalogue.by_name.values(), *catalogue.server.values()):
        names.add(spec.name)
        if spec.kind == "histogram":
            names.update(f"{spec.name}{s}" for s in ("_bucket", "_sum", "_count"))
        elif spec.kind == "summary":
            names.update(f"{spec.name}{s}" for s in ("_sum", "_count"))
        elif spec.kind == "counter" and not spec.name.endswith("_total"):
            names.add(f"{spec.name}_total")
    return names


def unknown_names(exprs: dict[str, str], recorded: set[str]) -> dict[str, set[str]]:
    """Per expression (by where it is), the names neither catalogued nor recorded."""
    known = catalogue_names()
    found = {}
    for where, expr in exprs.items():
        names = metric_names(expr)
        bad = {n for n in names if (n not in recorded if ":" in n else n not in known)}
        if bad:
            found[where] = bad
    return found


# -- the expressions --------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def rule_exprs() -> dict[str, str]:
    return {f"rules.yml {r.get('record') or r['alert']}": r["expr"] for r in rules()}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> dict[str, str]:
    exprs = {}
    dash = dashboard()
    for panel in _panels(dash["panels"]):
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dash["templating"]["list"]:
        query = var["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {var['name']}: not a label_values() query: {query}"
        exprs[f"variable {var['name']}"] = match.group(1)
    return exprs


# -- the tests ----------------------------------------------------------------------


def test_tokenizer_finds_metrics_not_functions_labels_or_keywords():
    expr = (
        'histogram_quantile(0.9, sum by (le, loop) (rate(ralph_loop_x_bucket{loop=~"$loop",'
        ' le!="+Inf"}[$__rate_interval] offset 1h))) > on (job) group_left (agent)'
        " up and bool 1e6 unless job:foo:rate5m"
    )
    assert metric_names(expr) == {"ralph_loop_x_bucket", "up", "job:foo:rate5m"}


def test_a_misspelled_or_renamed_metric_is_caught():
    exprs = {
        "typo": "histogram_quantile(0.5, rate(conductor_run_duraton_seconds_bucket[5m]))",
        "suffix": "rate(tally_sse_subscribers_total[5m])",
        "prefix": "ralph_loops_no_progress_streak > 3",
        "recording": "tally:not_recorded > 0",
        "fine": "rate(conductor_run_duration_seconds_count[5m]) + conductor_active_runs_total",
    }
    assert unknown_names(exprs, recorded_names()) == {
        "typo": {"conductor_run_duraton_seconds_bucket"},
        "suffix": {"tally_sse_subscribers_total"},
        "prefix": {"ralph_loops_no_progress_streak"},
        "recording": {"tally:not_recorded"},
    }


def test_dashboard_names_only_catalogue_metrics():
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    assert unknown_names(exprs, set()) == {}


def test_rules_name_only_catalogue_metrics_and_recorded_rules():
    exprs = rule_exprs()
    assert unknown_names(exprs, recorded_names()) == {}


def test_dashboard_is_importable():
    dash = dashboard()
    assert dash["schemaVersion"] >= 39
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert {v["name"] for v in dash["templating"]["list"]} == {"job", "instance", "loop"}
    ids = [p["id"] for p in _panels(dash["panels"])]
    assert len(ids) == len(set(ids))
    for panel in _panels(dash["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_the_duration_panels_ask_for_the_exemplars_tally_emits():
    catalogue = Catalogue(ProjectionConfig())
    families = {spec.name for spec in catalogue.by_name.values() if spec.exemplar}
    asked = {
        name
        for panel in _panels(dashboard()["panels"])
        for target in panel.get("targets", [])
        if target.get("exemplar")
        for name in metric_names(target["expr"])
    }
    assert {name.removesuffix("_bucket") for name in asked} == families


def test_rules_alert_on_each_condition():
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts == {
        "TallyRunsFailingHigh",
        "TallyRunsStalled",
        "TallyLoopNoProgress",
        "TallyLoopContextHigh",
        "TallyLoopTestsFailing",
        "TallyFoldLagGrowing",
        "TallyCorruptLines",
        "TallySeriesOverflow",
    }
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert tested == alerts


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_promtool
def test_promtool_check_rules():
    result = _promtool("check", "rules", RULES.relative_to(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_test_rules():
    result = _promtool("test", "rules", RULES_TEST.relative_to(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_dashboard_expressions_parse(tmp_path: Path):
    """Each panel expression, its Grafana variables replaced, as a recording rule."""
    records = []
    for i, expr in enumerate(dashboard_exprs().values()):
        records.append(
            {"record": f"dashboard:expr_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        )
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = _promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
