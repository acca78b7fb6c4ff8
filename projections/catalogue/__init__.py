"""The metric catalogue: every family tally can render, declared once (name, kind, help,
labels, buckets).

Rule: declarations only; no state, no folding. Names here are a contract: change
them on purpose. The rooms: ``spec`` (a declaration and the empty family built
from it), ``buckets`` (bucket layouts, the configuration's defaults included),
``conductor`` (conductor-loop's families), ``loops`` (the Ralph-loop table),
``self_metrics`` (``tally_*``, folded or the server's own), ``catalogue`` (all of
them under one configuration) and ``reference`` (the Markdown metric reference).
"""

from projections.catalogue.buckets import DEFAULT_BUCKETS as DEFAULT_BUCKETS
from projections.catalogue.buckets import EXPONENTIAL_BUCKETS as EXPONENTIAL_BUCKETS
from projections.catalogue.buckets import ITERATION_BUCKETS as ITERATION_BUCKETS
from projections.catalogue.buckets import REBOOT_RATIO_BUCKETS as REBOOT_RATIO_BUCKETS
from projections.catalogue.buckets import RUN_DURATION_BUCKETS as RUN_DURATION_BUCKETS
from projections.catalogue.buckets import SESSION_DURATION_BUCKETS as SESSION_DURATION_BUCKETS
from projections.catalogue.catalogue import RESERVED_PREFIXES as RESERVED_PREFIXES
from projections.catalogue.catalogue import Catalogue as Catalogue
from projections.catalogue.conductor import ACTIVE_RUNS as ACTIVE_RUNS
from projections.catalogue.conductor import AGENT_FALLBACKS as AGENT_FALLBACKS
from projections.catalogue.conductor import AGENT_RUNS as AGENT_RUNS
from projections.catalogue.conductor import API_REQUESTS as API_REQUESTS
from projections.catalogue.conductor import BUS_APPENDS as BUS_APPENDS
from projections.catalogue.conductor import COMPLETED_RUNS as COMPLETED_RUNS
from projections.catalogue.conductor import CONDUCTOR as CONDUCTOR
from projections.catalogue.conductor import CONDUCTOR_NAMES as CONDUCTOR_NAMES
from projections.catalogue.conductor import FAILED_RUNS as FAILED_RUNS
from projections.catalogue.conductor import QUEUED_RUNS as QUEUED_RUNS
from projections.catalogue.conductor import RUN_DURATION as RUN_DURATION
from projections.catalogue.loops import CONDITIONS as CONDITIONS
from projections.catalogue.loops import LOOP as LOOP
from projections.catalogue.loops import LOOP_SUFFIXES as LOOP_SUFFIXES
from projections.catalogue.loops import PER_LOOP as PER_LOOP
from projections.catalogue.loops import Feed as Feed
from projections.catalogue.loops import LoopFamily as LoopFamily
from projections.catalogue.loops import When as When
from projections.catalogue.loops import loop_specs as loop_specs
from projections.catalogue.self_metrics import APPEND_ERRORS as APPEND_ERRORS
from projections.catalogue.self_metrics import CHECKPOINT_OFFSET as CHECKPOINT_OFFSET
from projections.catalogue.self_metrics import CORRUPT_LINES as CORRUPT_LINES
from projections.catalogue.self_metrics import END_OFFSET as END_OFFSET
from projections.catalogue.self_metrics import EVENTS_FOLDED as EVENTS_FOLDED
from projections.catalogue.self_metrics import FOLDED_OFFSET as FOLDED_OFFSET
from projections.catalogue.self_metrics import OTLP_POINTS_REJECTED as OTLP_POINTS_REJECTED
from projections.catalogue.self_metrics import OTLP_RECORDS_REJECTED as OTLP_RECORDS_REJECTED
from projections.catalogue.self_metrics import OTLP_THROTTLED as OTLP_THROTTLED
from projections.catalogue.self_metrics import REJECT_REASONS as REJECT_REASONS
from projections.catalogue.self_metrics import REJECTED_EVENTS as REJECTED_EVENTS
from projections.catalogue.self_metrics import RULE_ERRORS as RULE_ERRORS
from projections.catalogue.self_metrics import SELF as SELF
from projections.catalogue.self_metrics import SERIES_OVERFLOW as SERIES_OVERFLOW
from projections.catalogue.self_metrics import SERVER as SERVER
from projections.catalogue.self_metrics import SSE_CONFLATED as SSE_CONFLATED
from projections.catalogue.self_metrics import SSE_FRAMES as SSE_FRAMES
from projections.catalogue.self_metrics import SSE_RESYNCS as SSE_RESYNCS
from projections.catalogue.self_metrics import SSE_SUBSCRIBERS as SSE_SUBSCRIBERS
from projections.catalogue.self_metrics import STALE_SERIES as STALE_SERIES
from projections.catalogue.self_metrics import UNKNOWN_EVENTS as UNKNOWN_EVENTS
from projections.catalogue.self_metrics import UPTIME as UPTIME
from projections.catalogue.spec import FamilySpec as FamilySpec
from projections.catalogue.spec import build_family as build_family
