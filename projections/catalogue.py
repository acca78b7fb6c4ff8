"""The metric catalogue of DESIGN.md: names, kinds, labels, buckets and HELP text.

Rule: this module only describes families and builds empty ones; it holds no
state and folds nothing. Names here are a contract: change them on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from projections.config import ProjectionConfig
from projections.metrics.families import (
    DEFAULT_MAX_SERIES,
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    Kind,
    OverflowCounts,
)

__all__ = [
    "CONDUCTOR",
    "REJECT_REASONS",
    "RESERVED_PREFIXES",
    "SELF",
    "Catalogue",
    "FamilySpec",
    "build_family",
    "loop_specs",
]

RUN_DURATION_BUCKETS: Final = (1.0, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
SESSION_DURATION_BUCKETS: Final = (60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
REBOOT_RATIO_BUCKETS: Final = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)

#: Why a ``metric`` event was refused (the ``reason`` label of ``tally_rejected_events_total``).
REJECT_REASONS: Final = (
    "kind_conflict",  # the family exists with another kind
    "label_mismatch",  # label names differ from the family's (fixed by its first event)
    "reserved_name",  # the name belongs to the catalogue (conductor_*, P_*, tally_*)
    "invalid_family",  # the family could not be created (e.g. label "le" on a histogram)
)
#: Prefixes of the catalogue's own families; ``P_`` (the loop prefix) is added per config.
RESERVED_PREFIXES: Final = ("conductor_", "tally_")


class FamilySpec(msgspec.Struct, frozen=True, kw_only=True):
    """One family of the catalogue: everything needed to build it empty."""

    name: str
    kind: Kind
    help: str
    label_names: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


def _spec(
    name: str, kind: Kind, help: str, *labels: str, buckets: Sequence[float] = ()
) -> FamilySpec:
    return FamilySpec(name=name, kind=kind, help=help, label_names=labels, buckets=tuple(buckets))


# -- conductor-loop (names kept exactly, see DESIGN.md) ----------------------

ACTIVE_RUNS: Final = "conductor_active_runs_total"
QUEUED_RUNS: Final = "conductor_queued_runs_total"
COMPLETED_RUNS: Final = "conductor_completed_runs_total"
FAILED_RUNS: Final = "conductor_failed_runs_total"
BUS_APPENDS: Final = "conductor_messagebus_appends_total"
API_REQUESTS: Final = "conductor_api_requests_total"
AGENT_RUNS: Final = "conductor_agent_runs_total"
AGENT_FALLBACKS: Final = "conductor_agent_fallbacks_total"
RUN_DURATION: Final = "conductor_run_duration_seconds"

CONDUCTOR: Final[tuple[FamilySpec, ...]] = (
    _spec(ACTIVE_RUNS, "gauge", "Runs started and not yet finished."),
    _spec(QUEUED_RUNS, "gauge", "Runs queued and not yet started or finished."),
    _spec(COMPLETED_RUNS, "counter", "Runs that finished with status completed."),
    _spec(FAILED_RUNS, "counter", "Runs that finished with status failed."),
    _spec(BUS_APPENDS, "counter", "Messages appended to the conductor message bus."),
    _spec(
        API_REQUESTS,
        "counter",
        "Conductor API requests by HTTP method and response status.",
        "method",
        "status",
    ),
    _spec(AGENT_RUNS, "counter", "Runs started, by agent type.", "agent_type"),
    _spec(
        AGENT_FALLBACKS,
        "counter",
        "Fallbacks from one agent type to another.",
        "from_type",
        "to_type",
    ),
    _spec(
        RUN_DURATION,
        "histogram",
        "Duration of finished runs in seconds, by agent and final status.",
        "agent",
        "status",
        buckets=RUN_DURATION_BUCKETS,
    ),
)

CONDUCTOR_NAMES: Final = tuple(spec.name for spec in CONDUCTOR)

# -- Ralph loops: suffixes after the configured prefix ``P_`` ----------------

_LOOP: Final[tuple[tuple[str, Kind, str, tuple[str, ...]], ...]] = (
    ("iterations_total", "counter", "Loop iterations completed, by result.", ("loop", "result")),
    ("iteration_duration_seconds", "histogram", "Loop iteration duration in seconds.", ("loop",)),
    (
        "iterations_with_progress_total",
        "counter",
        "Loop iterations that made progress.",
        ("loop",),
    ),
    (
        "no_progress_streak",
        "gauge",
        "Consecutive iterations without progress (0 after an iteration with progress).",
        ("loop",),
    ),
    ("progress_score", "gauge", "Last progress score reported by an iteration.", ("loop",)),
    ("progress_velocity", "gauge", "Mean of the last 10 progress scores.", ("loop",)),
    ("files_changed_total", "counter", "Files changed by loop iterations.", ("loop",)),
    ("sessions_created_total", "counter", "Agent sessions started by the loop.", ("loop",)),
    ("active_sessions", "gauge", "Agent sessions started and not yet ended.", ("loop",)),
    ("session_duration_seconds", "histogram", "Duration of ended sessions in seconds.", ("loop",)),
    ("context_reboots_total", "counter", "Context reboots (fresh context windows).", ("loop",)),
    ("context_usage_ratio", "gauge", "Last reported context window usage (0-1).", ("loop",)),
    (
        "context_at_reboot_ratio",
        "histogram",
        "Context window usage (0-1) at the moment of a reboot.",
        ("loop",),
    ),
    ("tests", "gauge", "Tests in the last report, by state.", ("loop", "state")),
    ("flaky_tests", "gauge", "Flaky tests in the last report.", ("loop",)),
    (
        "test_pass_ratio",
        "gauge",
        "Passed over total tests in the last report (absent while total is 0).",
        ("loop",),
    ),
    (
        "test_failure_streak",
        "gauge",
        "Consecutive test reports with at least one failure.",
        ("loop",),
    ),
    ("resident_memory_bytes", "gauge", "Last sampled resident memory in bytes.", ("loop",)),
    ("cpu_usage_ratio", "gauge", "Last sampled CPU usage (1 = one full core).", ("loop",)),
    ("active_loops", "gauge", "Loops started and not yet stopped.", ()),
)
#: Loop family suffixes, in catalogue order.
LOOP_SUFFIXES: Final = tuple(suffix for suffix, _, _, _ in _LOOP)


def loop_specs(prefix: str, iteration_buckets: Sequence[float]) -> dict[str, FamilySpec]:
    """The loop families under ``prefix``, keyed by suffix (``"iterations_total"`` ...)."""
    buckets = {
        "iteration_duration_seconds": tuple(iteration_buckets),
        "session_duration_seconds": SESSION_DURATION_BUCKETS,
        "context_at_reboot_ratio": REBOOT_RATIO_BUCKETS,
    }
    return {
        suffix: _spec(f"{prefix}_{suffix}", kind, help, *labels, buckets=buckets.get(suffix, ()))
        for suffix, kind, help, labels in _LOOP
    }


# -- tally's own metrics ------------------------------------------------------

EVENTS_FOLDED: Final = "tally_events_folded_total"
CORRUPT_LINES: Final = "tally_corrupt_lines_total"
UNKNOWN_EVENTS: Final = "tally_unknown_events_total"
REJECTED_EVENTS: Final = "tally_rejected_events_total"
FOLDED_OFFSET: Final = "tally_folded_offset_bytes"
SERIES_OVERFLOW: Final = "tally_series_overflow_total"

SELF: Final[tuple[FamilySpec, ...]] = (
    _spec(EVENTS_FOLDED, "counter", "Events folded into the projection, by event type.", "type"),
    _spec(
        CORRUPT_LINES,
        "counter",
        "Log lines that could not be decoded (quarantined and skipped).",
    ),
    _spec(UNKNOWN_EVENTS, "counter", "Log events of an unknown type (counted and skipped)."),
    _spec(
        REJECTED_EVENTS,
        "counter",
        "Metric events refused and not applied, by reason.",
        "reason",
    ),
    _spec(
        FOLDED_OFFSET,
        "gauge",
        "Log offset in bytes up to which events have been folded.",
    ),
    _spec(
        SERIES_OVERFLOW,
        "counter",
        "Updates sent to a family's overflow series because it reached its series limit.",
        "family",
    ),
)


class Catalogue:
    """Every catalogue family for one configuration, and the names ``metric`` events may not use."""

    __slots__ = ("by_name", "conductor", "loop", "loop_prefix", "reserved", "self_metrics")

    def __init__(self, config: ProjectionConfig) -> None:
        self.loop_prefix = config.loop_prefix
        self.conductor: dict[str, FamilySpec] = {s.name: s for s in CONDUCTOR}
        self.loop: dict[str, FamilySpec] = loop_specs(config.loop_prefix, config.iteration_buckets)
        self.self_metrics: dict[str, FamilySpec] = {s.name: s for s in SELF}
        self.by_name: dict[str, FamilySpec] = {
            **self.conductor,
            **{s.name: s for s in self.loop.values()},
            **self.self_metrics,
        }
        self.reserved: tuple[str, ...] = (*RESERVED_PREFIXES, f"{config.loop_prefix}_")

    def is_reserved(self, name: str) -> bool:
        """Whether ``name`` belongs to the catalogue, so ``metric`` events may not use it."""
        return name.startswith(self.reserved) or name in self.by_name


def build_family(
    spec: FamilySpec,
    *,
    max_series: int = DEFAULT_MAX_SERIES,
    overflow: OverflowCounts | None = None,
) -> Family:
    """An empty family for ``spec`` (summaries are not in the catalogue)."""
    match spec.kind:
        case "counter":
            return CounterFamily(
                spec.name, spec.help, spec.label_names, max_series=max_series, overflow=overflow
            )
        case "gauge":
            return GaugeFamily(
                spec.name, spec.help, spec.label_names, max_series=max_series, overflow=overflow
            )
        case "histogram":
            return HistogramFamily(
                spec.name,
                spec.help,
                spec.label_names,
                bounds=spec.buckets,
                max_series=max_series,
                overflow=overflow,
            )
        case _:
            raise ValueError(f"the catalogue has no {spec.kind} families ({spec.name})")
