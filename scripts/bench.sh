#!/usr/bin/env bash
# Sets up dcxsec and runs the benchmark suite (bench/, about 12 minutes on two
# cores).  The run ends with a table of ratios, also written to
# .benchmarks/latest-table.md.  BENCH_QUICK=1 makes it a one-minute smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest bench --benchmark-columns=min,median,max,rounds \
    --benchmark-sort=name "$@"
