#!/usr/bin/env bash
# A long run of the TLS mutation fuzzer (tests/fuzzing/); its result replaces
# the "Latest run" section of docs/fuzzing.md.
#
#   scripts/fuzz.sh [--cases N] [--seed S] [--timeout SECONDS] [--budget SECONDS]
#
# --cases: mutations per configuration (default 60); --seed: which ones
# (default 1); --timeout: handshake_timeout and socket timeout of the dcxsec
# ends (default 2); --budget: start no configuration after this many seconds
# (default 600).  Needs openssl, and .venv (scripts/setup.sh).  Exits 1 when
# a dcxsec end crashed, hung, closed late or accepted an altered record.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
args=(--cases 60 --seed 1 --timeout 2 --budget 600)
[ $# -eq 0 ] || args=(--budget 600 "$@")
command -v openssl >/dev/null || { echo "fuzz.sh: needs openssl (apt-get install openssl)"; exit 2; }

section=$(mktemp)
trap 'rm -f "$section"' EXIT
status=0
(cd tests && "$PY" -m fuzzing "${args[@]}" --report "$section") || status=$?
[ -s "$section" ] || { echo "fuzz.sh: the run wrote no result"; exit 2; }

doc=docs/fuzzing.md
head=$(sed '/^## Latest run/,$d' "$doc" 2>/dev/null || true)
{ printf '%s\n\n' "${head%$'\n'}"; cat "$section"; } > "$doc.new"
mv "$doc.new" "$doc"
echo "fuzz.sh: result written to $doc"
exit $status
