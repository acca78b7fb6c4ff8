"""A writer process for the concurrency and crash tests: ``python -m tests.support.append_worker``.

Modes:
  append DATA_DIR WRITER COUNT BATCH SEGMENT_BYTES GO_FILE
      wait for GO_FILE, append COUNT events in batches of BATCH (tagged with the
      writer id and a sequence number), print "done".
  loop DATA_DIR WRITER BATCH
      append the same batch of BATCH events (sequence 0..BATCH-1) until killed.
  torn DATA_DIR
      take the append lock, write half a line to the active segment, print
      "holding" and sleep while holding the lock (the test SIGKILLs it).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from bus.events import BusMessage, Event, encode_events
from bus.segments import bus_dir, list_segments, lock_path, segment_name
from bus.writer import BusConfig, BusWriter


def tagged(writer: str, first: int, count: int) -> list[Event]:
    """Events carrying the writer id (``project``) and a sequence number (``msg_id``)."""
    return [
        BusMessage(ts=1.0, project=writer, msg_type="seq", msg_id=str(seq))
        for seq in range(first, first + count)
    ]


def append(
    data_dir: Path, writer: str, count: int, *, batch: int, segment_bytes: int, go: Path
) -> None:
    config = BusConfig(segment_bytes=segment_bytes, durability="never")
    with BusWriter(data_dir, config) as bus:
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.001)
        for first in range(0, count, batch):
            bus.append(tagged(writer, first, min(batch, count - first)))
            os.sched_yield()
    print("done", flush=True)


def loop(data_dir: Path, writer: str, batch: int) -> None:
    # One batch encoded once and appended again and again, so that nearly all
    # the time is spent inside os.write, where a SIGKILL tears the batch.
    data = encode_events(tagged(writer, 0, batch))
    with BusWriter(data_dir, BusConfig(durability="never")) as bus:
        print("ready", flush=True)
        while True:
            bus.append_encoded(data, batch)


def torn(data_dir: Path) -> None:
    bus = bus_dir(data_dir)
    bus.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(lock_path(bus), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    segments = list_segments(bus)
    base = segments[-1].base if segments else 0
    fd = os.open(bus / segment_name(base), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b'{"type":"bus_message","project":"torn","msg_type":"se')
    print("holding", flush=True)
    time.sleep(60)


def main(argv: list[str]) -> None:
    mode, data_dir = argv[0], Path(argv[1])
    match mode:
        case "append":
            append(
                data_dir,
                argv[2],
                int(argv[3]),
                batch=int(argv[4]),
                segment_bytes=int(argv[5]),
                go=Path(argv[6]),
            )
        case "loop":
            loop(data_dir, argv[2], int(argv[3]))
        case "torn":
            torn(data_dir)
        case _:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
