"""The Ralph-loop fold: loop events -> per-loop state, the ``P_*`` families and the roll-ups.

Rule: no I/O and no wall clock; a loop's state changes only through the handlers
of ``fold``, in log order.
"""

from projections.ralph.fold import LoopFold as LoopFold
from projections.ralph.fold import LoopFoldState as LoopFoldState
from projections.ralph.rollup import LoopRollup as LoopRollup
