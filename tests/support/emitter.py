"""A writer process for the concurrency tests: `tally emit -` once per batch.

Usage: python emitter.py WRITER BATCHES PER_BATCH TORN
With TORN=1, writer 0 appends a partial line halfway through, under the append
lock, as a writer that died mid-line would leave it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path


def batch_lines(writer: int, first: int, count: int) -> bytes:
    return b"".join(
        b'{"type":"bus_message","project":"w%d","msg_type":"SEQ","msg_id":"%d"}\n' % (writer, i)
        for i in range(first, first + count)
    )


def tear(bus: Path) -> None:
    with (bus / "LOCK").open("ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        last = sorted(p for p in bus.iterdir() if p.suffix == ".jsonl")[-1]
        with last.open("ab") as segment:
            segment.write(b'{"type":"bus_message","proj')


def main() -> None:
    writer, batches, per_batch, torn = map(int, sys.argv[1:5])
    bus = Path(os.environ["TALLY_DATA_DIR"]) / "bus"
    for b in range(batches):
        subprocess.run(
            [sys.executable, "-m", "server", "emit", "-"],
            input=batch_lines(writer, b * per_batch, per_batch),
            check=True,
            capture_output=True,
        )
        if torn and writer == 0 and b == batches // 2:
            tear(bus)


if __name__ == "__main__":
    main()
