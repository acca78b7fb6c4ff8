"""The fold's hot loop: dispatch events in log order, advance the clock, count by type.

Rule: no I/O, no wall clock; one contract, two implementations. ``fold_run_python``
is the reference; ``projections/_dispatch.c`` is the same loop compiled (built by
``pip install``, and skipped where no C compiler is found). ``fold_run`` is the
compiled one when it was built, else the reference. Tests run both on the same
events and compare the states they leave.

``fold_run(events, start, now, spec) -> (now, stop, counts)`` folds
``events[start:]`` in order. For each event: its class must be one of
``spec.types`` (``KeyError`` otherwise) and is counted; a finite ``ts`` above
``now`` becomes ``now``; then ``bus_type`` events are only counted,
``api_type`` events bump ``api[method][status]`` and set
``api_touched[method][status] = now`` when both dicts hold the method and ``api``
holds the status, and otherwise go to ``api_miss(event, now)``, and any other event goes
to its handler (``None`` only advances the clock); before the handler of an ``indexed``
type is called, the event's index in ``events`` is written to ``cursor[0]``
(exemplars record where their event is). The loop stops at the first
``stop_type`` event, counted and its ``ts`` read but not handled: ``stop`` is
its index (``len(events)`` when there is none) and ``counts`` lines up with
``spec.types``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

__all__ = ["COMPILED", "FoldRun", "FoldSpec", "fold_run", "fold_run_python"]

_INF: Final = math.inf
Handler = Callable[[Any, Any], None]


class FoldSpec(NamedTuple):
    """What the loop dispatches on; built once per projection (the C loop checks it each call)."""

    types: tuple[type, ...]
    handlers: tuple[Handler | None, ...]  # lined up with ``types``
    api: dict[str, dict[int, int]]  # method -> status -> count, bumped in place
    api_miss: Handler  # an ``api_type`` event whose series is not in ``api`` yet
    api_type: type
    bus_type: type
    stop_type: type
    ts_field: Any  # member descriptors the C loop reads slots through
    method_field: Any
    status_field: Any
    indexed: tuple[type, ...]  # types whose handlers read the event's index in ``cursor``
    cursor: list[int]  # one slot, written in place before each of their handlers
    api_touched: dict[str, dict[int, Any]]  # method -> status -> clock of its last bump


FoldRun = Callable[[list[Any], int, Any, FoldSpec], tuple[Any, int, tuple[int, ...]]]


def fold_run_python(
    events: list[Any], start: int, now: Any, spec: FoldSpec
) -> tuple[Any, int, tuple[int, ...]]:
    """The reference loop (see the module docstring)."""
    types = spec.types
    rest = events[start:] if start else events
    by_class = Counter(map(type, rest))
    stop = len(events)
    if spec.stop_type in by_class:  # rare: count one by one up to it
        stop = start + next(i for i, ev in enumerate(rest) if type(ev) is spec.stop_type)
        rest = events[start : stop + 1]
        by_class = Counter(map(type, rest))
    unknown = by_class.keys() - set(types)
    if unknown:
        first = next(ev for ev in rest if type(ev) in unknown)
        rest = rest[: rest.index(first)]  # fold what precedes it, as the C loop does
        now = _loop(rest, start, now, spec)
        raise KeyError(type(first))
    now = _loop(rest, start, now, spec)
    return now, stop, tuple(by_class[cls] for cls in types)


def _loop(events: Sequence[Any], start: int, now: Any, spec: FoldSpec) -> Any:
    """Fold ``events``, which begin at index ``start`` of the list folded."""
    handlers = dict(zip(spec.types, spec.handlers, strict=True))
    api, api_touched, api_miss = spec.api, spec.api_touched, spec.api_miss
    api_type, bus_type, stop_type = spec.api_type, spec.bus_type, spec.stop_type
    indexed, cursor = frozenset(spec.indexed), spec.cursor
    for i, ev in enumerate(events, start):  # handlers that read the clock set it from ``now``
        ts = ev.ts
        if ts is not None and now < ts < _INF:
            now = ts
        cls = type(ev)
        if cls is api_type:
            by_status = api.get(ev.method)  # nested by method: no key tuple to hash
            touched = api_touched.get(ev.method)
            if by_status is not None and touched is not None:
                n = by_status.get(ev.status)
                if n is not None:
                    by_status[ev.status] = n + 1
                    touched[ev.status] = now
                    continue
            api_miss(ev, now)
        elif cls is not bus_type and cls is not stop_type:
            handler = handlers[cls]
            if handler is not None:
                if cls in indexed:
                    cursor[0] = i
                handler(ev, now)
    return now


fold_run: FoldRun
try:
    from projections._dispatch import fold_run as _compiled
except ImportError:  # built without a C compiler: the reference loop, about 20% slower
    COMPILED = False
    fold_run = fold_run_python
else:
    COMPILED = True
    fold_run = _compiled
