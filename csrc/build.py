"""cffi build script: compiles the C engine into ``dcxsec._tls``.

The cdef is read from ``dcxtls.h`` and ``dcxstore.h`` themselves, so the
headers stay the one declaration of the engine.  Exactly one TLS backend and
one system-store backend are compiled per platform.  OpenSSL is found through
OPENSSL_DIR, else pkg-config, else the compiler's own paths (openssl_location).
"""
import os
import re
import shlex
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADERS = [os.path.join(HERE, name) for name in ("dcxtls.h", "dcxthreads.h", "dcxstore.h")]
# The platform the engine is built for: this interpreter's, unless DCXSEC_TARGET
# names another (win_amd64: scripts/build-wheels.sh cross-builds for Windows).
TARGET = os.environ.get("DCXSEC_TARGET") or ("win_amd64" if sys.platform == "win32" else sys.platform)
WINDOWS = TARGET.startswith("win")


def cdef_from_header(path: str, defined: set) -> str:
    """The header's declarations, minus what cffi cannot parse.

    Handles the header's own #ifdef/#ifndef/#else/#endif against ``defined``;
    keeps ``#define NAME <integer>`` lines, which cffi turns into constants.
    """
    text = re.sub(r"/\*.*?\*/", "", open(path).read(), flags=re.S)
    out, stack = [], []
    for line in text.splitlines():
        directive = line.strip()
        m = re.match(r"#\s*(ifdef|ifndef)\s+(\w+)", directive)
        if m:
            stack.append((m.group(2) in defined) == (m.group(1) == "ifdef"))
        elif re.match(r"#\s*else", directive):
            stack[-1] = not stack[-1]
        elif re.match(r"#\s*endif", directive):
            stack.pop()
        elif not all(stack):
            continue
        elif re.match(r"#\s*define\s+\w+\s+(0x[0-9a-fA-F]+|\d+)\s*$", directive):
            out.append(directive)
        elif not directive.startswith("#"):
            out.append(line)
    return "\n".join(out)


def backend_sources():
    """The TLS backend, the system-store backend, the handshake pump and the
    acceptor of this platform, and their libraries."""
    if WINDOWS:
        return (["schannel.c", "schannel_identity.c", "schannel_verify.c", "schannel_suites.c",
                 "store_crypt32.c", "pump_none.c", "acceptor_none.c"],
                ["secur32", "crypt32", "ws2_32", "ncrypt"])
    return (["openssl.c", "openssl_verify.c", "openssl_session.c", "store_none.c", "pump_posix.c",
             "acceptor_posix.c"],
            ["ssl", "crypto", "pthread"])


def openssl_location(environ=os.environ) -> dict:
    """Where OpenSSL's headers and libraries are, as set_source() keywords.

    OPENSSL_DIR (its include/ and lib/ or lib64/, e.g. Homebrew's
    $(brew --prefix openssl@3)) wins; then ``pkg-config openssl``; else the
    compiler's own search paths, where Linux distributions put it.
    """
    root = environ.get("OPENSSL_DIR")
    if root:
        include = os.path.join(root, "include")
        if not os.path.isfile(os.path.join(include, "openssl", "ssl.h")):
            raise SystemExit(f"OPENSSL_DIR={root}: no {include}/openssl/ssl.h there; point it at "
                             f"an OpenSSL 3 installation (the folder holding include/ and lib/)")
        libdirs = [os.path.join(root, name) for name in ("lib64", "lib")
                   if any(f.startswith(("libssl.", "libssl-")) for f in _listdir(os.path.join(root, name)))]
        if not libdirs:
            raise SystemExit(f"OPENSSL_DIR={root}: no libssl in {root}/lib or {root}/lib64")
        # rpath: the engine finds the same libraries at run time, not the system's
        return {"include_dirs": [include], "library_dirs": libdirs[:1],
                "runtime_library_dirs": libdirs[:1], "extra_compile_args": [], "extra_link_args": []}
    flags = {"include_dirs": [], "library_dirs": [], "runtime_library_dirs": [],
             "extra_compile_args": [], "extra_link_args": []}
    cflags, libs = _pkg_config("--cflags", environ), _pkg_config("--libs", environ)
    if cflags is None or libs is None:
        return flags  # no pkg-config, or no openssl.pc: the compiler's defaults
    for flag in cflags:
        (flags["include_dirs"].append(flag[2:]) if flag.startswith("-I")
         else flags["extra_compile_args"].append(flag))
    for flag in libs:
        if flag.startswith("-L"):
            flags["library_dirs"].append(flag[2:])
        elif not flag.startswith("-l"):  # ssl and crypto are named in backend_sources()
            flags["extra_link_args"].append(flag)
    return flags


def _pkg_config(what: str, environ) -> list | None:
    """``pkg-config <what> openssl`` as a list of flags, or None when it has no answer."""
    try:
        found = subprocess.run(["pkg-config", what, "openssl"], capture_output=True, text=True,
                               timeout=30, env=dict(environ))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shlex.split(found.stdout) if found.returncode == 0 else None


def _listdir(path: str) -> list:
    return os.listdir(path) if os.path.isdir(path) else []


def build_arguments(environ=os.environ) -> dict:
    """The keywords of set_source() for this platform."""
    sources, libraries = backend_sources()
    arguments = {
        "sources": [os.path.relpath(os.path.join(HERE, name)) for name in ["dcxtls_common.c", *sources]],
        "include_dirs": [os.path.relpath(HERE)],
        "libraries": libraries,
        "extra_compile_args": [],
    }
    if WINDOWS:  # SChannel: the Windows SDK's libraries, nothing to find
        return arguments
    openssl = openssl_location(environ)
    arguments["include_dirs"] += openssl.pop("include_dirs")
    arguments["extra_compile_args"] = ["-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall",
                                       *openssl.pop("extra_compile_args")]
    arguments.update({key: value for key, value in openssl.items() if value})
    return add_extra_flags(arguments, environ)


def add_extra_flags(arguments: dict, environ=os.environ) -> dict:
    """DCXSEC_CFLAGS and DCXSEC_LDFLAGS (shell words) after the build's own
    flags, e.g. scripts/sanitize.sh's -fsanitize=address,undefined."""
    for variable, key in (("DCXSEC_CFLAGS", "extra_compile_args"),
                          ("DCXSEC_LDFLAGS", "extra_link_args")):
        extra = shlex.split(environ.get(variable, ""))
        if extra:
            arguments[key] = [*arguments.get(key, []), *extra]
    return arguments


ffibuilder = FFI()
_defined = ({"_WIN32"} if WINDOWS else set())
ffibuilder.cdef("\n".join(cdef_from_header(header, _defined) for header in HEADERS))
ffibuilder.set_source("dcxsec._tls", '#include "dcxtls.h"\n#include "dcxthreads.h"\n#include "dcxstore.h"',
                      **build_arguments())

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
