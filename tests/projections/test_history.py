"""History sampling, pure: aligned boundaries, the default step, and the sampler against
``StepFold`` (what ``tally replay --step`` says) on the same log, however it is batched."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from bus.events import Event, LoopStarted, MetricUpdate
from bus.lines import Batch
from projections.config import ProjectionConfig
from projections.exposition.openmetrics import render_openmetrics
from projections.fold import Projection
from projections.history import BoundarySampler, boundary_span, default_step
from projections.metrics.summary import AnyFamily
from projections.replay import DurationError, StepFold
from server.live.sse import series_payload
from tests.support.workload import mixed_events

Points = dict[float, dict[tuple[str, tuple[str, ...]], Any]]


def _state(families: list[AnyFamily]) -> dict[tuple[str, tuple[str, ...]], Any]:
    out = {}
    for family in families:
        holder = family.values if hasattr(family, "values") else family.series
        for labels in holder:
            out[(family.name, labels)] = msgspec.json.decode(
                msgspec.json.encode(series_payload(family, labels))
            )
    return out


class _Recorder:
    """Stands in for StepFold's OpenMetrics history: keeps each sample set as payloads."""

    def __init__(self) -> None:
        self.points: Points = {}

    def add(self, timestamp: float, families: list[AnyFamily]) -> None:
        self.points[timestamp] = _state(families)


def _log(n: int) -> list[Event]:
    """A mixed log whose first ts is a whole second, with some events behind the clock and
    two without a ts."""
    start = LoopStarted(ts=1_700_000_000.0, loop_id="first")  # StepFold's t0: aligned
    events = [start, *mixed_events(n, seed=3, start_ts=1_700_000_000.0)]
    late = [
        MetricUpdate(ts=events[i].ts - 2.5, name="late_total", kind="counter", value=1.0)  # type: ignore[operator]
        for i in range(100, n, 400)
    ]
    for k, ev in enumerate(late):
        events.insert(100 + k * 401 + 1, ev)
    # unstamped events (external writers) move no clock: batches holding one take the slow path
    events.insert(1500, MetricUpdate(ts=None, name="unstamped_total", kind="counter", value=1.0))
    events.insert(2500, MetricUpdate(ts=None, name="unstamped_total", kind="counter", value=1.0))
    return events


def _batches(events: list[Event], size: int) -> list[Batch]:
    """The log in batches of ``size``, each event's position its index."""
    chunks = [(i, events[i : i + size]) for i in range(0, len(events), size)]
    return [
        Batch(i, i + len(chunk), chunk, offsets=list(range(i, i + len(chunk))))
        for i, chunk in chunks
    ]


def _sampled(
    events: list[Event], size: int, step_s: float, first_k: int
) -> tuple[Points, list[int]]:
    points: Points = {}
    positions: list[int] = []

    def sample(k: int, position: int, projection: Projection) -> None:
        points[k * step_s] = _state(projection.families())
        positions.append(position)

    sampler = BoundarySampler(
        Projection(ProjectionConfig()), step_s=step_s, first_k=first_k, sample=sample
    )
    for batch in _batches(events, size):
        sampler.add(batch)
    return points, positions


@pytest.mark.parametrize("size", [1, 37, 5000])
def test_sampler_says_what_step_fold_says_at_every_boundary(size: int) -> None:
    events = _log(3000)
    steps = StepFold(config=ProjectionConfig(), step_s=2.0)
    recorder = _Recorder()
    steps.history = recorder  # type: ignore[assignment]
    for batch in _batches(events, 1000):
        steps.add(batch)
    expected = recorder.points  # boundaries t0 + 2k, t0 a multiple of 2: aligned
    first_k = math.ceil(events[0].ts / 2.0)  # type: ignore[operator]
    got, positions = _sampled(events, size, 2.0, first_k)
    assert len(expected) > 10
    assert got == expected
    # each boundary's position: the first event that moved the clock past it
    passed = [
        next(i for i, ev in enumerate(events) if ev.ts is not None and ev.ts > b)
        for b in sorted(got)
    ]
    assert positions == passed


def test_boundaries_before_the_first_are_not_sampled() -> None:
    events = _log(600)
    first_k = math.ceil(events[0].ts / 1.0) + 3  # type: ignore[operator]
    got, _ = _sampled(events, 50, 1.0, first_k)
    assert min(got) == first_k * 1.0
    full, _ = _sampled(events, 50, 1.0, first_k - 3)
    assert got == {t: v for t, v in full.items() if t >= first_k}


def test_a_sampler_refuses_a_state_past_its_first_boundary() -> None:
    projection = Projection(ProjectionConfig())
    projection.clock.now = 100.5
    with pytest.raises(ValueError, match="already passed"):
        BoundarySampler(projection, step_s=1.0, first_k=100, sample=lambda *_: None)
    with pytest.raises(DurationError):
        BoundarySampler(projection, step_s=0.0, first_k=200, sample=lambda *_: None)


@pytest.mark.parametrize(
    ("from_s", "to_s", "step_s", "ks"),
    [
        (10.0, 20.0, 5.0, [2, 3]),  # 20 itself is left out: not final yet
        (9.0, 21.0, 5.0, [2, 3, 4]),
        (10.5, 10.6, 1.0, []),
        (-3.0, 2.0, 1.0, [-3, -2, -1, 0, 1]),
    ],
)
def test_boundary_span(from_s: float, to_s: float, step_s: float, ks: list[int]) -> None:
    assert list(boundary_span(from_s, to_s, step_s)) == ks


@pytest.mark.parametrize(
    ("since_s", "step_s"),
    [(3600.0, 15.0), (60.0, 1.0), (86400.0, 600.0), (300.0, 2.0), (1e9, 604800.0)],
)
def test_default_step_gives_at_most_240_points(since_s: float, step_s: float) -> None:
    assert default_step(since_s) == step_s


@pytest.mark.parametrize("size", [1, 37, 5000])
def test_a_sampled_projection_ends_equal_to_a_plain_fold_exemplars_included(size: int) -> None:
    events = _log(3000)
    sampler = BoundarySampler(
        Projection(ProjectionConfig()),
        step_s=2.0,
        first_k=math.ceil(events[0].ts / 2.0),  # type: ignore[operator]
        sample=lambda *_: None,
    )
    plain = Projection(ProjectionConfig())
    for batch in _batches(events, size):
        sampler.add(batch)
        plain.fold_batch(batch)
    got = render_openmetrics(sampler.projection.families())
    assert b"# {run_id=" in got  # exemplars point at their events
    assert got == render_openmetrics(plain.families())
