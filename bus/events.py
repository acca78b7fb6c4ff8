"""Event schema v1: the one tagged union every line of the bus decodes into.

Rule: schemas only grow. New fields get defaults; an existing field never
changes type. Unknown fields are ignored on decode; an unknown ``type`` is
the reader's business (counted and skipped), not this module's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = [
    "EVENT_TYPES",
    "AgentFallback",
    "ApiRequest",
    "BusMessage",
    "ContextReboot",
    "ContextUsage",
    "Event",
    "EventBase",
    "IterationCompleted",
    "LoopStarted",
    "LoopStopped",
    "MetricUpdate",
    "MetricsReset",
    "OtelLog",
    "OtelMetric",
    "ResourceSample",
    "RunFinished",
    "RunQueued",
    "RunStarted",
    "SessionEnded",
    "SessionStarted",
    "TestsReported",
    "decode_event",
    "encode_events",
    "event_json_schema",
    "stamp",
]

METRIC_NAME_PATTERN: Final = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME_PATTERN: Final = r"^[a-zA-Z_][a-zA-Z0-9_]*$"

NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
# Names are checked in ``MetricUpdate.__post_init__`` against caches of names that
# passed before (a regex per name and label key made ``metric`` lines 3x dearer to
# decode); the schema still states the patterns. One cache per pattern: a valid
# metric name (``a:b``) is not always a valid label name, and the answer must never
# depend on what was decoded earlier.
MetricName = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": METRIC_NAME_PATTERN})]
LabelName = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": LABEL_NAME_PATTERN})]
_METRIC_NAME: Final = re.compile(METRIC_NAME_PATTERN)
_LABEL_NAME: Final = re.compile(LABEL_NAME_PATTERN)
#: Names that matched ``METRIC_NAME_PATTERN`` (bounded: cleared when full).
_VALID_METRIC_NAMES: Final[set[str]] = set()
#: Names that matched ``LABEL_NAME_PATTERN`` (bounded: cleared when full).
_VALID_LABEL_NAMES: Final[set[str]] = set()
_VALID_NAMES_MAX: Final = 100_000
HttpStatus = Annotated[int, msgspec.Meta(ge=100, le=599)]
Severity = Annotated[int, msgspec.Meta(ge=0, le=24)]
#: OpenTelemetry attributes: scalar values as sent; arrays, maps and bytes as JSON text.
Attributes = dict[str, str | int | float | bool]


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Common fields: ``ts`` is float Unix seconds; ``None`` means "stamp me"."""

    ts: float | None = None


# -- conductor-loop ---------------------------------------------------------


class RunQueued(EventBase, frozen=True, tag="run_queued"):
    run_id: NonEmpty
    project: str
    task: str = ""
    agent: str = ""


class RunStarted(EventBase, frozen=True, tag="run_started"):
    run_id: NonEmpty
    project: str
    task: str = ""
    agent: str = ""


class RunFinished(EventBase, frozen=True, tag="run_finished"):
    run_id: NonEmpty
    project: str
    task: str = ""
    agent: str = ""
    status: Literal["completed", "failed"] = "completed"
    exit_code: int = 0
    duration_s: NonNegFloat | None = None


class BusMessage(EventBase, frozen=True, tag="bus_message"):
    project: str
    msg_type: str
    task: str = ""
    run_id: str = ""
    msg_id: str = ""


class ApiRequest(EventBase, frozen=True, tag="api_request"):
    method: NonEmpty
    status: HttpStatus
    path: str = ""
    duration_s: NonNegFloat | None = None


class AgentFallback(EventBase, frozen=True, tag="agent_fallback"):
    from_type: str
    to_type: str
    run_id: str = ""


# -- Ralph loops ------------------------------------------------------------


class LoopStarted(EventBase, frozen=True, tag="loop_started"):
    loop_id: NonEmpty


class LoopStopped(EventBase, frozen=True, tag="loop_stopped"):
    loop_id: NonEmpty
    reason: str = ""


class IterationCompleted(EventBase, frozen=True, tag="iteration_completed"):
    loop_id: NonEmpty
    iteration: int
    duration_s: NonNegFloat
    success: bool
    made_progress: bool = False
    progress_score: float | None = None
    files_changed: NonNegInt = 0


class SessionStarted(EventBase, frozen=True, tag="session_started"):
    loop_id: NonEmpty
    session_id: str


class SessionEnded(EventBase, frozen=True, tag="session_ended"):
    loop_id: NonEmpty
    session_id: str
    duration_s: NonNegFloat | None = None


class ContextUsage(EventBase, frozen=True, tag="context_usage"):
    loop_id: NonEmpty
    percent: Percent


class ContextReboot(EventBase, frozen=True, tag="context_reboot"):
    loop_id: NonEmpty
    percent: Percent
    session_id: str = ""


class TestsReported(EventBase, frozen=True, tag="tests_reported"):
    __test__ = False  # not a pytest test class

    loop_id: NonEmpty
    passed: NonNegInt
    failed: NonNegInt
    total: NonNegInt
    flaky: NonNegInt = 0


class ResourceSample(EventBase, frozen=True, tag="resource_sample"):
    loop_id: NonEmpty
    rss_bytes: NonNegInt
    cpu_percent: NonNegFloat


# -- generic ----------------------------------------------------------------


class MetricUpdate(EventBase, frozen=True, tag="metric"):
    """Create or update the family ``name``; its kind is fixed by the first event.

    ``op`` defaults to ``inc`` for counters and ``set`` for gauges; histograms
    and summaries take ``value`` as one observation and ignore ``op``.
    """

    name: MetricName
    kind: Literal["counter", "gauge", "histogram", "summary"]
    value: float
    labels: dict[LabelName, str] = {}
    help: str = ""
    op: Literal["inc", "set", "dec"] | None = None

    def __post_init__(self) -> None:
        if self.name not in _VALID_METRIC_NAMES or not _VALID_LABEL_NAMES.issuperset(self.labels):
            _check_names(self.name, self.labels)
        if self.kind == "counter":
            if self.op not in (None, "inc"):
                raise ValueError(f"counter op must be 'inc', got {self.op!r} - at `$.op`")
            if not self.value >= 0:
                raise ValueError("counter value must be >= 0 - at `$.value`")
        elif self.kind != "gauge" and self.op is not None:
            raise ValueError(f"{self.kind} takes no op - at `$.op`")


def _check_names(name: str, labels: dict[str, str]) -> None:
    """Check a metric name and label keys against their patterns; remember the valid ones."""
    if _METRIC_NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid metric name {name!r}: must match {METRIC_NAME_PATTERN!r} - at `$.name`"
        )
    for key in labels:
        if _LABEL_NAME.fullmatch(key) is None:
            raise ValueError(
                f"invalid label name {key!r}: must match {LABEL_NAME_PATTERN!r} "
                "- at `key` in `$.labels`"
            )
    _remember(_VALID_METRIC_NAMES, (name,))
    _remember(_VALID_LABEL_NAMES, labels)


def _remember(cache: set[str], names: Iterable[str]) -> None:
    """Add ``names`` (all valid) to ``cache``, emptying it first if it would grow too large."""
    if len(cache) >= _VALID_NAMES_MAX:
        cache.clear()
    cache.update(names)


class MetricsReset(EventBase, frozen=True, tag="metrics_reset"):
    prefix: str = ""


# -- OpenTelemetry (OTLP) ---------------------------------------------------


class OtelMetric(EventBase, frozen=True, tag="otel_metric"):
    """One OTLP data point, as received (``POST /v1/metrics``); ``projections.otel`` folds it.

    Sums and gauges carry ``value``; histograms ``bounds`` and per-bucket ``counts``
    (one more than bounds); exponential histograms ``scale``, ``zero_count`` and the
    ``positive_*`` / ``negative_*`` buckets; both histograms ``sum`` and ``count``.
    """

    name: NonEmpty
    kind: Literal["sum", "gauge", "histogram", "exponential_histogram"]
    unit: str = ""
    description: str = ""
    temporality: Literal["unspecified", "delta", "cumulative"] = "unspecified"
    monotonic: bool = False
    start_time_unix_nano: NonNegInt = 0
    time_unix_nano: NonNegInt = 0
    value: float | None = None
    bounds: list[float] = []
    counts: list[NonNegInt] = []
    sum: float | None = None
    count: NonNegInt = 0
    scale: int = 0
    zero_count: NonNegInt = 0
    positive_offset: int = 0
    positive_counts: list[NonNegInt] = []
    negative_offset: int = 0
    negative_counts: list[NonNegInt] = []
    attributes: Attributes = {}
    resource: Attributes = {}
    scope: str = ""
    scope_version: str = ""

    def __post_init__(self) -> None:
        if self.kind in ("sum", "gauge"):
            if self.value is None:
                raise ValueError(f"a {self.kind} point needs a value - at `$.value`")
        elif self.kind == "histogram" and self.counts and len(self.counts) != len(self.bounds) + 1:
            raise ValueError("a histogram needs one count more than bounds - at `$.counts`")


class OtelLog(EventBase, frozen=True, tag="otel_log"):
    """One OTLP log record, as received (``POST /v1/logs``); a non-string body is JSON text."""

    event_name: str = ""
    body: str = ""
    severity_number: Severity = 0
    severity_text: str = ""
    time_unix_nano: NonNegInt = 0
    observed_time_unix_nano: NonNegInt = 0
    trace_id: str = ""
    span_id: str = ""
    attributes: Attributes = {}
    resource: Attributes = {}
    scope: str = ""
    scope_version: str = ""


Event = (
    RunQueued
    | RunStarted
    | RunFinished
    | BusMessage
    | ApiRequest
    | AgentFallback
    | LoopStarted
    | LoopStopped
    | IterationCompleted
    | SessionStarted
    | SessionEnded
    | ContextUsage
    | ContextReboot
    | TestsReported
    | ResourceSample
    | MetricUpdate
    | MetricsReset
    | OtelMetric
    | OtelLog
)

EVENT_CLASSES: Final[tuple[type[EventBase], ...]] = (
    RunQueued,
    RunStarted,
    RunFinished,
    BusMessage,
    ApiRequest,
    AgentFallback,
    LoopStarted,
    LoopStopped,
    IterationCompleted,
    SessionStarted,
    SessionEnded,
    ContextUsage,
    ContextReboot,
    TestsReported,
    ResourceSample,
    MetricUpdate,
    MetricsReset,
    OtelMetric,
    OtelLog,
)

#: tag -> event class, in catalogue order.
EVENT_TYPES: Final[dict[str, type[EventBase]]] = {
    str(msgspec.inspect.type_info(cls).tag): cls  # type: ignore[attr-defined]
    for cls in EVENT_CLASSES
}

_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)


def decode_event(data: bytes | str) -> Event:
    """Decode and validate one JSON event; raises ``msgspec.ValidationError`` or ``DecodeError``."""
    return _decoder.decode(data)


def encode_events(events: list[Event]) -> bytes:
    """Encode events as JSONL: one object per line, each ``\\n``-terminated."""
    return _encoder.encode_lines(events)


def stamp(events: list[Event], now: float | None = None) -> list[Event]:
    """Return ``events`` with every missing ``ts`` set to ``now`` (default: the wall clock)."""
    if all(ev.ts is not None for ev in events):
        return events
    when = time.time() if now is None else now
    return [ev if ev.ts is not None else msgspec.structs.replace(ev, ts=when) for ev in events]


def event_json_schema(union: Any = Event) -> dict[str, Any]:
    """The JSON Schema of the union (or of ``union``: with declared types), for producers in
    other languages."""
    schema: dict[str, Any] = msgspec.json.schema(union)
    schema["title"] = "tally event, schema v1"
    return schema
