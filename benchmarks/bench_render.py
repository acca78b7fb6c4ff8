"""Render speed and memory: tally's Prometheus text beside prometheus_client's generate_latest.

Rule: both sides render the same series in the same run; times are medians of
several repetitions after a warm-up. Prints a table and writes JSON.

    python -m benchmarks.bench_render [--out FILE] [--reps N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from projections.exposition.prometheus import render_prometheus
from projections.metrics.families import CounterFamily, HistogramFamily

DEFAULT_OUT: Final = Path(__file__).with_name("results-render.json")
_METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH")
_BOUNDS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_NAME: Final = "bench_requests_total"


def _labels(i: int) -> tuple[str, str]:
    return (_METHODS[i % len(_METHODS)], f"/api/v1/items/{i}")


def _value(i: int) -> float:
    """Integral counts spread over 0..100k (most above any small-int cache)."""
    return float(i * 7919 % 100_003)


def _tally_counters(n: int) -> CounterFamily:
    family = CounterFamily(_NAME, "Requests handled.", ("method", "path"), max_series=n + 1)
    for i in range(n):
        family.inc(_labels(i), _value(i))
    return family


def _client_counters(n: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter(_NAME, "Requests handled.", ("method", "path"), registry=registry)
    for i in range(n):
        counter.labels(*_labels(i)).inc(_value(i))
    return registry


def _observations(n: int) -> list[tuple[tuple[str], float]]:
    return [((f"loop-{i % n}",), (i * 37 % 1000) / 7.0) for i in range(n * 20)]


def _tally_mix(counters: int, histograms: int) -> list[CounterFamily | HistogramFamily]:
    hist = HistogramFamily(
        "bench_duration_seconds", "Durations.", ("loop",), bounds=_BOUNDS, max_series=histograms + 1
    )
    for labels, v in _observations(histograms):
        hist.observe(labels, v)
    return [_tally_counters(counters), hist]


def _client_mix(counters: int, histograms: int) -> CollectorRegistry:
    registry = _client_counters(counters)
    hist = Histogram(
        "bench_duration_seconds", "Durations.", ("loop",), buckets=_BOUNDS, registry=registry
    )
    for labels, v in _observations(histograms):
        hist.labels(*labels).observe(v)
    return registry


def _median_ms(
    fn: Callable[[], object], reps: int, before: Callable[[], None] | None = None
) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _bump(family: CounterFamily) -> Callable[[], None]:
    """Change every value between repetitions: the worst case for text reuse."""

    def bump() -> None:
        values = family.values
        for labels in values:
            values[labels] += 1.0

    return bump


def _memory_per_series(n: int) -> tuple[float, float]:
    """Bytes per series of a CounterFamily (labels included), then of its render cache."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    family = _tally_counters(n)
    state = tracemalloc.get_traced_memory()[0] - base
    body = render_prometheus([family])
    cache = tracemalloc.get_traced_memory()[0] - base - state - len(body)
    tracemalloc.stop()
    del body
    return state / n, cache / n


def _size(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 else str(n)


Row = tuple[str, float, float, float, float]


def _counters_case(n: int, reps: int, results: dict[str, float | str | int]) -> Row:
    family = _tally_counters(n)
    registry = _client_counters(n)
    assert render_prometheus([family]).count(b"\n") == n + 2

    def ours() -> bytes:
        return render_prometheus([family])

    changed = _median_ms(ours, reps, _bump(family))
    unchanged = _median_ms(ours, reps)
    cold_times = []
    for _ in range(min(reps, 3)):
        fresh = CounterFamily(_NAME, family.help, family.label_names, max_series=n + 1)
        fresh.values.update(family.values)
        gc.collect()
        start = time.perf_counter()
        render_prometheus([fresh])
        cold_times.append(time.perf_counter() - start)
    cold = statistics.median(cold_times) * 1000.0
    client = _median_ms(lambda: generate_latest(registry), reps)
    key = _size(n)
    results[f"render.ms_{key}"] = round(changed, 2)
    results[f"render.ms_{key}_unchanged"] = round(unchanged, 2)
    results[f"render.ms_{key}_cold"] = round(cold, 2)
    results[f"render.prometheus_client_ms_{key}"] = round(client, 2)
    results[f"render.speedup_vs_prometheus_client_{key}"] = round(client / changed, 1)
    return (f"{key} counters", changed, unchanged, cold, client)


def _mix_case(
    counters: int, histograms: int, reps: int, results: dict[str, float | str | int]
) -> Row:
    counter, hist = _tally_mix(counters, histograms)
    assert isinstance(counter, CounterFamily)
    client_mix = _client_mix(counters, histograms)

    def ours() -> bytes:
        return render_prometheus([counter, hist])

    changed = _median_ms(ours, reps, _bump(counter))
    unchanged = _median_ms(ours, reps)
    client = _median_ms(lambda: generate_latest(client_mix), reps)
    key = f"mix_{_size(counters)}c_{_size(histograms)}h"
    results[f"render.ms_{key}"] = round(changed, 2)
    results[f"render.ms_{key}_unchanged"] = round(unchanged, 2)
    results[f"render.prometheus_client_ms_{key}"] = round(client, 2)
    results[f"render.speedup_vs_prometheus_client_{key}"] = round(client / changed, 1)
    return (
        f"{_size(counters)} counters + {histograms} hist.",
        changed,
        unchanged,
        math.nan,
        client,
    )


def run(reps: int, sizes: tuple[int, ...]) -> dict[str, float | str | int]:
    results: dict[str, float | str | int] = {
        "meta.python": platform.python_version(),
        "meta.reps": reps,
    }
    rows = [_counters_case(n, reps, results) for n in sizes]
    rows.append(_mix_case(sizes[-1] // 10, sizes[-1] // 100, reps, results))
    per_series, cache_per_series = _memory_per_series(sizes[-1])
    results["memory.bytes_per_counter_series"] = round(per_series, 1)
    results["memory.render_cache_bytes_per_series"] = round(cache_per_series, 1)

    print(
        f"{'workload':<30}{'tally ms':>9}{'unchanged':>10}{'cold':>8}"
        f"{'client ms':>10}{'speedup':>9}"
    )
    print("-" * 76)
    for name, changed, unchanged, cold, client in rows:
        print(
            f"{name:<30}{changed:>9.2f}{unchanged:>10.2f}{cold:>8.2f}{client:>10.2f}"
            f"{client / changed:>8.1f}x"
        )
    print(
        f"memory: {per_series:.0f} bytes per counter series (state, labels included), "
        f"{cache_per_series:.0f} bytes per series of render cache"
    )
    print("tally ms: every value changed between renders; unchanged: none; cold: no cache yet")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_render", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per case")
    parser.add_argument("--quick", action="store_true", help="1k and 10k series only")
    args = parser.parse_args(argv)
    sizes = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    results = run(max(1, args.reps), sizes)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
