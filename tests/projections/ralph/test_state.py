"""A loop's state: every field held by one loop family, presence bits fixed by the table."""

from __future__ import annotations

from collections import Counter

from bus.events import IterationCompleted, SessionEnded
from projections.catalogue import LOOP, PER_LOOP
from projections.metrics.families import Exemplar
from projections.ralph.state import BIT, LoopState, LoopStateRecord, fed_bits


def test_every_state_field_is_held_by_exactly_one_loop_family() -> None:
    held = Counter(field for row in LOOP for field in row.holds)
    assert set(held) == set(LoopStateRecord.__struct_fields__) - {"seen", "last_ts"}
    assert [field for field, n in held.items() if n > 1] == []


def test_presence_bits_are_row_numbers_and_never_move() -> None:
    """Snapshots store the bits: rows are appended to the table, never reordered."""
    assert list(BIT) == [
        "iterations_total",
        "iteration_duration_seconds",
        "iterations_with_progress_total",
        "no_progress_streak",
        "progress_score",
        "progress_velocity",
        "files_changed_total",
        "sessions_created_total",
        "active_sessions",
        "session_duration_seconds",
        "context_reboots_total",
        "context_usage_ratio",
        "context_at_reboot_ratio",
        "tests",
        "flaky_tests",
        "test_pass_ratio",
        "test_failure_streak",
        "resident_memory_bytes",
        "cpu_usage_ratio",
    ]
    assert list(BIT.values()) == [1 << i for i in range(len(BIT))]
    assert [row.suffix for row in PER_LOOP] == list(BIT)


def test_fed_bits_follow_the_feeds_and_their_conditions() -> None:
    scored = fed_bits(IterationCompleted, "scored")
    assert scored == BIT["progress_score"] | BIT["progress_velocity"]
    assert fed_bits(IterationCompleted) & scored == 0
    assert fed_bits(SessionEnded) == BIT["active_sessions"]
    assert fed_bits(SessionEnded, "timed") == BIT["session_duration_seconds"]


def busy_state() -> LoopState:
    """A state with every field away from its initial value."""
    record = LoopStateRecord(
        seen=(1 << len(BIT)) - 1,
        iterations_ok=3,
        iterations_failed=1,
        duration_counts=[1, 2, 1],
        duration_sum=9.5,
        with_progress=2,
        no_progress_streak=1,
        score=0.75,
        scores=[0.5, 0.75],
        files_changed=7,
        sessions_created=2,
        open_sessions={"s2": 100.0},
        session_counts=[0, 1],
        session_sum=70.0,
        reboots=1,
        reboot_counts=[0, 1],
        reboot_ratio_sum=0.9,
        reboot_percent_sum=90.0,
        context_percent=42.0,
        tests_passed=8,
        tests_failed=2,
        tests_total=10,
        tests_flaky=1,
        test_failure_streak=3,
        rss_bytes=1 << 20,
        cpu_percent=55.0,
        duration_exemplars={1: Exemplar("ralph-a", 0.3, 1_700_000_000.5, 1234)},
    )
    return LoopState.from_record(record)


def test_clear_resets_exactly_the_fields_a_family_holds() -> None:
    blank = LoopState(2, 1, 1).to_record()
    for row in PER_LOOP:
        state = busy_state()
        before = state.to_record()
        state.clear(row.suffix)
        after = state.to_record()
        changed = {
            name
            for name in LoopStateRecord.__struct_fields__
            if getattr(after, name) != getattr(before, name)
        }
        assert changed == {"seen", *row.holds}, row.suffix
        assert after.seen == before.seen & ~BIT[row.suffix]
        for name in row.holds:
            assert getattr(after, name) == getattr(blank, name), (row.suffix, name)
