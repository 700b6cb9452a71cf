#!/usr/bin/env bash
# Builds dcxsec's C (the engine and its two CPython extensions) with
# AddressSanitizer and UndefinedBehaviorSanitizer, leak checking included,
# into .venv-asan (the normal .venv is untouched), and runs under it: the
# test suite, the fuzzer, and the acceptor's flood tests when they exist.
#
#   scripts/sanitize.sh [pytest arguments]    (default: the whole suite)
#
# Any sanitizer report that names dcxsec's code fails the script: an ASan
# or UBSan error anywhere, or a leak whose allocation passed through
# dcxsec's C.  Leaks of CPython's and OpenSSL's own one-time allocations
# are suppressed by scripts/lsan.supp; nothing of dcxsec's is.
# The reports are kept in .sanitize/ (one file per process).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv-asan
REPORTS=$ROOT/.sanitize
PYTHON=${PYTHON:-python3}
FUZZ_CASES=${FUZZ_CASES:-8}

ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
[ -f "$ASAN_LIB" ] || { echo "sanitize.sh: gcc has no libasan.so (install gcc's sanitizer runtime)"; exit 2; }

SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
echo "== building the engine with $SAN_FLAGS into $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || exit 2
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# Not editable: an editable build would put its libraries beside the normal ones in dcxsec/.
DCXSEC_CFLAGS="$SAN_FLAGS" DCXSEC_LDFLAGS="-fsanitize=address,undefined" \
CFLAGS="$SAN_FLAGS" LDFLAGS="-fsanitize=address,undefined" \
    "$VENV/bin/python" -m pip install -q --no-cache-dir --force-reinstall --no-deps . || exit 2
"$VENV/bin/python" -m pip install -q ".[test]" >/dev/null || exit 2

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
# CPython's allocator hands out its own arenas, which LeakSanitizer can
# neither see into nor trace through: plain malloc lets it follow Python's
# objects to the engine's memory they own.
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=1:malloc_context_size=60:detect_stack_use_after_return=0:log_path=$REPORTS/asan:log_exe_name=1"
export LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp:print_suppressions=1:exitcode=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan"

cd "$ROOT/tests" || exit 2  # not the repository root: dcxsec must come from .venv-asan
"$VENV/bin/python" -c 'import dcxsec, sys; sys.exit(0 if ".venv-asan" in dcxsec.__file__ else 1)' \
    || { echo "sanitize.sh: dcxsec is not imported from $VENV"; exit 2; }

status=0
echo "== the test suite"
suite=("$@")
[ ${#suite[@]} -gt 0 ] || suite=(-q -p no:cacheprovider --ignore=test_schannel_wine.py)
"$VENV/bin/pytest" "${suite[@]}"
rc=$?
echo "pytest exit status: $rc"
[ $rc -eq 0 ] || status=1

echo "== the fuzzer ($FUZZ_CASES cases per configuration)"
"$VENV/bin/python" -m fuzzing --cases "$FUZZ_CASES" --seed 1 --timeout 4 > "$ROOT/.sanitize-fuzz.txt"
rc=$?
tail -n 30 "$ROOT/.sanitize-fuzz.txt"
echo "fuzzer exit status: $rc"
[ $rc -eq 0 ] || status=1

if [ -f "$ROOT/tests/test_acceptor.py" ]; then
    echo "== the acceptor's flood tests"
    "$VENV/bin/pytest" -q -p no:cacheprovider test_acceptor.py
    rc=$?
    [ $rc -eq 0 ] || status=1
fi

echo "== sanitizer reports"
"$VENV/bin/python" "$ROOT/scripts/sanitizer_reports.py" "$REPORTS" || status=1
exit $status
