"""tally's own families (``tally_*``): those folded with the log, and the server process's.

Rule: ``SELF`` families are part of the projection (replays render them, a
reset never clears them); ``SERVER`` families describe one running server and
are rendered by it alone, never folded or written to the log.
"""

from __future__ import annotations

from typing import Final

from projections.catalogue.spec import FamilySpec, spec

__all__ = [
    "APPEND_ERRORS",
    "CHECKPOINT_OFFSET",
    "CORRUPT_LINES",
    "END_OFFSET",
    "EVENTS_FOLDED",
    "FOLDED_OFFSET",
    "OTLP_POINTS_REJECTED",
    "OTLP_RECORDS_REJECTED",
    "OTLP_THROTTLED",
    "REJECTED_EVENTS",
    "REJECT_REASONS",
    "RULE_ERRORS",
    "SELF",
    "SERIES_OVERFLOW",
    "SERVER",
    "SSE_CONFLATED",
    "SSE_FRAMES",
    "SSE_RESYNCS",
    "SSE_SUBSCRIBERS",
    "STALE_SERIES",
    "UNKNOWN_EVENTS",
    "UPTIME",
]

EVENTS_FOLDED: Final = "tally_events_folded_total"
CORRUPT_LINES: Final = "tally_corrupt_lines_total"
UNKNOWN_EVENTS: Final = "tally_unknown_events_total"
REJECTED_EVENTS: Final = "tally_rejected_events_total"
FOLDED_OFFSET: Final = "tally_folded_offset_bytes"
SERIES_OVERFLOW: Final = "tally_series_overflow_total"
RULE_ERRORS: Final = "tally_rule_errors_total"
STALE_SERIES: Final = "tally_stale_series"

#: Why a ``metric`` or ``otel_metric`` event was refused: the ``reason`` label of
#: ``tally_rejected_events_total``.
REJECT_REASONS: Final[dict[str, str]] = {
    "kind_conflict": "the family exists with another kind",
    "label_mismatch": "its label names differ from the family's (fixed by its first event)",
    "reserved_name": "the name belongs to the catalogue (conductor_*, P_*, tally_*)",
    "invalid_family": "the family could not be created (e.g. label le on a histogram)",
    "name_conflict": "an OTLP family's name is a metric-event family's, or the reverse",
    "bounds_conflict": "an OTLP histogram point's bounds differ from its family's",
    "invalid_point": "an OTLP delta point of a monotonic sum is negative",
}

#: Folded with the log (``projections.fold``).
SELF: Final[tuple[FamilySpec, ...]] = (
    spec(EVENTS_FOLDED, "counter", "Events folded into the projection, by event type.", "type"),
    spec(
        CORRUPT_LINES, "counter", "Log lines that could not be decoded (quarantined and skipped)."
    ),
    spec(UNKNOWN_EVENTS, "counter", "Log events of an unknown type (counted and skipped)."),
    spec(
        REJECTED_EVENTS,
        "counter",
        "Metric and OTLP metric events refused and not applied, by reason.",
        "reason",
    ),
    spec(FOLDED_OFFSET, "gauge", "Log offset in bytes up to which events have been folded."),
    spec(
        SERIES_OVERFLOW,
        "counter",
        "Updates sent to a family's overflow series because it reached its series limit.",
        "family",
    ),
    spec(
        RULE_ERRORS,
        "counter",
        "Events a rule matched but could not apply (a value missing or not a number), by rule.",
        "rule",
    ),
    spec(
        STALE_SERIES,
        "gauge",
        "Series not rendered because not updated within series_ttl_s of event time "
        "(their state is kept), by family.",
        "family",
    ),
)

UPTIME: Final = "conductor_uptime_seconds"
END_OFFSET: Final = "tally_end_offset_bytes"
CHECKPOINT_OFFSET: Final = "tally_checkpoint_offset_bytes"
SSE_SUBSCRIBERS: Final = "tally_sse_subscribers"
SSE_FRAMES: Final = "tally_sse_frames_total"
SSE_CONFLATED: Final = "tally_sse_conflated_updates_total"
SSE_RESYNCS: Final = "tally_sse_resyncs_total"
OTLP_POINTS_REJECTED: Final = "tally_otlp_points_rejected_total"
OTLP_RECORDS_REJECTED: Final = "tally_otlp_log_records_rejected_total"
OTLP_THROTTLED: Final = "tally_otlp_throttled_total"
APPEND_ERRORS: Final = "tally_append_errors_total"

#: Rendered by a running server over the projection's families (``server.app``); the
#: uptime keeps conductor-loop's name, and is the only family read from the wall clock.
SERVER: Final[tuple[FamilySpec, ...]] = (
    spec(UPTIME, "gauge", "Seconds since this tally server started."),
    spec(END_OFFSET, "gauge", "Byte offset of the end of the bus."),
    spec(CHECKPOINT_OFFSET, "gauge", "Bus offset of the newest checkpoint (-1: none yet)."),
    spec(SSE_SUBSCRIBERS, "gauge", "Connected SSE subscribers."),
    spec(SSE_FRAMES, "counter", "SSE frames sent to subscribers."),
    spec(
        SSE_CONFLATED,
        "counter",
        "Series updates replaced by a newer value before a slow subscriber received them.",
    ),
    spec(
        SSE_RESYNCS,
        "counter",
        "Subscribers whose pending buffer overflowed and were resent a snapshot.",
    ),
    spec(
        OTLP_POINTS_REJECTED,
        "counter",
        "OTLP data points left out of an export and counted in its partial success.",
    ),
    spec(
        OTLP_RECORDS_REJECTED,
        "counter",
        "OTLP log records left out of an export and counted in its partial success.",
    ),
    spec(
        OTLP_THROTTLED,
        "counter",
        "OTLP exports answered 429 or 503 with Retry-After (tally could not take more).",
    ),
    spec(
        APPEND_ERRORS,
        "counter",
        "Appends to the bus that failed (nothing of them acknowledged), by reason "
        "(no_space, unavailable, io_error, other).",
        "reason",
    ),
)
