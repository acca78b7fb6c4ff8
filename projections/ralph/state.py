"""One loop's folded state (``LoopState``), its record, and its presence bits.

Rule: what a loop family holds, and which events set its presence bit, come
from its row of ``catalogue.LOOP``; nothing here lists the families again.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import msgspec

from bus.events import EventBase
from projections.catalogue.loops import LOOP, PER_LOOP, Feed, When
from projections.metrics.families import Exemplar

__all__ = [
    "BIT",
    "HOLDS",
    "VELOCITY_WINDOW",
    "LoopState",
    "LoopStateRecord",
    "fed_bits",
]

#: Progress scores averaged by ``P_progress_velocity``.
VELOCITY_WINDOW: Final = 10

#: One presence bit per loop family, ``1 << its row number``: a loop's series of a
#: family is rendered iff an event fed the family since the loop appeared or the
#: family was reset (snapshots store the bits).
BIT: Final[dict[str, int]] = {row.suffix: 1 << i for i, row in enumerate(LOOP) if row.per_loop}
#: The ``LoopState`` fields behind each loop family, cleared when it is reset.
HOLDS: Final[dict[str, tuple[str, ...]]] = {row.suffix: row.holds for row in PER_LOOP}


def fed_bits(event: type[EventBase], when: When = "always") -> int:
    """The presence bits of the loop families that ``event`` updates (under ``when``)."""
    bits = 0
    for row in PER_LOOP:
        if Feed(event, when) in row.feeds:
            bits |= BIT[row.suffix]
    return bits


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
    #: Iteration-duration bucket index -> the latest iteration in it (``projections.exemplars``).
    duration_exemplars: dict[int, Exemplar]
    #: The event clock at the loop's last event (``series_ttl_s``, ``forget_after_s``).
    last_ts: float = 0.0


class LoopState:
    """Everything folded for one loop; mutated in place by the loop fold's handlers.

    ``seen`` holds the presence bits (``BIT``); every other field of the record is
    held by exactly one loop family (``HOLDS``).
    """

    __slots__ = (*LoopStateRecord.__struct_fields__, "codes", "iterations")

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
        self.last_ts = 0.0
        self.duration_exemplars: dict[int, Exemplar] = {}
        #: ``iteration_completed`` events not folded in yet (``LoopFold.settle``), and
        #: where each is in the log (``ExemplarRecorder.base``; empty without exemplars).
        self.iterations: list[Any] = []
        self.codes: list[int | None] = []

    def clear(self, suffix: str) -> None:
        """Forget what fed the loop family ``suffix`` (a ``metrics_reset``): its presence
        bit, and the fields it holds back to their initial values."""
        self.seen &= ~BIT[suffix]
        blank = LoopState(
            len(self.duration_counts) - 1, len(self.session_counts) - 1, len(self.reboot_counts) - 1
        )
        for name in HOLDS[suffix]:
            setattr(self, name, getattr(blank, name))

    def to_record(self) -> LoopStateRecord:
        fields: dict[str, Any] = {}
        for name in LoopStateRecord.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, deque | list):
                value = list(value)
            elif name == "duration_exemplars":  # by bucket: equal states, equal records
                value = dict(sorted(value.items()))
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
        state.codes = []
        return state
