#!/usr/bin/env bash
# Creates .venv and installs dcxsec (compiling its C engine) with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import dcxsec; print('dcxsec', dcxsec.__version__, 'on', dcxsec.backend())"
