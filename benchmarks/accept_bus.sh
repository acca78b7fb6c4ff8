#!/usr/bin/env bash
# Issue 2 acceptance: 8 concurrent `tally emit -` writers x 20,000 events in batches of 1,000.
set -euo pipefail
cd "$(dirname "$0")/.."
for torn in 0 1; do
  D=$(mktemp -d)/tally-data; mkdir -p $D
  start=$(date +%s.%N)
  for w in 0 1 2 3 4 5 6 7; do TALLY_DATA_DIR=$D .venv/bin/python tests/server/emitter.py $w 20 1000 $torn & done
  wait
  end=$(date +%s.%N)
  echo "torn=$torn elapsed=$(echo "$end - $start" | bc)s"
  .venv/bin/tally check --json --data-dir $D | .venv/bin/python -c "import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ('events','corrupt_lines','unknown_events','segments','torn_tail')})" || true
done
