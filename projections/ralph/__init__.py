"""The Ralph-loop fold: loop events -> per-loop state, the ``P_*`` families and the roll-ups.

Rule: no I/O and no wall clock; a loop's state changes only through the handlers
of ``fold``, in log order. The rooms: ``state`` (one loop's state and presence
bits), ``fold`` (the handlers and the cardinality guard), ``families`` (the
``P_*`` families rendered from the states) and ``rollup`` (the JSON roll-up).
What each family is, what feeds it and what it holds is one table,
``catalogue.LOOP``.
"""

from projections.ralph.fold import LoopFold as LoopFold
from projections.ralph.fold import LoopFoldState as LoopFoldState
from projections.ralph.rollup import LoopRollup as LoopRollup
from projections.ralph.state import LoopState as LoopState
