"""Per-loop state, the loop families rendered from it, and the per-loop roll-up.

Rule: every number here is computed from folded events (never a placeholder or
the wall clock); an undefined value (an average of nothing) is ``None``, never NaN.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import msgspec

from projections.catalogue import LOOP_SUFFIXES
from projections.metrics.families import (
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    HistogramSeries,
)

__all__ = [
    "LoopRollup",
    "LoopState",
    "LoopStateRecord",
    "ProgressRollup",
    "QuantilesRollup",
    "SessionRollup",
    "TestsRollup",
    "loop_families",
    "rollup",
]

#: Progress scores averaged by ``P_progress_velocity``.
VELOCITY_WINDOW: Final = 10

#: One presence bit per loop family: a loop's series of that family is rendered
#: iff an event fed the family since the loop appeared or the family was reset.
BIT: Final[dict[str, int]] = {suffix: 1 << i for i, suffix in enumerate(LOOP_SUFFIXES)}
ITERATION_BITS: Final = (
    BIT["iterations_total"]
    | BIT["iteration_duration_seconds"]
    | BIT["iterations_with_progress_total"]
    | BIT["no_progress_streak"]
    | BIT["files_changed_total"]
)
SCORE_BITS: Final = BIT["progress_score"] | BIT["progress_velocity"]
SESSION_STARTED_BITS: Final = BIT["sessions_created_total"] | BIT["active_sessions"]
SESSION_ENDED_BITS: Final = BIT["active_sessions"]
SESSION_DURATION_BIT: Final = BIT["session_duration_seconds"]
USAGE_BITS: Final = BIT["context_usage_ratio"]
REBOOT_BITS: Final = BIT["context_reboots_total"] | BIT["context_at_reboot_ratio"]
TESTS_BITS: Final = (
    BIT["tests"] | BIT["flaky_tests"] | BIT["test_pass_ratio"] | BIT["test_failure_streak"]
)
RESOURCE_BITS: Final = BIT["resident_memory_bytes"] | BIT["cpu_usage_ratio"]


class LoopStateRecord(msgspec.Struct, array_like=True, kw_only=True):
    """``LoopState`` as a serialisable record (snapshots); field for field."""

    seen: int
    iterations_ok: int
    iterations_failed: int
    duration_counts: list[int]
    duration_sum: float
    with_progress: int
    no_progress_streak: int
    score: float | None
    scores: list[float]
    files_changed: int
    sessions_created: int
    open_sessions: dict[str, float]
    session_counts: list[int]
    session_sum: float
    reboots: int
    reboot_counts: list[int]
    reboot_ratio_sum: float
    reboot_percent_sum: float
    context_percent: float | None
    tests_passed: int
    tests_failed: int
    tests_total: int
    tests_flaky: int
    test_failure_streak: int
    rss_bytes: int
    cpu_percent: float


class LoopState:
    """Everything folded for one loop; mutated in place by the fold's loop handlers."""

    __slots__ = (*LoopStateRecord.__struct_fields__, "iterations")

    def __init__(self, duration_buckets: int, session_buckets: int, reboot_buckets: int) -> None:
        self.seen = 0
        self.iterations_ok = 0
        self.iterations_failed = 0
        self.duration_counts = [0] * (duration_buckets + 1)
        self.duration_sum = 0.0
        self.with_progress = 0
        self.no_progress_streak = 0
        self.score: float | None = None
        self.scores: deque[float] = deque(maxlen=VELOCITY_WINDOW)
        self.files_changed = 0
        self.sessions_created = 0
        self.open_sessions: dict[str, float] = {}  # session_id -> start ts
        self.session_counts = [0] * (session_buckets + 1)
        self.session_sum = 0.0
        self.reboots = 0
        self.reboot_counts = [0] * (reboot_buckets + 1)
        self.reboot_ratio_sum = 0.0
        self.reboot_percent_sum = 0.0
        self.context_percent: float | None = None
        self.tests_passed = 0
        self.tests_failed = 0
        self.tests_total = 0
        self.tests_flaky = 0
        self.test_failure_streak = 0
        self.rss_bytes = 0
        self.cpu_percent = 0.0
        #: ``iteration_completed`` events not folded in yet (``LoopFold.settle``).
        self.iterations: list[Any] = []

    def clear(self, suffix: str) -> None:
        """Forget what fed the loop family ``suffix`` (a ``metrics_reset``)."""
        self.seen &= ~BIT[suffix]
        match suffix:
            case "iterations_total":
                self.iterations_ok = self.iterations_failed = 0
            case "iteration_duration_seconds":
                self.duration_counts = [0] * len(self.duration_counts)
                self.duration_sum = 0.0
            case "iterations_with_progress_total":
                self.with_progress = 0
            case "no_progress_streak":
                self.no_progress_streak = 0
            case "progress_score":
                self.score = None
            case "progress_velocity":
                self.scores.clear()
            case "files_changed_total":
                self.files_changed = 0
            case "sessions_created_total":
                self.sessions_created = 0
            case "active_sessions":
                self.open_sessions.clear()
            case "session_duration_seconds":
                self.session_counts = [0] * len(self.session_counts)
                self.session_sum = 0.0
            case "context_reboots_total":
                self.reboots = 0
            case "context_usage_ratio":
                self.context_percent = None
            case "context_at_reboot_ratio":
                self.reboot_counts = [0] * len(self.reboot_counts)
                self.reboot_ratio_sum = self.reboot_percent_sum = 0.0
            case "tests":
                self.tests_passed = self.tests_failed = self.tests_total = 0
            case "flaky_tests":
                self.tests_flaky = 0
            case "test_pass_ratio":
                pass  # derived from the last report; only its presence bit is cleared
            case "test_failure_streak":
                self.test_failure_streak = 0
            case "resident_memory_bytes":
                self.rss_bytes = 0
            case "cpu_usage_ratio":
                self.cpu_percent = 0.0

    def to_record(self) -> LoopStateRecord:
        fields: dict[str, Any] = {}
        for name in LoopStateRecord.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, deque | list):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            fields[name] = value
        return LoopStateRecord(**fields)

    @classmethod
    def from_record(cls, record: LoopStateRecord) -> LoopState:
        state = cls.__new__(cls)
        for name in LoopStateRecord.__struct_fields__:
            setattr(state, name, getattr(record, name))
        state.scores = deque(record.scores, maxlen=VELOCITY_WINDOW)
        state.iterations = []
        return state


# -- the loop families, built from the states at render time -----------------


def _histogram(counts: list[int], total: float) -> HistogramSeries:
    series = HistogramSeries(len(counts) - 1)
    series.counts = list(counts)
    series.sum = total
    series.count = sum(counts)
    return series


def loop_families(
    families: dict[str, Family], loops: dict[str, LoopState], active_loops: int
) -> None:
    """Refill the loop ``families`` (keyed by suffix, built from ``catalogue.loop_specs``).

    Each family gets fresh series dicts built from ``loops``. The cardinality
    guard acted when loops were admitted (see ``fold``), so series are filled
    in directly, without counting overflow again.
    """
    val: dict[str, dict[tuple[str, ...], float]] = {}
    hist: dict[str, dict[tuple[str, ...], HistogramSeries]] = {}
    for suffix, family in families.items():
        if isinstance(family, HistogramFamily):
            family.series = hist[suffix] = {}
        elif isinstance(family, CounterFamily | GaugeFamily):
            family.values = val[suffix] = {}
    for loop_id, s in loops.items():
        key = (loop_id,)
        seen = s.seen
        if seen & BIT["iterations_total"]:
            val["iterations_total"][(loop_id, "success")] = float(s.iterations_ok)
            val["iterations_total"][(loop_id, "failure")] = float(s.iterations_failed)
        if seen & BIT["iteration_duration_seconds"]:
            hist["iteration_duration_seconds"][key] = _histogram(s.duration_counts, s.duration_sum)
        if seen & BIT["iterations_with_progress_total"]:
            val["iterations_with_progress_total"][key] = float(s.with_progress)
        if seen & BIT["no_progress_streak"]:
            val["no_progress_streak"][key] = float(s.no_progress_streak)
        if seen & BIT["progress_score"] and s.score is not None:
            val["progress_score"][key] = s.score
        if seen & BIT["progress_velocity"] and s.scores:
            val["progress_velocity"][key] = sum(s.scores) / len(s.scores)
        if seen & BIT["files_changed_total"]:
            val["files_changed_total"][key] = float(s.files_changed)
        if seen & BIT["sessions_created_total"]:
            val["sessions_created_total"][key] = float(s.sessions_created)
        if seen & BIT["active_sessions"]:
            val["active_sessions"][key] = float(len(s.open_sessions))
        if seen & BIT["session_duration_seconds"]:
            hist["session_duration_seconds"][key] = _histogram(s.session_counts, s.session_sum)
        if seen & BIT["context_reboots_total"]:
            val["context_reboots_total"][key] = float(s.reboots)
        if seen & BIT["context_usage_ratio"] and s.context_percent is not None:
            val["context_usage_ratio"][key] = s.context_percent / 100.0
        if seen & BIT["context_at_reboot_ratio"]:
            hist["context_at_reboot_ratio"][key] = _histogram(s.reboot_counts, s.reboot_ratio_sum)
        if seen & BIT["tests"]:
            val["tests"][(loop_id, "passing")] = float(s.tests_passed)
            val["tests"][(loop_id, "failing")] = float(s.tests_failed)
        if seen & BIT["flaky_tests"]:
            val["flaky_tests"][key] = float(s.tests_flaky)
        if seen & BIT["test_pass_ratio"] and s.tests_total > 0:
            val["test_pass_ratio"][key] = s.tests_passed / s.tests_total
        if seen & BIT["test_failure_streak"]:
            val["test_failure_streak"][key] = float(s.test_failure_streak)
        if seen & BIT["resident_memory_bytes"]:
            val["resident_memory_bytes"][key] = float(s.rss_bytes)
        if seen & BIT["cpu_usage_ratio"]:
            val["cpu_usage_ratio"][key] = s.cpu_percent / 100.0
    val["active_loops"][()] = float(active_loops)


# -- the roll-up (JSON export) ------------------------------------------------


class TestsRollup(msgspec.Struct, kw_only=True):
    """The last test report; ``pass_rate`` is passed/total (0-1), null while total is 0."""

    __test__ = False  # not a pytest test class

    total_tests: int
    passing_tests: int
    failing_tests: int
    pass_rate: float | None
    failure_streak: int
    flaky_tests: int


class ProgressRollup(msgspec.Struct, kw_only=True):
    """``progress_rate`` is iterations with progress over all iterations (0-1)."""

    iterations_with_progress: int
    progress_rate: float | None
    no_progress_streak: int
    velocity: float | None
    files_changed: int


class SessionRollup(msgspec.Struct, kw_only=True):
    """``avg_context_at_reboot`` is in percent (0-100), like ``context_usage_percent``."""

    sessions_created: int
    active_sessions: int
    avg_session_duration_s: float | None
    context_reboots: int
    avg_context_at_reboot: float | None


class QuantilesRollup(msgspec.Struct, kw_only=True):
    """Iteration duration quantiles over the summary window (event time); null when empty."""

    p50: float | None
    p90: float | None
    p99: float | None


class LoopRollup(msgspec.Struct, kw_only=True):
    """One loop's roll-up with the seed's field names (DESIGN.md, JSON export)."""

    total_iterations: int
    successful_iterations: int
    failed_iterations: int
    total_reboots: int
    total_execution_time_s: float
    avg_iteration_duration_s: float | None
    context_usage_percent: float | None
    tests: TestsRollup
    progress: ProgressRollup
    session: SessionRollup
    iteration_duration_quantiles_s: QuantilesRollup


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def rollup(state: LoopState, quantiles: QuantilesRollup) -> LoopRollup:
    """The roll-up of one loop; ``quantiles`` come from the fold's per-loop sketch."""
    s = state
    iterations = s.iterations_ok + s.iterations_failed
    return LoopRollup(
        total_iterations=iterations,
        successful_iterations=s.iterations_ok,
        failed_iterations=s.iterations_failed,
        total_reboots=s.reboots,
        total_execution_time_s=s.duration_sum,
        avg_iteration_duration_s=_ratio(s.duration_sum, sum(s.duration_counts)),
        context_usage_percent=s.context_percent,
        tests=TestsRollup(
            total_tests=s.tests_total,
            passing_tests=s.tests_passed,
            failing_tests=s.tests_failed,
            pass_rate=_ratio(s.tests_passed, s.tests_total),
            failure_streak=s.test_failure_streak,
            flaky_tests=s.tests_flaky,
        ),
        progress=ProgressRollup(
            iterations_with_progress=s.with_progress,
            progress_rate=_ratio(s.with_progress, iterations),
            no_progress_streak=s.no_progress_streak,
            velocity=_ratio(sum(s.scores), len(s.scores)),
            files_changed=s.files_changed,
        ),
        session=SessionRollup(
            sessions_created=s.sessions_created,
            active_sessions=len(s.open_sessions),
            avg_session_duration_s=_ratio(s.session_sum, sum(s.session_counts)),
            context_reboots=s.reboots,
            avg_context_at_reboot=_ratio(s.reboot_percent_sum, sum(s.reboot_counts)),
        ),
        iteration_duration_quantiles_s=quantiles,
    )
