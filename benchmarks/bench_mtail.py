"""tally replay beside mtail, the regex log-tailing peer, on the same JSONL log.

Run: ``python -m benchmarks.bench_mtail [--events N] [--repeat R] [--out FILE]``. The log is
``workload.write_log`` (seeded) in a temporary directory; mtail reads the bus segment
itself (segments are concatenated into one file, untimed, only when there are several).
Timed, each the median of ``--repeat`` runs after one warm-up run:

- ``mtail``: ``mtail --one_shot`` with ``benchmarks/mtail/tally.mtail`` (the equivalent of
  tally's fold, see that file and benchmarks/README.md), a whole process, from spawn to exit;
- ``mtail minimal``: the same with a one-regex program (count ``bus_message`` lines), the
  floor of mtail's per-line cost whatever the program;
- ``tally replay``: ``projections.replay.replay`` of the data directory, in this process;
- ``tally cli``: ``python -m server replay --format prometheus``, a whole process, to
  compare process with process.

``replay.speedup_vs_mtail`` is mtail's time over tally replay's (target >= 15). Every mtail
run is checked: it must exit 0, log no runtime error, and count every event.
Prints a table and writes JSON; ``run(n_events, repeat)`` returns the flat dict.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from benchmarks.report import machine, write_json
from bus.segments import bus_dir, list_segments
from projections.config import ProjectionConfig
from projections.exposition.prometheus import render_prometheus
from server.parallel import replay_parallel
from server.replay import replay
from tests.support.workload import write_log

T = TypeVar("T")

DEFAULT_OUT: Final = Path(__file__).with_name("results-mtail.json")
PROGRAM_DIR: Final = Path(__file__).with_name("mtail")
SEED: Final = 42
TARGET_SPEEDUP: Final = 15.0
#: Unlabelled counters every mtail run must agree on with tally (a guard, not the test).
CHECKED: Final = (
    "conductor_messagebus_appends_total",
    "conductor_completed_runs_total",
    "conductor_failed_runs_total",
)
#: The floor: one regex, one counter.
MINIMAL_PROGRAM: Final = """\
counter conductor_messagebus_appends_total
/^\\{"type":"bus_message",/ {
  conductor_messagebus_appends_total++
}
"""


class MtailError(RuntimeError):
    """Raised when mtail is missing, fails, or reports a runtime error in the program."""


def mtail_binary() -> str:
    """The path of the ``mtail`` executable (Debian's package installs /usr/bin/mtail)."""
    found = shutil.which("mtail") or ("/usr/bin/mtail" if Path("/usr/bin/mtail").exists() else None)
    if found is None:
        raise MtailError("mtail not found: install Debian's mtail package (apt-get install mtail)")
    return found


def mtail_command(log: Path, progs: Path = PROGRAM_DIR) -> list[str]:
    """``mtail --one_shot`` over ``log`` with the programs in ``progs``, Prometheus text out.

    ``--port 0`` on loopback: mtail binds its HTTP port even in one-shot mode, and two
    runs on the default port 3903 collide.
    """
    return [
        mtail_binary(),
        "--one_shot",
        "--one_shot_format",
        "prometheus",
        "--emit_prog_label=false",
        "--progs",
        str(progs),
        "--logs",
        str(log),
        "--address",
        "127.0.0.1",
        "--port",
        "0",
        "--logtostderr",
    ]


def mtail_version() -> str:
    """The first line of ``mtail --version``."""
    proc = subprocess.run([mtail_binary(), "--version"], check=True, capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.stdout else "unknown"


def run_mtail(log: Path, progs: Path = PROGRAM_DIR) -> bytes:
    """Run mtail one-shot over ``log``; its Prometheus text. ``MtailError`` on any failure."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.run(
            mtail_command(log, progs), check=False, stdout=subprocess.PIPE, stderr=stderr
        )
        stderr.seek(0)
        log_text = stderr.read().decode(errors="replace")
    errors = [line for line in log_text.splitlines() if line.startswith(("E", "F", "Error"))]
    if proc.returncode != 0 or errors:
        detail = "\n".join(errors[:5] or log_text.splitlines()[-5:])
        raise MtailError(f"mtail exited {proc.returncode} on {log}:\n{detail}")
    return proc.stdout


def compile_program(progs: Path = PROGRAM_DIR) -> None:
    """``mtail --compile_only``; ``MtailError`` with the compiler's message if it fails."""
    proc = subprocess.run(
        [mtail_binary(), "--compile_only", "--progs", str(progs), "--logtostderr"],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("I")]
        raise MtailError("mtail --compile_only failed:\n" + "\n".join(errors))


def sample_value(text: bytes, name: str) -> float:
    """The value of the unlabelled sample ``name`` in Prometheus text (``KeyError`` if absent)."""
    prefix = name.encode() + b" "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise KeyError(name)


def labelled_total(text: bytes, name: str) -> float:
    """The sum of every labelled sample of ``name`` in Prometheus text."""
    prefix = name.encode() + b"{"
    return sum(
        float(line.rsplit(b" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def single_log_file(data_dir: Path, scratch: Path) -> tuple[Path, int]:
    """The log as one file for mtail: the segment itself, or (untimed) all segments joined."""
    segments = [seg.path for seg in list_segments(bus_dir(data_dir))]
    if len(segments) == 1:
        return segments[0], 1
    joined = scratch / "log.jsonl"
    with joined.open("wb") as out:
        for path in segments:
            with path.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    return joined, len(segments)


def _median_seconds(
    fn: Callable[[], T], repeat: int, check: Callable[[T], None] | None = None
) -> float:
    """Median wall time of ``repeat`` runs of ``fn`` after one warm-up run.

    ``check`` (untimed) is given each run's result.
    """
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        if check is not None:
            check(result)
        if i:
            times.append(elapsed)
    return statistics.median(times)


def run(n_events: int, repeat: int) -> dict[str, float]:
    """Time mtail (full and minimal programs) and tally (in process and CLI) on one log."""
    with tempfile.TemporaryDirectory(prefix="tally-bench-mtail-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        end = write_log(data_dir, n_events, SEED)
        log, segments = single_log_file(data_dir, root)
        minimal = root / "minimal"
        minimal.mkdir()
        (minimal / "minimal.mtail").write_text(MINIMAL_PROGRAM)
        compile_program()
        config = ProjectionConfig()

        tally_text = render_prometheus(replay(data_dir, config=config).families())
        expected = {name: sample_value(tally_text, name) for name in CHECKED}

        def check_full(text: bytes) -> None:
            folded = labelled_total(text, "tally_events_folded_total")
            if folded != n_events:
                raise MtailError(f"mtail folded {folded:.0f} events, not {n_events}")
            for name, value in expected.items():
                if sample_value(text, name) != value:
                    raise MtailError(f"mtail {name} = {sample_value(text, name)}, tally {value}")

        def check_floor(text: bytes) -> None:
            name = "conductor_messagebus_appends_total"
            if sample_value(text, name) != expected[name]:
                raise MtailError(f"minimal mtail {name} = {sample_value(text, name)}")

        def cli() -> None:
            subprocess.run(
                [sys.executable, "-m", "server", "replay", "--data-dir", str(data_dir)],
                check=True,
                stdout=subprocess.DEVNULL,
            )

        mtail_s = _median_seconds(lambda: run_mtail(log), repeat, check_full)
        minimal_s = _median_seconds(lambda: run_mtail(log, minimal), repeat, check_floor)
        # tally replay's default: two processes where the machine has two cores
        tally_s = _median_seconds(
            lambda: replay_parallel(data_dir, config=config, min_bytes=0), repeat
        )
        one_core_s = _median_seconds(lambda: replay(data_dir, config=config), repeat)
        cli_s = _median_seconds(cli, repeat)
    return {
        "mtail.log_events": float(n_events),
        "mtail.log_bytes": float(end),
        "mtail.log_segments": float(segments),
        "mtail.one_shot_seconds": mtail_s,
        "mtail.one_shot_events_per_s": n_events / mtail_s,
        "mtail.minimal_seconds": minimal_s,
        "mtail.minimal_events_per_s": n_events / minimal_s,
        "mtail.tally_replay_seconds": tally_s,
        "mtail.tally_replay_events_per_s": n_events / tally_s,
        "mtail.tally_cli_seconds": cli_s,
        "mtail.tally_replay_one_core_seconds": one_core_s,
        "replay.speedup_vs_mtail_one_core": mtail_s / one_core_s,
        "replay.speedup_vs_mtail": mtail_s / tally_s,
        "replay.speedup_vs_mtail_minimal": minimal_s / tally_s,
        "replay.speedup_vs_mtail_cli": mtail_s / cli_s,
    }


def table(results: dict[str, float]) -> str:
    rows = [f"{'figure':36s} {'value':>14s}"]
    for key, value in results.items():
        if key.endswith("_per_s"):
            text = f"{value:14,.0f}"
        elif key.endswith("_seconds"):
            text = f"{value:13.3f}s"
        elif "speedup" in key:
            text = f"{value:13.1f}x"
        else:
            text = f"{value:14,.0f}"
        rows.append(f"{key:36s} {text}")
    speedup = results["replay.speedup_vs_mtail"]
    verdict = "met" if speedup >= TARGET_SPEEDUP else "MISSED"
    rows.append(f"replay.speedup_vs_mtail target >= {TARGET_SPEEDUP:g}: {verdict}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_mtail", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    results = run(args.events, args.repeat)
    print(table(results))
    meta = machine(
        mtail=mtail_version(),
        repeat=args.repeat,
        loadavg_before=load_before,
        loadavg_after=os.getloadavg(),
    )
    write_json(args.out, meta, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
