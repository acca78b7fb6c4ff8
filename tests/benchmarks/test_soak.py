"""The soak benchmark (`python -m benchmarks.soak`) at a tiny size: retention really cuts,
the disk stays under its bound, and every replay and the server equal the uncompacted fold.

No timing is asserted: the figures are the benchmark's to report.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import soak


def test_a_tiny_soak_keeps_its_promises(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["--events", "24000", "--intervals", "2", "--retain-bytes", str(512 << 10)]
    args += ["--segment-bytes", str(128 << 10), "--checkpoint-every-events", "2000"]
    status = soak.main([*args, "--dir", str(tmp_path), "--out", str(out)])
    report = json.loads(out.read_text())
    summary, samples, final = report["summary"], report["samples"], report["final"]
    assert status == 0, final
    assert summary["final_equal"]
    assert final["replay_equal"] == dict.fromkeys(
        ("prometheus", "openmetrics", "json", "statsd"), True
    )
    assert summary["replay_equal_every_sample"]
    assert [s["events"] for s in samples] == [12_000, 24_000]
    assert 6.9 < summary["event_days"] <= 7.0
    # retention cut the log (so the replays above started from a base snapshot): of the
    # 3.3 MB written, at least 1 MiB is gone, and what is left is within the bound
    assert summary["bus_within_bound"]
    assert samples[-1]["bus_bytes"] + (1 << 20) < samples[-1]["end_offset"]
    assert all(s["snapshot_bytes"] > 0 for s in samples)
    assert report["meta"]["cpus"] >= 1
    assert not list(tmp_path.glob("tally-soak-*"))  # the data directory is gone
