"""``python -m benchmarks [--quick] [--out FILE]``: the whole suite (see ``benchmarks.suite``)."""

from benchmarks.suite import main

raise SystemExit(main())
