"""Bucket layouts of the catalogue's histograms, and the defaults the configuration starts from.

Rule: upper bounds only (``+Inf`` is implicit), finite and strictly ascending;
constants, imported by ``projections.config`` for its defaults (this module
imports nothing of tally's, so that it never closes an import cycle).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_BUCKETS",
    "EXPONENTIAL_BUCKETS",
    "EXPONENTIAL_MAX_EXPONENT",
    "EXPONENTIAL_MIN_EXPONENT",
    "ITERATION_BUCKETS",
    "REBOOT_RATIO_BUCKETS",
    "RUN_DURATION_BUCKETS",
    "SESSION_DURATION_BUCKETS",
]

#: ``conductor_run_duration_seconds``.
RUN_DURATION_BUCKETS: Final = (1.0, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
#: ``P_iteration_duration_seconds`` by default (the ``iteration_buckets`` setting).
ITERATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: ``P_session_duration_seconds``.
SESSION_DURATION_BUCKETS: Final = (60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
#: ``P_context_at_reboot_ratio``.
REBOOT_RATIO_BUCKETS: Final = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
#: Histograms created by ``metric`` events by default (the ``default_buckets`` setting):
#: Prometheus' default buckets.
DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: OTLP exponential histograms, converted (``projections.otel.exponential``): powers of 2
#: from 2^-10 (about 0.001) to 2^30 (about 1.07e9).
EXPONENTIAL_MIN_EXPONENT: Final = -10
EXPONENTIAL_MAX_EXPONENT: Final = 30
EXPONENTIAL_BUCKETS: Final = tuple(
    2.0**k for k in range(EXPONENTIAL_MIN_EXPONENT, EXPONENTIAL_MAX_EXPONENT + 1)
)
