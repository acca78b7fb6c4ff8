"""Sample families for the exposition tests: one of each kind, with conventional names."""

from __future__ import annotations

from projections.clock import EventClock
from projections.exposition.formats import Format, render
from projections.fold import Projection
from projections.metrics.families import CounterFamily, GaugeFamily, HistogramFamily
from projections.metrics.summary import SummaryFamily


def sample_families() -> list[CounterFamily | GaugeFamily | HistogramFamily | SummaryFamily]:
    """One family of each kind, with conventional names (shared by the format tests)."""
    requests = CounterFamily("app_requests_total", "Requests handled.", ("method", "code"))
    requests.inc(("GET", "200"), 3)
    requests.inc(("POST", "500"), 1)
    requests.inc(("GET", "404"), 2.5)
    memory = GaugeFamily("app_memory_bytes", "Resident memory.", ())
    memory.set((), 1234567.0)
    latency = HistogramFamily(
        "app_latency_seconds", "Request latency.", ("route",), bounds=(0.1, 1.0, 10.0)
    )
    for v in (0.05, 0.5, 0.7, 20.0):
        latency.observe(("/a",), v)
    clock = EventClock(1000.0)
    rpc = SummaryFamily("app_rpc_seconds", "RPC latency.", ("peer",), clock=clock)
    for i in range(1, 101):
        rpc.observe(("db",), i / 100, 999.0)
    return [requests, memory, latency, rpc]


def rendered(projection: Projection, fmt: Format) -> bytes:
    """``projection`` rendered in ``fmt``, roll-ups included, as ``tally replay`` prints it."""
    return render(projection.families(), fmt, loops=projection.loops())
