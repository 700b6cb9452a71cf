#!/usr/bin/env bash
# Sets up dcxsec and runs the main job: a mutually authenticated TLS C-STORE
# from an SCU to an SCP on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/dcxsec demo "$@"
