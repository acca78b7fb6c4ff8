"""The Ralph-loop families: one table (``LOOP``), and everything about them derives from it.

Rule: a loop family is one row: its name suffix, kind, help, labels, buckets,
the events that feed it (with the condition, where one applies) and the
``LoopState`` fields it holds. ``projections.ralph`` derives from the rows the
presence bits, the overflow accounting of refused loops, what a reset clears
and how each family is rendered; nothing there lists the families again.
Rows are only appended, never reordered: a family's presence bit is its row
number, and snapshots store the bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

import msgspec

from bus.events import (
    ContextReboot,
    ContextUsage,
    EventBase,
    IterationCompleted,
    LoopStarted,
    LoopStopped,
    ResourceSample,
    SessionEnded,
    SessionStarted,
    TestsReported,
)
from projections.catalogue.buckets import (
    ITERATION_BUCKETS,
    REBOOT_RATIO_BUCKETS,
    SESSION_DURATION_BUCKETS,
)
from projections.catalogue.spec import FamilySpec, spec
from projections.metrics.families import Kind

__all__ = [
    "CONDITIONS",
    "LOOP",
    "LOOP_SUFFIXES",
    "PER_LOOP",
    "Feed",
    "LoopFamily",
    "When",
    "loop_specs",
]

#: When a feeding event updates a family: always, or only under a condition.
When = Literal["always", "scored", "timed"]
#: What each condition means, in the words of the metric reference.
CONDITIONS: Final[dict[When, str]] = {
    "always": "",
    "scored": "with a progress_score",
    "timed": "with a duration (its duration_s, or the session's start was folded)",
}


class Feed(NamedTuple):
    """An event type that updates a family, and when it does."""

    event: type[EventBase]
    when: When = "always"


class LoopFamily(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the table: the family ``P_<suffix>`` and how the loop fold keeps it."""

    suffix: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    #: The events that update it (for each loop: the event's ``loop_id``).
    feeds: tuple[Feed, ...]
    #: The ``LoopState`` fields behind its series, cleared when it is reset (none for
    #: a family derived from another's fields, or for the fold-wide ``active_loops``).
    holds: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: The ``[projections]`` setting that replaces ``buckets``, if any.
    setting: str = ""
    #: The values of its last label, when the fold fixes them.
    label_values: tuple[str, ...] = ()
    #: A histogram's exemplar label (``FamilySpec.exemplar``); such a row holds its
    #: bucket counts, its sum, then its exemplars.
    exemplar: str = ""

    @property
    def per_loop(self) -> bool:
        """One series per loop (labelled ``loop``), rather than one for the whole fold."""
        return "loop" in self.labels


_ITERATION: Final = (Feed(IterationCompleted),)
_SCORED: Final = (Feed(IterationCompleted, "scored"),)
_LOOP: Final = ("loop",)

LOOP: Final[tuple[LoopFamily, ...]] = (
    LoopFamily(
        suffix="iterations_total",
        kind="counter",
        help="Loop iterations completed, by result.",
        labels=("loop", "result"),
        label_values=("success", "failure"),
        feeds=_ITERATION,
        holds=("iterations_ok", "iterations_failed"),
    ),
    LoopFamily(
        suffix="iteration_duration_seconds",
        kind="histogram",
        help="Loop iteration duration in seconds.",
        labels=_LOOP,
        buckets=ITERATION_BUCKETS,
        setting="iteration_buckets",
        feeds=_ITERATION,
        holds=("duration_counts", "duration_sum", "duration_exemplars"),
        exemplar="loop_id",
    ),
    LoopFamily(
        suffix="iterations_with_progress_total",
        kind="counter",
        help="Loop iterations that made progress.",
        labels=_LOOP,
        feeds=_ITERATION,
        holds=("with_progress",),
    ),
    LoopFamily(
        suffix="no_progress_streak",
        kind="gauge",
        help="Consecutive iterations without progress (0 after an iteration with progress).",
        labels=_LOOP,
        feeds=_ITERATION,
        holds=("no_progress_streak",),
    ),
    LoopFamily(
        suffix="progress_score",
        kind="gauge",
        help="Last progress score reported by an iteration.",
        labels=_LOOP,
        feeds=_SCORED,
        holds=("score",),
    ),
    LoopFamily(
        suffix="progress_velocity",
        kind="gauge",
        help="Mean of the last 10 progress scores.",
        labels=_LOOP,
        feeds=_SCORED,
        holds=("scores",),
    ),
    LoopFamily(
        suffix="files_changed_total",
        kind="counter",
        help="Files changed by loop iterations.",
        labels=_LOOP,
        feeds=_ITERATION,
        holds=("files_changed",),
    ),
    LoopFamily(
        suffix="sessions_created_total",
        kind="counter",
        help="Agent sessions started by the loop.",
        labels=_LOOP,
        feeds=(Feed(SessionStarted),),
        holds=("sessions_created",),
    ),
    LoopFamily(
        suffix="active_sessions",
        kind="gauge",
        help="Agent sessions started and not yet ended.",
        labels=_LOOP,
        feeds=(Feed(SessionStarted), Feed(SessionEnded)),
        holds=("open_sessions",),
    ),
    LoopFamily(
        suffix="session_duration_seconds",
        kind="histogram",
        help="Duration of ended sessions in seconds.",
        labels=_LOOP,
        buckets=SESSION_DURATION_BUCKETS,
        feeds=(Feed(SessionEnded, "timed"),),
        holds=("session_counts", "session_sum"),
    ),
    LoopFamily(
        suffix="context_reboots_total",
        kind="counter",
        help="Context reboots (fresh context windows).",
        labels=_LOOP,
        feeds=(Feed(ContextReboot),),
        holds=("reboots",),
    ),
    LoopFamily(
        suffix="context_usage_ratio",
        kind="gauge",
        help="Last reported context window usage (0-1).",
        labels=_LOOP,
        feeds=(Feed(ContextUsage),),
        holds=("context_percent",),
    ),
    LoopFamily(
        suffix="context_at_reboot_ratio",
        kind="histogram",
        help="Context window usage (0-1) at the moment of a reboot.",
        labels=_LOOP,
        buckets=REBOOT_RATIO_BUCKETS,
        feeds=(Feed(ContextReboot),),
        holds=("reboot_counts", "reboot_ratio_sum", "reboot_percent_sum"),
    ),
    LoopFamily(
        suffix="tests",
        kind="gauge",
        help="Tests in the last report, by state.",
        labels=("loop", "state"),
        label_values=("passing", "failing"),
        feeds=(Feed(TestsReported),),
        holds=("tests_passed", "tests_failed", "tests_total"),
    ),
    LoopFamily(
        suffix="flaky_tests",
        kind="gauge",
        help="Flaky tests in the last report.",
        labels=_LOOP,
        feeds=(Feed(TestsReported),),
        holds=("tests_flaky",),
    ),
    LoopFamily(
        suffix="test_pass_ratio",
        kind="gauge",
        help="Passed over total tests in the last report (absent while total is 0).",
        labels=_LOOP,
        feeds=(Feed(TestsReported),),
    ),
    LoopFamily(
        suffix="test_failure_streak",
        kind="gauge",
        help="Consecutive test reports with at least one failure.",
        labels=_LOOP,
        feeds=(Feed(TestsReported),),
        holds=("test_failure_streak",),
    ),
    LoopFamily(
        suffix="resident_memory_bytes",
        kind="gauge",
        help="Last sampled resident memory in bytes.",
        labels=_LOOP,
        feeds=(Feed(ResourceSample),),
        holds=("rss_bytes",),
    ),
    LoopFamily(
        suffix="cpu_usage_ratio",
        kind="gauge",
        help="Last sampled CPU usage (1 = one full core).",
        labels=_LOOP,
        feeds=(Feed(ResourceSample),),
        holds=("cpu_percent",),
    ),
    LoopFamily(
        suffix="active_loops",
        kind="gauge",
        help="Loops started and not yet stopped.",
        labels=(),
        feeds=(Feed(LoopStarted), Feed(LoopStopped)),
    ),
)

#: Loop family suffixes, in table order.
LOOP_SUFFIXES: Final = tuple(row.suffix for row in LOOP)
#: The rows with one series per loop.
PER_LOOP: Final = tuple(row for row in LOOP if row.per_loop)


def loop_specs(prefix: str, iteration_buckets: Sequence[float]) -> dict[str, FamilySpec]:
    """The loop families under ``prefix``, keyed by suffix (``"iterations_total"`` ...)."""
    settings = {"iteration_buckets": tuple(iteration_buckets)}
    return {
        row.suffix: spec(
            f"{prefix}_{row.suffix}",
            row.kind,
            row.help,
            *row.labels,
            buckets=settings.get(row.setting, row.buckets),
            exemplar=row.exemplar,
        )
        for row in LOOP
    }
