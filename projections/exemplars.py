"""Exemplars: each bucket of a histogram keeps the latest observation that fell in it, with
the bus position of the event it came from.

Rule: no I/O; positions come with the events (``Projection.fold_batch`` takes them
from the batch). Handlers know an event's index in the list being folded (the
dispatch loop writes it to ``cursor`` before it calls a handler of an ``indexed``
type), not its position: ``record`` notes the observation with that index, and
``settle`` turns the latest one per bucket into an ``Exemplar`` once the list is
folded, asking the batch for those few positions only (working out every
event's position would cost a tenth of the fold).

Which families carry exemplars, and with which label, is the catalogue's
(``FamilySpec.exemplar``); the folds record for those families only.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Final

from projections.metrics.families import Exemplar

__all__ = ["ExemplarRecorder", "PositionsOf"]

#: The bus positions of the events at some indices (ascending) of the list being folded.
PositionsOf = Callable[[list[int]], list[int]]

#: (bucket slots, bucket index, ident, value, ts, index in the folded list)
_Pending = tuple[dict[int, Exemplar], int, str, float, float, int]
_index: Final = itemgetter(5)


class ExemplarRecorder:
    """Observations noted during one fold of a list of events, positioned after it.

    ``cursor[0]`` is the index of the event being handled (written by the dispatch
    loop). Slots are the ``HistogramSeries.exemplars`` dicts (or a loop's); a slot
    dropped meanwhile (a ``metrics_reset``) is written to harmlessly, unread.
    """

    __slots__ = ("_pending", "cursor")

    def __init__(self) -> None:
        self.cursor: list[int] = [0]
        self._pending: list[_Pending] = []

    def record(
        self, slots: dict[int, Exemplar], bucket: int, ident: str, value: float, ts: float
    ) -> None:
        """Note an observation of the current event in ``slots[bucket]``."""
        self._pending.append((slots, bucket, ident, value, ts, self.cursor[0]))

    def settle(self, positions: PositionsOf | None) -> None:
        """Write the latest observation noted per slot, positioned; without ``positions``
        (events folded with no positions known) the notes are dropped."""
        pending, self._pending = self._pending, []
        if not pending or positions is None:
            return
        latest: dict[tuple[int, int], _Pending] = {}
        for note in pending:  # log order: the last note of a slot wins
            latest[id(note[0]), note[1]] = note  # every slot is alive: ``pending`` holds it
        notes = sorted(latest.values(), key=_index)
        where = positions([note[5] for note in notes])
        for (slots, bucket, ident, value, ts, _), position in zip(notes, where, strict=True):
            slots[bucket] = Exemplar(ident, value, ts, position)
