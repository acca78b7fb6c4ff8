"""The per-loop roll-up of the JSON export, with the seed's field names.

Rule: every number here is computed from folded events (never a placeholder or
the wall clock); an undefined value (an average of nothing) is ``None``, never NaN.
"""

from __future__ import annotations

import msgspec

from projections.ralph.state import LoopState

__all__ = [
    "LoopRollup",
    "ProgressRollup",
    "QuantilesRollup",
    "SessionRollup",
    "TestsRollup",
    "rollup",
]


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
