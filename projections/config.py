"""Projection settings: the ``[projections]`` table of ``tally.toml``.

Rule: configuration is a frozen value passed in explicitly; it is validated
when built (or decoded) and never read from the environment.
"""

from __future__ import annotations

import hashlib
import math
import re
from itertools import pairwise
from typing import Final

import msgspec

from bus.user_types import EventSchema, EventTypeDecl, check_event_types, event_schema
from projections.catalogue.buckets import DEFAULT_BUCKETS, ITERATION_BUCKETS
from projections.rules.spec import Rule, check_rules

__all__ = ["DROPPED_ATTRIBUTES", "OtlpSettings", "ProjectionConfig"]

_PREFIX: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
#: Prefixes whose families belong to someone else (see ``catalogue.RESERVED_PREFIXES``).
_TAKEN: Final = ("conductor", "tally")


def _check_buckets(field: str, buckets: tuple[float, ...]) -> None:
    if not buckets:
        raise ValueError(f"{field}: needs at least one bucket bound")
    for b in buckets:
        if not math.isfinite(b):
            raise ValueError(f"{field}: bound {b!r} is not finite (+Inf is implicit)")
    for lo, hi in pairwise(buckets):
        if not lo < hi:
            raise ValueError(f"{field}: bounds must ascend strictly, got {lo!r} then {hi!r}")


#: Attributes that identify a person, a session or a request: high-cardinality ids that
#: are not labels unless a metric's ``labels`` names them.
DROPPED_ATTRIBUTES: Final = (
    "session.id",
    "user.account_uuid",
    "user.id",
    "user.email",
    "organization.id",
    "prompt.id",
    "service.instance.id",
)


class OtlpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How OTLP data points become series (the fold's part of ``[otlp]`` in tally.toml).

    A metric listed in ``labels`` (by its OpenTelemetry name) gets exactly those
    attributes as labels (point attributes, else resource attributes); any other gets
    every point attribute but ``drop_attributes``, and the resource attributes in
    ``resource_attributes``.
    """

    drop_attributes: tuple[str, ...] = DROPPED_ATTRIBUTES
    resource_attributes: tuple[str, ...] = ("service.name",)
    labels: dict[str, tuple[str, ...]] = {}
    #: Cumulative streams remembered (least recently updated forgotten first).
    max_streams: int = 100_000

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise ValueError("max_streams: must be at least 1")

    def __hash__(self) -> int:  # ``labels`` is a dict: configurations are cache keys
        labels = tuple(sorted(self.labels.items()))
        return hash((self.drop_attributes, self.resource_attributes, labels, self.max_streams))


class ProjectionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How events are folded: family names, bucket layouts, guards and windows.

    Raises ``ValueError`` when built with invalid values (``msgspec.ValidationError``
    when decoded from TOML/JSON), naming the field.
    """

    #: ``P`` in the loop families (``P_iterations_total`` ...): letters, digits, ``_``.
    loop_prefix: str = "ralph_loop"
    #: Upper bounds of ``P_iteration_duration_seconds`` (strictly ascending, finite).
    iteration_buckets: tuple[float, ...] = ITERATION_BUCKETS
    #: Upper bounds of histograms created by ``metric`` events.
    default_buckets: tuple[float, ...] = DEFAULT_BUCKETS
    #: Series per family (and loops tracked) before updates go to the overflow series.
    max_series_per_family: int = 10_000
    #: Sliding window of summaries, in event-time seconds.
    summary_window_s: float = 600.0
    #: Number of sub-windows the summary window rotates through.
    summary_age_buckets: int = 5
    #: A labelled series not updated for this many event-time seconds is not rendered
    #: (its state is kept: it comes back where it was); 0 = never hidden. Rendering only:
    #: not part of ``fingerprint``.
    series_ttl_s: float = 0.0
    #: A labelled series not updated for this many event-time seconds is freed (it comes
    #: back from zero: a counter reset); 0 = never. At least ``series_ttl_s`` when both set.
    forget_after_s: float = 0.0
    #: OTLP data points (set from ``[otlp]`` in tally.toml).
    otlp: OtlpSettings = OtlpSettings()
    #: User rules (set from ``[[rules]]`` in tally.toml): events -> families.
    rules: tuple[Rule, ...] = ()
    #: User-declared event types (set from ``[[event_types]]`` in tally.toml): folded and
    #: counted like the built-ins, read by rules.
    event_types: tuple[EventTypeDecl, ...] = ()

    def __post_init__(self) -> None:
        prefix = self.loop_prefix
        if not _PREFIX.fullmatch(prefix) or prefix.endswith("_"):
            raise ValueError(
                f"loop_prefix: {prefix!r} is not a metric name prefix "
                "(a letter, then letters, digits or '_', not ending in '_')"
            )
        if prefix in _TAKEN or prefix.startswith(tuple(f"{t}_" for t in _TAKEN)):
            raise ValueError(f"loop_prefix: {prefix!r} collides with conductor_/tally_ names")
        _check_buckets("iteration_buckets", self.iteration_buckets)
        _check_buckets("default_buckets", self.default_buckets)
        if self.max_series_per_family < 1:
            raise ValueError("max_series_per_family: must be at least 1")
        if not (math.isfinite(self.summary_window_s) and self.summary_window_s > 0):
            raise ValueError("summary_window_s: must be a positive number of seconds")
        if self.summary_age_buckets < 1:
            raise ValueError("summary_age_buckets: must be at least 1")
        for key in ("series_ttl_s", "forget_after_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key}: must be a number of seconds >= 0 (0 = off)")
        if 0 < self.forget_after_s < self.series_ttl_s:
            raise ValueError(
                f"forget_after_s: {self.forget_after_s!r} is less than series_ttl_s "
                f"{self.series_ttl_s!r} (a series is hidden before it is forgotten)"
            )
        check_event_types(self.event_types)
        check_rules(self.rules, (*(f"{t}_" for t in _TAKEN), f"{prefix}_"))
        for rule in self.rules:
            if rule.buckets:
                _check_buckets(f"rule {rule.name!r}: buckets", rule.buckets)

    @property
    def schema(self) -> EventSchema:
        """The event classes folded: the built-ins and ``event_types``."""
        return event_schema(self.event_types)

    def fingerprint(self) -> str:
        """A short digest of every setting that shapes the folded state: state folded under
        another config is not reusable. ``series_ttl_s`` only hides series at render time,
        so it is left out (changing it keeps checkpoints)."""
        doc = msgspec.to_builtins(self)
        del doc["series_ttl_s"]
        if not self.forget_after_s:  # as before series could be forgotten
            del doc["forget_after_s"]
        if not self.event_types:  # as before types could be declared: those snapshots still fit
            del doc["event_types"]
        return hashlib.sha256(msgspec.json.encode(doc)).hexdigest()[:16]
