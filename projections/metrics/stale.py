"""Stale series: hidden from rendering after ``series_ttl_s``, freed after ``forget_after_s``.

Rule: no I/O, no wall clock: "stale" is measured against the event clock, from
``touched`` (the clock when each series last changed). Hiding never changes
state; forgetting does, and only when the fold asks (at its sweep boundaries).
Only labelled series go stale: an unlabelled family's one series is always there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from projections.metrics.families import CounterFamily, GaugeFamily, Labels
from projections.metrics.summary import AnyFamily

__all__ = ["StaleTest", "forget_series", "hide_series", "stale_before"]

#: Is the series with these labels stale?
StaleTest = Callable[[Labels], bool]


def stale_before(family: AnyFamily, cutoff: float) -> StaleTest:
    """Series last changed before ``cutoff`` (a series never stamped is never stale)."""
    touched = family.touched

    def stale(labels: Labels) -> bool:
        at = touched.get(labels)
        return at is not None and at < cutoff

    return stale


def _held(family: AnyFamily) -> dict[Labels, object]:
    if isinstance(family, CounterFamily | GaugeFamily):
        return family.values  # type: ignore[return-value]
    return family.series  # type: ignore[return-value]


def hide_series(family: AnyFamily, stale: StaleTest) -> tuple[AnyFamily, int]:
    """``family`` without its stale series, and how many were left out.

    The family itself is never changed: when a series is hidden the result is a
    shallow copy holding only the others.
    """
    if not family.label_names:
        return family, 0
    held = _held(family)
    hidden = [labels for labels in held if stale(labels)]
    if not hidden:
        return family, 0
    view = copy.copy(family)
    gone = set(hidden)
    kept = {labels: v for labels, v in held.items() if labels not in gone}
    if isinstance(view, CounterFamily | GaugeFamily):
        view.values = kept  # type: ignore[assignment]
    else:
        view.series = kept  # type: ignore[assignment]
    return view, len(hidden)


def forget_series(family: AnyFamily, cutoff: float) -> int:
    """Free every labelled series of ``family`` last changed before ``cutoff``; how many."""
    if not family.label_names or not family.touched:
        return 0
    touched = family.touched
    old = [labels for labels, at in touched.items() if at < cutoff]
    held = _held(family)
    for labels in old:
        del touched[labels]
        held.pop(labels, None)
    return len(old)
