"""Exemplars: each bucket keeps the latest observation, pointing at its event's position in the
log; the same log gives the same exemplars however it is batched, read or reset."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from bus.events import (
    Event,
    IterationCompleted,
    MetricsReset,
    RunFinished,
    RunStarted,
)
from bus.reader import BusReader
from bus.writer import BusConfig, BusWriter
from projections import exemplars
from projections.config import ProjectionConfig
from projections.fold import Projection
from projections.replay import fold_batches, listed
from server.replay import replay
from tests.support.families import rendered
from tests.support.workload import mixed_events

T0 = 1_700_000_000.0


def write(data_dir: Path, events: list[Event], batch: int = 1000) -> list[int]:
    """Append ``events``; their positions."""
    offsets: list[int] = []
    with BusWriter(data_dir, BusConfig(durability="never")) as writer:
        for i in range(0, len(events), batch):
            offsets += writer.append(events[i : i + batch])
    return offsets


def run(run_id: str, duration: float, ts: float, status: str = "completed") -> RunFinished:
    return RunFinished(
        run_id=run_id,
        project="p",
        agent="claude",
        status=status,  # type: ignore[arg-type]
        duration_s=duration,
        ts=ts,
    )


def iteration(loop_id: str, duration: float, ts: float) -> IterationCompleted:
    return IterationCompleted(
        loop_id=loop_id, iteration=1, duration_s=duration, success=True, ts=ts
    )


def exemplars_of(projection: Projection, family: str) -> dict[str, dict[str, object]]:
    """``{"<labels> le": exemplar}`` of one family in the JSON export."""
    doc = json.loads(rendered(projection, "json"))
    [fam] = [f for f in doc["families"] if f["name"] == family]
    return {
        f"{','.join(s['labels'].values())} {le}": e
        for s in fam["series"]
        for le, e in s.get("exemplars", {}).items()
    }


def state(projection: Projection) -> bytes:
    return msgspec.msgpack.encode(projection.export_state())


def test_each_bucket_keeps_its_latest_observation_and_where_its_event_is(data_dir: Path) -> None:
    events: list[Event] = [
        run("r1", 4.2, T0 + 1),
        run("r2", 3.0, T0 + 2),  # the same bucket (le=5), later: it wins
        run("r3", 100.0, T0 + 3),
        run("r4", 4.0, T0 + 4, status="failed"),  # another series
        iteration("L1", 0.3, T0 + 5),
        iteration("L1", 7.0, T0 + 6),
        iteration("L2", 0.4, T0 + 7),
        run("r5", 3.5, T0 + 1.5),  # behind the clock: latest in log order still
    ]
    at = write(data_dir, events, batch=3)
    text = rendered(replay(data_dir, config=ProjectionConfig()), "openmetrics").decode()
    lines = [line for line in text.splitlines() if " # {" in line]
    assert lines == [
        'conductor_run_duration_seconds_bucket{agent="claude",status="completed",le="5.0"} 3 '
        f'# {{run_id="r5",offset="{at[7]}"}} 3.5 {T0 + 1.5}',
        'conductor_run_duration_seconds_bucket{agent="claude",status="completed",le="120.0"} 4 '
        f'# {{run_id="r3",offset="{at[2]}"}} 100 {T0 + 3}',
        'conductor_run_duration_seconds_bucket{agent="claude",status="failed",le="5.0"} 1 '
        f'# {{run_id="r4",offset="{at[3]}"}} 4 {T0 + 4}',
        f'ralph_loop_iteration_duration_seconds_bucket{{loop="L1",le="0.5"}} 1 '
        f'# {{loop_id="L1",offset="{at[4]}"}} 0.3 {T0 + 5}',
        f'ralph_loop_iteration_duration_seconds_bucket{{loop="L1",le="10.0"}} 2 '
        f'# {{loop_id="L1",offset="{at[5]}"}} 7 {T0 + 6}',
        f'ralph_loop_iteration_duration_seconds_bucket{{loop="L2",le="0.5"}} 1 '
        f'# {{loop_id="L2",offset="{at[6]}"}} 0.4 {T0 + 7}',
    ]


def test_any_batching_and_reading_gives_the_exemplars_of_one_fold(data_dir: Path) -> None:
    """Hundreds of small batches (exemplars waiting past ``MAX_PINNED`` lists), the state
    read in between or not: the same bytes as folding the whole log at once."""
    events = list(mixed_events(6000, seed=11))
    at = write(data_dir, events)
    config = ProjectionConfig()
    whole = Projection(config)
    whole.fold_events(events, listed(at))
    expected = state(whole)
    assert b"offset" in rendered(whole, "json")

    batches = list(BusReader(data_dir, quarantine=False, chunk_bytes=1024).read_from(0))
    assert len(batches) > 2 * exemplars.MAX_PINNED
    for read_every in (0, 7, 50):
        projection = Projection(config)
        for i, batch in enumerate(batches):
            projection.fold_batch(batch)
            if read_every and i % read_every == 0:
                projection.families()
        projection.offset = 0
        assert state(projection) == expected, read_every
    again = replay(data_dir, config=config)
    assert rendered(again, "openmetrics") == rendered(
        replay(data_dir, config=config), "openmetrics"
    )


def test_a_reset_clears_the_exemplars_with_their_series(data_dir: Path) -> None:
    events: list[Event] = [
        run("before", 4.0, T0 + 1),
        iteration("L1", 0.3, T0 + 2),
        MetricsReset(prefix="conductor_run_duration", ts=T0 + 3),
        run("after", 2.0, T0 + 4),
        MetricsReset(prefix="ralph_loop_iteration_duration", ts=T0 + 5),
    ]
    at = write(data_dir, events)
    projection = fold_batches(
        Projection(ProjectionConfig()),
        BusReader(data_dir, quarantine=False).read_from(0),
    )
    assert exemplars_of(projection, "conductor_run_duration_seconds") == {
        "claude,completed 5": {
            "labels": {"run_id": "after", "offset": str(at[3])},
            "value": 2.0,
            "ts": T0 + 4,
        }
    }
    assert exemplars_of(projection, "ralph_loop_iteration_duration_seconds") == {}


def test_events_folded_without_positions_have_no_exemplars() -> None:
    projection = Projection(ProjectionConfig())
    projection.fold_events([run("r1", 4.0, T0), iteration("L1", 0.3, T0)])
    assert exemplars_of(projection, "conductor_run_duration_seconds") == {}
    assert b" # {" not in rendered(projection, "openmetrics")


def test_unstamped_events_take_the_clock_and_overflow_loops_keep_the_position() -> None:
    events: list[Event] = [  # a writer stamps ts: unstamped ones come from folding directly
        RunStarted(run_id="r", project="p", ts=T0),
        RunFinished(run_id="r", project="p", duration_s=2.0),  # no ts: at the clock
        iteration("A", 0.3, T0 + 1),
        iteration("B", 0.3, T0 + 2),  # past the series limit: the __overflow__ loop
    ]
    projection = Projection(ProjectionConfig(max_series_per_family=1))
    projection.fold_events(events, listed([10, 20, 30, 40]))
    assert exemplars_of(projection, "conductor_run_duration_seconds") == {
        "unknown,completed 5": {"labels": {"run_id": "r", "offset": "20"}, "value": 2.0, "ts": T0}
    }
    loops = exemplars_of(projection, "ralph_loop_iteration_duration_seconds")
    assert loops["__overflow__ 0.5"]["labels"] == {"loop_id": "__overflow__", "offset": "40"}


def test_a_replay_with_exemplars_is_valid_openmetrics(data_dir: Path) -> None:
    """The reference parser reads every exemplar of a mixed log back, as the JSON has them."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    def key(name: str, labels: dict[str, str]) -> tuple[str, float, tuple[tuple[str, str], ...]]:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        return name.removesuffix("_bucket"), float(labels["le"]), rest

    write(data_dir, list(mixed_events(3000, seed=2)))
    projection = replay(data_dir, config=ProjectionConfig())
    parsed = {
        key(s.name, s.labels): (s.exemplar.labels, s.exemplar.value)
        for f in text_string_to_metric_families(rendered(projection, "openmetrics").decode())
        for s in f.samples
        if s.exemplar is not None
    }
    doc = json.loads(rendered(projection, "json"))
    held = {
        key(f["name"], {**s["labels"], "le": le}): (e["labels"], e["value"])
        for f in doc["families"]
        for s in f["series"]
        for le, e in s.get("exemplars", {}).items()
    }
    assert len(parsed) > 20
    assert parsed == held
