"""User rules: event types and OTLP log event names into families; errors counted; snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from bus.events import MetricUpdate, OtelLog, OtelMetric, RunFinished
from bus.user_types import EventTypeDecl, FieldDecl
from bus.validate import events_from_jsonl
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.rules import Rule
from projections.snapshot import SnapshotError, decode_snapshot, encode_snapshot

ROOT = Path(__file__).resolve().parents[3]
CLAUDE_RULES = ROOT / "docs" / "claude-code-rules.toml"


class _Rules(msgspec.Struct):
    rules: tuple[Rule, ...]


def claude_config() -> ProjectionConfig:
    rules = msgspec.toml.decode(CLAUDE_RULES.read_bytes(), type=_Rules).rules
    return ProjectionConfig(rules=rules)


def fold(config: ProjectionConfig, *events: Any) -> Projection:
    p = Projection(config)
    p.fold_events(list(events))
    return p


def family(p: Projection, name: str) -> Any:
    return next(f for f in p.families() if f.name == name)


def api_request(model: str, **attrs: Any) -> OtelLog:
    attributes = {"event.name": "claude_code.api_request", "model": model, **attrs}
    return OtelLog(event_name="claude_code.api_request", attributes=attributes)


def test_claude_code_rules_count_requests_tokens_cost_and_durations() -> None:
    p = fold(
        claude_config(),
        api_request(
            "opus",
            input_tokens="100",
            output_tokens=20,
            cache_read_tokens="5",
            cache_creation_tokens="0",
            cost_usd="0.5",
            duration_ms="1500",
        ),
        api_request(
            "opus",
            input_tokens=1,
            output_tokens=2,
            cache_read_tokens=3,
            cache_creation_tokens=4,
            cost_usd=0.25,
            duration_ms=400,
        ),
        OtelLog(
            event_name="claude_code.tool_result",
            attributes={"tool_name": "Bash", "success": "true", "duration_ms": "12"},
        ),
        OtelLog(
            event_name="claude_code.tool_result",
            attributes={"tool_name": "Edit", "success": "false"},
        ),
        OtelLog(
            event_name="claude_code.api_error",
            attributes={"model": "opus", "status_code": "529", "error": "overloaded"},
        ),
        OtelLog(event_name="claude_code.user_prompt", attributes={"prompt_length": "5"}),
    )
    assert family(p, "claude_code_api_requests_total").values == {("opus",): 2}
    assert family(p, "claude_code_api_tokens_total").values == {
        ("opus", "input"): 101,
        ("opus", "output"): 22,
        ("opus", "cache_read"): 8,
        ("opus", "cache_creation"): 4,
    }
    assert family(p, "claude_code_api_cost_usd_total").values == {("opus",): 0.75}
    duration = family(p, "claude_code_api_request_duration_seconds").series[("opus",)]
    assert (duration.count, duration.sum) == (2, pytest.approx(1.9))
    assert family(p, "claude_code_tool_results_total").values == {
        ("true", "Bash"): 1,
        ("false", "Edit"): 1,
    }
    assert family(p, "claude_code_api_errors_total").values == {("opus", "529"): 1}
    errors = family(p, "tally_rule_errors_total").values
    assert set(errors.values()) == {0}
    assert len(errors) == len(claude_config().rules)


def test_a_value_that_is_not_a_number_is_a_rule_error() -> None:
    p = fold(claude_config(), api_request("opus", input_tokens="many", cost_usd="0.1"))
    errors = family(p, "tally_rule_errors_total").values
    assert errors[("claude_code_input_tokens",)] == 1  # missing or not a number
    assert errors[("claude_code_output_tokens",)] == 1
    assert family(p, "claude_code_api_cost_usd_total").values == {("opus",): 0.1}


def test_rules_on_event_types_run_beside_the_catalogue_fold() -> None:
    rule = Rule(
        name="exit_codes",
        on="run_finished",
        family="runs_by_exit_code_total",
        kind="counter",
        labels={"code": "exit_code", "agent": "agent"},
    )
    p = fold(
        ProjectionConfig(rules=(rule,)),
        RunFinished(run_id="r", project="p", agent="claude", exit_code=3, ts=1.0),
    )
    assert family(p, "runs_by_exit_code_total").values == {("claude", "3"): 1}
    assert family(p, "conductor_completed_runs_total").values == {(): 1}


def test_rule_families_render_before_any_event_and_keep_their_name() -> None:
    p = fold(
        claude_config(),
        MetricUpdate(name="claude_code_api_requests_total", kind="counter", value=1),
        OtelMetric(name="claude_code.api_errors", kind="sum", monotonic=True, value=1),
    )
    assert family(p, "claude_code_api_requests_total").values == {}
    assert family(p, "claude_code_api_errors_total").values == {}
    assert p.rejected["name_conflict"] == 2


def test_a_snapshot_holds_the_rules_state_and_another_rule_set_refuses_it() -> None:
    config = claude_config()
    p = fold(config, api_request("opus", input_tokens=1, output_tokens=1, cost_usd="x"))
    again, _ = decode_snapshot(encode_snapshot(p), config)
    assert again.export_state() == p.export_state()
    fewer = ProjectionConfig(rules=config.rules[:-1])
    with pytest.raises(SnapshotError, match="another projection config"):
        decode_snapshot(encode_snapshot(p), fewer)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"on": "api_request"}, "rules cannot match api_request"),
        ({"family": "tally_x"}, "is a catalogue name"),
        ({"family": "ralph_loop_x"}, "is a catalogue name"),
        ({"family": "bad name"}, "is not a metric name"),
        ({"labels": {"__x": "y"}}, "is not a label name"),
        ({"kind": "histogram", "const_labels": {"le": "1"}}, "label le"),
        ({"kind": "histogram", "buckets": (2.0, 1.0)}, "ascend"),
    ],
)
def test_bad_rules_are_refused(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"name": "r", "on": "x.y", "family": "f_total", "kind": "counter"}
    with pytest.raises(ValueError, match=message):
        ProjectionConfig(rules=(Rule(**{**base, **fields}),))


def test_rules_feeding_one_family_must_agree() -> None:
    a = Rule(name="a", on="x", family="f_total", kind="counter", labels={"k": "k"})
    b = Rule(name="b", on="y", family="f_total", kind="counter")
    with pytest.raises(ValueError, match="another kind, labels or buckets"):
        ProjectionConfig(rules=(a, b))
    with pytest.raises(ValueError, match="same name"):
        ProjectionConfig(rules=(a, a))


DEPLOY = EventTypeDecl(
    name="deploy_finished",
    fields=(
        FieldDecl(name="service", type="str"),
        FieldDecl(name="duration_s", type="float", required=False),
    ),
)


def test_a_rule_reads_a_declared_type_and_its_counts_are_snapshotted() -> None:
    rules = (
        Rule(name="deploys", on="deploy_finished", family="deploys_total", kind="counter",
             labels={"service": "service"}),
        Rule(name="deploy_time", on="deploy_finished", family="deploy_seconds",
             kind="histogram", value="duration_s", buckets=(1.0, 10.0)),
    )  # fmt: skip
    config = ProjectionConfig(rules=rules, event_types=(DEPLOY,))
    events = events_from_jsonl(
        b'{"type":"deploy_finished","service":"api","duration_s":3,"ts":1}\n'
        b'{"type":"deploy_finished","service":"api","ts":2}\n'
        b'{"type":"deploy_finished","service":"web","duration_s":0.5,"ts":3}\n',
        schema=config.schema,
    )
    p = fold(config, *events)
    assert family(p, "deploys_total").values == {("api",): 2.0, ("web",): 1.0}
    assert family(p, "deploy_seconds").series[()].counts == [1, 1, 0]
    assert p.events_by_type["deploy_finished"] == 3
    assert family(p, "tally_rule_errors_total").values[("deploy_time",)] == 1  # no duration

    again, _ = decode_snapshot(encode_snapshot(p), config)
    assert again.export_state() == p.export_state()
    undeclared = ProjectionConfig(rules=rules)  # the same rules, nothing declared
    assert undeclared.fingerprint() != config.fingerprint()
    with pytest.raises(SnapshotError):
        decode_snapshot(encode_snapshot(p), undeclared)
