"""Exponential histograms -> explicit buckets at powers of 2 (``EXPONENTIAL_BUCKETS``).

Rule: pure arithmetic, exact where it can be. Bucket ``i`` of scale ``s`` holds
values in ``(2^(i/2^s), 2^((i+1)/2^s)]``; at scale 0 or above it lies wholly inside
the power-of-2 bucket ``(2^(k-1), 2^k]`` with ``k = ceil((i+1)/2^s)``, so its count
moves there exactly. Below scale 0 a bucket spans several powers of 2 and its count
goes to the one of its upper bound (an over-estimate of that bucket's ``le``). Counts
below the first bound (the zero bucket and the negative buckets among them) go to
the first bucket, those above the last to ``+Inf``; sum and count are kept exactly.
"""

from __future__ import annotations

from projections.catalogue.buckets import EXPONENTIAL_BUCKETS, EXPONENTIAL_MIN_EXPONENT

__all__ = ["explicit_counts"]

_SLOTS = len(EXPONENTIAL_BUCKETS) + 1


def explicit_counts(
    scale: int, zero_count: int, positive_offset: int, positive_counts: list[int], negative: int
) -> list[int]:
    """Per-bucket counts over ``EXPONENTIAL_BUCKETS`` (+Inf last); ``negative`` is the
    total count of the negative buckets."""
    counts = [0] * _SLOTS
    counts[0] = zero_count + negative
    for j, n in enumerate(positive_counts):
        if not n:
            continue
        upper = positive_offset + j + 1  # the bucket's upper bound is 2^(upper / 2^scale)
        k = -(-upper // (1 << scale)) if scale >= 0 else upper << -scale
        slot = k - EXPONENTIAL_MIN_EXPONENT
        counts[min(max(slot, 0), _SLOTS - 1)] += n
    return counts
