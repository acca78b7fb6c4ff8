"""Summaries: quantiles over a sliding window of event time, from a log-bucket sketch.

Rule: no I/O, no wall clock, no randomness. The window moves with the
``EventClock`` the fold advances, so the same events give the same quantiles
however they were batched or ordered.

The sketch (DDSketch-style) has relative accuracy ``a`` (``relative_error``):
with ``gamma = (1 + a) / (1 - a)``, a value ``x`` goes to bin
``i = ceil(log_gamma(|x|))`` (with its sign; zero has a bin of its own) and a
bin answers with ``2 * gamma**i / (gamma + 1)`` (signed), which is within
``a * |x|`` of every ``x`` in it.

Guarantee: with ``n`` finite observations in the window, sorted
``x_0 <= ... <= x_(n-1)``, ``quantile(q)`` returns ``v`` with
``|v - x_r| <= a * |x_r|`` where ``r = ceil(q * (n - 1))`` (computed in double
precision), up to floating-point rounding (relative slack below 1e-12), for
normal floats (``|x| >= 2.2e-308``) whose bin lies above the collapse point.
Memory is bounded: an age bucket keeps at most ``max_bins`` bins, merging its
lowest bins into the lowest kept one when a new bin would exceed that. With
a = 1% and 2048 bins that happens only if one bucket's values span a factor of
about 6e17 (one sign). Collapsing depends only on the set of bins seen, so
merging is associative and commutative and state does not depend on order.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Final

from projections.clock import EventClock
from projections.metrics.families import (
    DEFAULT_MAX_SERIES,
    OVERFLOW,
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    Kind,
    Labels,
    MetricNameError,
    OverflowCounts,
    _FamilyBase,
)

__all__ = [
    "DEFAULT_MAX_BINS",
    "QUANTILES",
    "AnyFamily",
    "LogMapping",
    "SummaryFamily",
    "SummarySeries",
]

#: The quantiles every summary reports.
QUANTILES: Final = (0.5, 0.9, 0.99)
DEFAULT_MAX_BINS: Final = 2048

_LOG_MAX: Final = math.log(sys.float_info.max)
_floor: Final = math.floor
_ceil: Final = math.ceil
_log: Final = math.log

#: ``-log`` of the smallest positive float (5e-324) is 744.44: every index fits the offset.
_LOG_SPAN: Final = 745.0


class LogMapping:
    """Values <-> integer bin keys, ordered like the values: negative < 0 < positive."""

    __slots__ = ("gamma", "log_gamma", "log_representative", "offset", "relative_error")

    def __init__(self, relative_error: float) -> None:
        if not 0.0 < relative_error < 1.0:
            raise ValueError(f"relative_error must be in (0, 1), got {relative_error!r}")
        self.relative_error = relative_error
        self.gamma = (1.0 + relative_error) / (1.0 - relative_error)
        self.log_gamma = math.log(self.gamma)
        self.offset = math.ceil(_LOG_SPAN / self.log_gamma) + 1
        self.log_representative = math.log(2.0 / (1.0 + self.gamma))

    def key(self, x: float) -> int:
        """The bin of a finite ``x``: 0 for zero, else +-(ceil(log_gamma(|x|)) + offset)."""
        if x > 0.0:
            return math.ceil(math.log(x) / self.log_gamma) + self.offset
        if x < 0.0:
            return -(math.ceil(math.log(-x) / self.log_gamma) + self.offset)
        return 0

    def value(self, key: int) -> float:
        """A bin's answer: +-2 * gamma**i / (gamma + 1), within ``a`` of every value in it."""
        if key == 0:
            return 0.0
        exponent = (abs(key) - self.offset) * self.log_gamma + self.log_representative
        v = math.exp(exponent) if exponent < _LOG_MAX else sys.float_info.max
        return v if key > 0 else -v


def add_bins(bins: dict[int, int], key: int, count: int, max_bins: int) -> None:
    """Add ``count`` observations to bin ``key``, collapsing the lowest bins past ``max_bins``."""
    current = bins.get(key)
    if current is not None:
        bins[key] = current + count
        return
    bins[key] = count
    if len(bins) > max_bins:
        keys = sorted(bins)
        excess = len(keys) - max_bins
        moved = sum(bins.pop(k) for k in keys[:excess])
        bins[keys[excess]] += moved


class SummarySeries:
    """All-time ``sum``/``count`` and, per age bucket index, the sketch's bins (key -> count)."""

    __slots__ = ("count", "sum", "windows")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.windows: dict[int, dict[int, int]] = {}


class SummaryFamily(_FamilyBase):
    """Quantiles over the last ``window_s`` seconds of event time, plus all-time sum and count.

    The window is made of ``age_buckets`` buckets of ``window_s / age_buckets``
    seconds, aligned to ``floor(ts / width)``; an observation lands in its own
    ``ts``'s bucket. At query time the window is the ``age_buckets`` newest
    bucket indices ``<= floor(clock.now / width)``. Observations older than the
    window are left out of the sketch but still count in ``sum`` and ``count``;
    non-finite values and timestamps count there too but never enter a sketch.
    """

    __slots__ = (
        "age_buckets",
        "clock",
        "mapping",
        "max_bins",
        "series",
        "width",
        "window_s",
    )
    kind: Kind = "summary"

    def __init__(
        self,
        name: str,
        help: str,
        label_names: Sequence[str] = (),
        *,
        clock: EventClock,
        window_s: float = 600.0,
        age_buckets: int = 5,
        relative_error: float = 0.01,
        max_bins: int = DEFAULT_MAX_BINS,
        max_series: int = DEFAULT_MAX_SERIES,
        overflow: OverflowCounts | None = None,
    ) -> None:
        super().__init__(name, help, label_names, max_series=max_series, overflow=overflow)
        if "quantile" in self.label_names:
            raise MetricNameError(f"summary {name!r} may not use the label 'quantile'")
        if not (math.isfinite(window_s) and window_s > 0.0):
            raise ValueError(f"window_s must be a positive number, got {window_s!r}")
        if age_buckets < 1:
            raise ValueError(f"age_buckets must be at least 1, got {age_buckets!r}")
        if max_bins < 1:
            raise ValueError(f"max_bins must be at least 1, got {max_bins!r}")
        self.clock = clock
        self.window_s = float(window_s)
        self.age_buckets = int(age_buckets)
        self.width = self.window_s / self.age_buckets
        self.mapping = LogMapping(relative_error)
        self.max_bins = int(max_bins)
        self.series: dict[Labels, SummarySeries] = {}

    @property
    def relative_error(self) -> float:
        return self.mapping.relative_error

    def window(self) -> tuple[int, int]:
        """The first and last age bucket index of the window ending at ``clock.now``."""
        last = math.floor(self.clock.now / self.width)
        return last - self.age_buckets + 1, last

    def observe(self, labels: Labels, value: float, ts: float, *, now: float | None = None) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self._series(labels)
        if now is not None:
            self.touched[self._key(labels, series)] = now
        series.count += 1
        series.sum += value
        if value - value != 0.0 or ts - ts != 0.0:  # NaN or infinite (x - x is NaN then)
            return
        index = _floor(ts / self.width)
        bins = series.windows.get(index)
        if bins is None:
            bins = self._bucket(series, index)
            if bins is None:
                return  # already slid out of the window
        mapping = self.mapping
        key = (
            _ceil(_log(value) / mapping.log_gamma) + mapping.offset
            if value > 0.0
            else mapping.key(value)
        )
        current = bins.get(key)
        if current is not None:
            bins[key] = current + 1
        else:
            add_bins(bins, key, 1, self.max_bins)

    def clear(self) -> None:
        """Forget every series (sum, count and sketch)."""
        self.series.clear()
        self.touched.clear()

    def _key(self, labels: Labels, series: SummarySeries) -> Labels:
        """The labels ``series`` is held under: ``labels``, or the overflow series'."""
        if self.series.get(labels) is series:
            return labels
        return (OVERFLOW,) * len(self.label_names)

    def _series(self, labels: Labels) -> SummarySeries:
        labels = self._admit(labels, len(self.series))
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = SummarySeries()
        return series

    def _bucket(self, series: SummarySeries, index: int) -> dict[int, int] | None:
        """A new age bucket ``index`` (stale ones go), or None if it is behind the window."""
        first, _ = self.window()
        if index < first:
            return None
        windows = series.windows
        for stale in [i for i in windows if i < first]:
            del windows[stale]
        bins = windows[index] = {}
        return bins

    def window_bins(self, labels_or_series: Labels | SummarySeries) -> dict[int, int]:
        """The merged bins of the window's age buckets (key -> count)."""
        series = self._find(labels_or_series)
        merged: dict[int, int] = {}
        if series is None:
            return merged
        first, last = self.window()
        for index, bins in series.windows.items():
            if first <= index <= last:
                for key, count in bins.items():
                    merged[key] = merged.get(key, 0) + count
        return merged

    def quantiles(
        self, labels_or_series: Labels | SummarySeries, qs: Sequence[float] = QUANTILES
    ) -> tuple[float, ...]:
        """Estimates of each ``q`` in ``qs`` over the window; NaN when the window is empty."""
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        merged = self.window_bins(labels_or_series)
        if not merged:
            return tuple(math.nan for _ in qs)
        keys = sorted(merged)
        cumulative = list(accumulate(merged[k] for k in keys))
        n = cumulative[-1]
        value = self.mapping.value
        return tuple(value(keys[bisect_right(cumulative, math.ceil(q * (n - 1)))]) for q in qs)

    def quantile(self, labels_or_series: Labels | SummarySeries, q: float) -> float:
        """The estimate of quantile ``q`` over the window ending at ``clock.now``; NaN if empty."""
        return self.quantiles(labels_or_series, (q,))[0]

    def _find(self, labels_or_series: Labels | SummarySeries) -> SummarySeries | None:
        if isinstance(labels_or_series, SummarySeries):
            return labels_or_series
        return self.series.get(labels_or_series)


AnyFamily = CounterFamily | GaugeFamily | HistogramFamily | SummaryFamily
