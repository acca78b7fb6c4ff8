"""Exemplars: each bucket of a histogram keeps the latest observation that fell in it, with
the bus position of the event it came from.

Rule: no I/O; positions come with the events (``Projection.fold_batch`` takes them
from the batch). Handlers know an event's index in the list being folded (the
dispatch loop writes it to ``cursor`` before it calls a handler of an ``indexed``
type), not its position: ``record`` puts an ``Exemplar`` in the bucket's slot at
once, its ``offset`` standing for the list and the index (negative) until
``resolve`` asks each list's locator for the positions of the exemplars still in
their slots. That happens before anything reads them, or after ``MAX_PINNED``
lists. Working out positions costs a split of the batch's lines (about a tenth
of the fold if done for every batch); by then most exemplars have been replaced
by a later one, and need none.

Which families carry exemplars, and with which label, is the catalogue's
(``FamilySpec.exemplar``); the folds record for those families only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

from projections.metrics.families import Exemplar

__all__ = ["MAX_PINNED", "ExemplarRecorder", "PositionsOf", "Slots"]

#: The bus positions of the events at some indices (ascending) of the list being folded.
PositionsOf = Callable[[Sequence[int]], list[int]]
#: Every exemplar slot dict a fold holds now (bucket index -> exemplar).
Slots = Callable[[], Iterable[dict[int, Exemplar]]]
#: Folded lists whose exemplars may wait for their positions (each holds its batch's lines).
MAX_PINNED: Final = 64
#: A waiting exemplar's offset is ``-1 - (list << _SHIFT | index)``.
_SHIFT: Final = 32


class ExemplarRecorder:
    """Exemplars recorded while folding, positioned before they are read.

    ``cursor[0]`` is the index of the event being handled (written by the dispatch
    loop). The folds that record name their slots (``watch``): ``resolve`` finds the
    waiting exemplars there, so a slot dropped meanwhile (a ``metrics_reset``) costs
    nothing. Only a fold with positions records (``start``): events that were not
    read from a log have no exemplars.
    """

    __slots__ = ("_locators", "_sources", "base", "cursor")

    def __init__(self) -> None:
        self.cursor: list[int] = [0]
        #: ``-1 - (list << _SHIFT)`` for the list being folded, None if it has no positions:
        #: the offset of a waiting exemplar is ``base - index`` (a fold that writes its
        #: exemplars later keeps that code, and writes them before ``resolve`` reads).
        self.base: int | None = None
        #: The locators of the lists folded since the last ``resolve``, in order.
        self._locators: list[PositionsOf] = []
        self._sources: list[Slots] = []

    def watch(self, slots: Slots) -> None:
        """Let ``resolve`` look for waiting exemplars in the dicts ``slots()`` returns."""
        self._sources.append(slots)

    def start(self, positions: PositionsOf | None) -> None:
        """A list of events is about to be folded; ``positions`` says where they are."""
        if positions is None:
            self.base = None
        else:
            self.base = -1 - (len(self._locators) << _SHIFT)
            self._locators.append(positions)

    def record(
        self, slots: dict[int, Exemplar], bucket: int, ident: str, value: float, ts: float
    ) -> None:
        """The current event is the latest observation in ``slots[bucket]``."""
        base = self.base
        if base is not None:
            slots[bucket] = Exemplar(ident, value, ts, base - self.cursor[0])

    def settle(self) -> None:
        """The list is folded; positions are worked out now if too many lists wait."""
        self.base = None
        if len(self._locators) >= MAX_PINNED:
            self.resolve()

    def resolve(self) -> None:
        """Position every exemplar still waiting (before the slots are read)."""
        locators = self._locators
        if not locators:
            return
        self._locators = []
        waiting: dict[int, list[tuple[int, dict[int, Exemplar], int, Exemplar]]] = {}
        for source in self._sources:
            for slots in source():
                for bucket, e in slots.items():
                    if e.offset < 0:
                        code = -1 - e.offset
                        row = (code & ((1 << _SHIFT) - 1), slots, bucket, e)
                        waiting.setdefault(code >> _SHIFT, []).append(row)
        for which, rows in waiting.items():
            rows.sort(key=_first)
            where = locators[which]([row[0] for row in rows])
            for (_, slots, bucket, e), position in zip(rows, where, strict=True):
                slots[bucket] = Exemplar(e.ident, e.value, e.ts, position)


def _first(row: tuple[int, object, object, object]) -> int:
    return row[0]
