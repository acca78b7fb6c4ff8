"""The conductor families: conductor-loop's names, kept exactly.

Rule: these names are a contract shared with conductor-loop's own endpoint;
change one only on purpose. Two of them are gauges whose names end in
``_total`` (``ACTIVE_RUNS``, ``QUEUED_RUNS``): promtool's only allowed findings.
"""

from __future__ import annotations

from typing import Final

from projections.catalogue.buckets import RUN_DURATION_BUCKETS
from projections.catalogue.spec import FamilySpec, spec

__all__ = [
    "ACTIVE_RUNS",
    "AGENT_FALLBACKS",
    "AGENT_RUNS",
    "API_REQUESTS",
    "BUS_APPENDS",
    "COMPLETED_RUNS",
    "CONDUCTOR",
    "CONDUCTOR_NAMES",
    "FAILED_RUNS",
    "QUEUED_RUNS",
    "RUN_DURATION",
]

ACTIVE_RUNS: Final = "conductor_active_runs_total"
QUEUED_RUNS: Final = "conductor_queued_runs_total"
COMPLETED_RUNS: Final = "conductor_completed_runs_total"
FAILED_RUNS: Final = "conductor_failed_runs_total"
BUS_APPENDS: Final = "conductor_messagebus_appends_total"
API_REQUESTS: Final = "conductor_api_requests_total"
AGENT_RUNS: Final = "conductor_agent_runs_total"
AGENT_FALLBACKS: Final = "conductor_agent_fallbacks_total"
RUN_DURATION: Final = "conductor_run_duration_seconds"

#: The families folded from conductor events (``projections.conductor``).
CONDUCTOR: Final[tuple[FamilySpec, ...]] = (
    spec(ACTIVE_RUNS, "gauge", "Runs started and not yet finished."),
    spec(QUEUED_RUNS, "gauge", "Runs queued and not yet started or finished."),
    spec(COMPLETED_RUNS, "counter", "Runs that finished with status completed."),
    spec(FAILED_RUNS, "counter", "Runs that finished with status failed."),
    spec(BUS_APPENDS, "counter", "Messages appended to the conductor message bus."),
    spec(
        API_REQUESTS,
        "counter",
        "Conductor API requests by HTTP method and response status.",
        "method",
        "status",
    ),
    spec(AGENT_RUNS, "counter", "Runs started, by agent type.", "agent_type"),
    spec(
        AGENT_FALLBACKS,
        "counter",
        "Fallbacks from one agent type to another.",
        "from_type",
        "to_type",
    ),
    spec(
        RUN_DURATION,
        "histogram",
        "Duration of finished runs in seconds, by agent and final status.",
        "agent",
        "status",
        buckets=RUN_DURATION_BUCKETS,
        exemplar="run_id",
    ),
)

CONDUCTOR_NAMES: Final = tuple(s.name for s in CONDUCTOR)
