"""Pure folds from events to metric state, and exposition formats (state -> bytes).

No I/O and no wall clock anywhere below: time comes from event ``ts``. The rooms:
``metrics`` (families and their state records), ``catalogue`` (every family tally
renders, declared once), ``fold`` (``Projection``, which composes the conductor fold
in ``conductor``, the Ralph-loop fold in ``ralph``, the ``metric``-event families in
``metric_events`` and its self-metrics), ``config`` (settings), ``dispatch``
(the hot loop that hands each event to its fold), ``clock`` (event time),
``snapshot`` (state as bytes), ``replay`` and ``partition`` (folding read batches),
``exposition`` (the formats).
"""

from projections.catalogue import Catalogue as Catalogue
from projections.catalogue import FamilySpec as FamilySpec
from projections.clock import EventClock as EventClock
from projections.config import ProjectionConfig as ProjectionConfig
from projections.fold import Projection as Projection
from projections.fold import ProjectionState as ProjectionState
from projections.replay import DurationError as DurationError
from projections.replay import fold_batches as fold_batches
from projections.replay import fold_steps as fold_steps
from projections.replay import parse_duration as parse_duration
from projections.snapshot import SNAPSHOT_VERSION as SNAPSHOT_VERSION
from projections.snapshot import SnapshotError as SnapshotError
from projections.snapshot import SnapshotMeta as SnapshotMeta
from projections.snapshot import decode_snapshot as decode_snapshot
from projections.snapshot import encode_snapshot as encode_snapshot
from projections.snapshot import read_snapshot_meta as read_snapshot_meta
