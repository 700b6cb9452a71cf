#!/usr/bin/env bash
# Sets up dcxsec and runs its test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest tests "$@"
