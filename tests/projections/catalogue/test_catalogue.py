"""The catalogue of DESIGN.md (names, kinds, labels, buckets, HELP) and its configuration."""

from __future__ import annotations

import shutil
import subprocess

import msgspec
import pytest

from bus.events import MetricUpdate
from projections.catalogue import CONDUCTOR, SELF, SERVER, Catalogue, build_family, loop_specs
from projections.config import ProjectionConfig
from projections.exposition.openmetrics import render_openmetrics
from projections.exposition.prometheus import render_prometheus
from projections.fold import Projection
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from tests.support.workload import mixed_events

#: DESIGN.md's metric catalogue: name -> (type, labels, buckets).
DESIGN = {
    "conductor_active_runs_total": ("gauge", (), ()),
    "conductor_queued_runs_total": ("gauge", (), ()),
    "conductor_completed_runs_total": ("counter", (), ()),
    "conductor_failed_runs_total": ("counter", (), ()),
    "conductor_messagebus_appends_total": ("counter", (), ()),
    "conductor_api_requests_total": ("counter", ("method", "status"), ()),
    "conductor_agent_runs_total": ("counter", ("agent_type",), ()),
    "conductor_agent_fallbacks_total": ("counter", ("from_type", "to_type"), ()),
    "conductor_run_duration_seconds": (
        "histogram",
        ("agent", "status"),
        (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
    ),
    "P_iterations_total": ("counter", ("loop", "result"), ()),
    "P_iteration_duration_seconds": (
        "histogram",
        ("loop",),
        (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    ),
    "P_iterations_with_progress_total": ("counter", ("loop",), ()),
    "P_no_progress_streak": ("gauge", ("loop",), ()),
    "P_progress_score": ("gauge", ("loop",), ()),
    "P_progress_velocity": ("gauge", ("loop",), ()),
    "P_files_changed_total": ("counter", ("loop",), ()),
    "P_sessions_created_total": ("counter", ("loop",), ()),
    "P_active_sessions": ("gauge", ("loop",), ()),
    "P_session_duration_seconds": (
        "histogram",
        ("loop",),
        (60, 300, 600, 1800, 3600, 7200, 14400),
    ),
    "P_context_reboots_total": ("counter", ("loop",), ()),
    "P_context_usage_ratio": ("gauge", ("loop",), ()),
    "P_context_at_reboot_ratio": (
        "histogram",
        ("loop",),
        (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1),
    ),
    "P_tests": ("gauge", ("loop", "state"), ()),
    "P_flaky_tests": ("gauge", ("loop",), ()),
    "P_test_pass_ratio": ("gauge", ("loop",), ()),
    "P_test_failure_streak": ("gauge", ("loop",), ()),
    "P_resident_memory_bytes": ("gauge", ("loop",), ()),
    "P_cpu_usage_ratio": ("gauge", ("loop",), ()),
    "P_active_loops": ("gauge", (), ()),
}

SELF_METRICS = {
    "tally_events_folded_total": ("counter", ("type",)),
    "tally_corrupt_lines_total": ("counter", ()),
    "tally_unknown_events_total": ("counter", ()),
    "tally_rejected_events_total": ("counter", ("reason",)),
    "tally_folded_offset_bytes": ("gauge", ()),
    "tally_series_overflow_total": ("counter", ("family",)),
    "tally_rule_errors_total": ("counter", ("rule",)),  # planned in the design, now here
    "tally_stale_series": ("gauge", ("family",)),  # series hidden by series_ttl_s
}


@pytest.mark.parametrize("prefix", ["ralph_loop", "agent"])
def test_the_catalogue_is_design_md(prefix: str) -> None:
    config = ProjectionConfig(loop_prefix=prefix)
    specs = {
        s.name: s for s in (*CONDUCTOR, *loop_specs(prefix, config.iteration_buckets).values())
    }
    want = {name.replace("P_", f"{prefix}_", 1): spec for name, spec in DESIGN.items()}
    assert set(specs) == set(want)
    for name, (kind, labels, buckets) in want.items():
        spec = specs[name]
        assert (spec.kind, spec.label_names, spec.buckets) == (kind, labels, buckets), name
        assert spec.help and spec.help.endswith("."), name
    assert {s.name: (s.kind, s.label_names) for s in SELF} == SELF_METRICS
    assert all(s.help for s in SELF)


def test_a_projection_renders_every_family_with_its_kind_and_labels() -> None:
    families = {f.name: f for f in Projection().families()}
    catalogue = Catalogue(ProjectionConfig())
    assert set(families) == set(catalogue.by_name)
    for name, spec in catalogue.by_name.items():
        family = families[name]
        assert (family.kind, family.label_names, family.help) == (
            spec.kind,
            spec.label_names,
            spec.help,
        )
        if isinstance(family, HistogramFamily):
            assert family.bounds == spec.buckets


def test_unlabelled_counters_and_gauges_exist_from_the_start() -> None:
    text = render_prometheus(Projection().families()).decode()
    for name in (
        "conductor_active_runs_total",
        "conductor_queued_runs_total",
        "conductor_completed_runs_total",
        "conductor_failed_runs_total",
        "conductor_messagebus_appends_total",
        "ralph_loop_active_loops",
        "tally_corrupt_lines_total",
        "tally_unknown_events_total",
        "tally_folded_offset_bytes",
    ):
        assert f"\n{name} 0\n" in text, name
    assert 'tally_events_folded_total{type="run_queued"} 0' in text
    assert 'tally_rejected_events_total{reason="kind_conflict"} 0' in text


def test_build_family_makes_each_kind() -> None:
    kinds = {type(build_family(spec)) for spec in CONDUCTOR}
    assert kinds == {CounterFamily, GaugeFamily, HistogramFamily}


def test_server_families_are_declared_once_and_reserved() -> None:
    """The server's own families: built from their specs, no name twice, all reserved."""
    catalogue = Catalogue(ProjectionConfig())
    names = [s.name for s in SERVER]
    assert len(set(names)) == len(names)
    assert not set(names) & set(catalogue.by_name)
    for spec in SERVER:
        family = build_family(spec)
        assert (family.name, family.help, family.label_names) == (
            spec.name,
            spec.help,
            spec.label_names,
        )
        assert spec.help.endswith(".")
        assert catalogue.is_reserved(spec.name)


def test_reserved_names() -> None:
    catalogue = Catalogue(ProjectionConfig(loop_prefix="agent"))
    for name in ("conductor_x", "tally_x", "agent_x", "agent_iterations_total"):
        assert catalogue.is_reserved(name)
    for name in ("app_total", "ralph_loop_x", "agents_total", "tallyx"):
        assert not catalogue.is_reserved(name)


#: ``metric`` events of every kind with no help (the workload's own help-less ones aside).
HELPLESS: tuple[MetricUpdate, ...] = (
    MetricUpdate(ts=1.0, name="app_helpless_total", kind="counter", value=1, labels={"k": "a"}),
    MetricUpdate(ts=1.0, name="app_helpless_level", kind="gauge", value=2.0),
    MetricUpdate(ts=1.0, name="app_helpless_seconds", kind="histogram", value=0.3),
    MetricUpdate(ts=1.0, name="app_helpless_bytes", kind="summary", value=10.0),
)


def helpless_log() -> Projection:
    projection = Projection()
    projection.fold_events([*HELPLESS, *mixed_events(3_000)])
    return projection


def test_every_family_has_help_in_both_text_formats() -> None:
    families = helpless_log().families()
    assert {f.name for f in families if not f.help} >= {e.name for e in HELPLESS}
    for text in (render_prometheus(families), render_openmetrics(families)):
        lines = text.decode().splitlines()
        typed = [line.split(" ")[2] for line in lines if line.startswith("# TYPE ")]
        helped = {line.split(" ")[2]: line for line in lines if line.startswith("# HELP ")}
        assert set(typed) == set(helped)
        assert all(len(line.split(" ", 3)[3]) > 0 for line in helped.values())
    text = render_prometheus(families).decode()
    assert (
        "# HELP app_helpless_bytes app_helpless_bytes: from metric events, no help given.\n" in text
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_lints_only_the_two_gauges_named_total() -> None:
    """Every family, ``metric`` ones without help included."""
    text = render_prometheus(helpless_log().families())
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, check=False
    )
    findings = {line.split(" ", 1)[0] for line in result.stderr.decode().splitlines() if line}
    findings |= {line.split(" ", 1)[0] for line in result.stdout.decode().splitlines() if line}
    assert findings == {"conductor_active_runs_total", "conductor_queued_runs_total"}


# -- configuration ---------------------------------------------------------------------


def test_config_defaults() -> None:
    config = ProjectionConfig()
    assert config.loop_prefix == "ralph_loop"
    assert config.iteration_buckets == (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
    assert config.default_buckets == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    assert (config.max_series_per_family, config.summary_window_s) == (10_000, 600)
    assert config.summary_age_buckets == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loop_prefix": "9loop"}, "loop_prefix"),
        ({"loop_prefix": "loop-x"}, "loop_prefix"),
        ({"loop_prefix": "loop_"}, "loop_prefix"),
        ({"loop_prefix": ""}, "loop_prefix"),
        ({"loop_prefix": "tally"}, "loop_prefix"),
        ({"loop_prefix": "conductor_x"}, "loop_prefix"),
        ({"iteration_buckets": (1.0, 0.5)}, "iteration_buckets: bounds must ascend"),
        ({"iteration_buckets": (1.0, 1.0)}, "iteration_buckets: bounds must ascend"),
        ({"iteration_buckets": ()}, "iteration_buckets"),
        ({"default_buckets": (1.0, float("inf"))}, "default_buckets"),
        ({"max_series_per_family": 0}, "max_series_per_family"),
        ({"summary_window_s": 0.0}, "summary_window_s"),
        ({"summary_age_buckets": 0}, "summary_age_buckets"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProjectionConfig(**kwargs)  # type: ignore[arg-type]


def test_config_decodes_from_toml_and_names_bad_fields() -> None:
    config = msgspec.toml.decode(
        b'loop_prefix = "agent"\niteration_buckets = [1, 2, 3]\n', type=ProjectionConfig
    )
    assert config.loop_prefix == "agent"
    assert config.iteration_buckets == (1.0, 2.0, 3.0)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.toml.decode(b"loop_prefx = 'x'\n", type=ProjectionConfig)
    with pytest.raises(msgspec.ValidationError, match="default_buckets"):
        msgspec.toml.decode(b"default_buckets = [2, 1]\n", type=ProjectionConfig)


def test_fingerprint_changes_with_any_setting() -> None:
    base = ProjectionConfig()
    assert base.fingerprint() == ProjectionConfig().fingerprint()
    others = [
        ProjectionConfig(loop_prefix="agent"),
        ProjectionConfig(iteration_buckets=(1.0, 2.0)),
        ProjectionConfig(max_series_per_family=5),
        ProjectionConfig(summary_window_s=60),
    ]
    assert len({c.fingerprint() for c in [base, *others]}) == 5
