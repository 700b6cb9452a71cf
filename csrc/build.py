"""cffi build script: compiles the C engine into ``dcxsec._tls``.

The cdef is read from ``dcxtls.h`` and ``dcxstore.h`` themselves, so the
headers stay the one declaration of the engine.  Exactly one TLS backend and
one system-store backend are compiled per platform.
"""
import os
import re
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
HEADERS = [os.path.join(HERE, name) for name in ("dcxtls.h", "dcxthreads.h", "dcxstore.h")]


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
    """The TLS backend, the system-store backend and the handshake pump of
    this platform, and their libraries."""
    if sys.platform == "win32":
        return (["schannel.c", "schannel_identity.c", "schannel_verify.c",
                 "store_crypt32.c", "pump_none.c"],
                ["secur32", "crypt32", "ws2_32", "ncrypt"])
    return (["openssl.c", "openssl_verify.c", "openssl_session.c", "store_none.c", "pump_posix.c"],
            ["ssl", "crypto", "pthread"])


ffibuilder = FFI()
_defined = ({"_WIN32"} if sys.platform == "win32" else set())
ffibuilder.cdef("\n".join(cdef_from_header(header, _defined) for header in HEADERS))
_sources, _libraries = backend_sources()
ffibuilder.set_source(
    "dcxsec._tls",
    '#include "dcxtls.h"\n#include "dcxthreads.h"\n#include "dcxstore.h"',
    sources=[os.path.relpath(os.path.join(HERE, name)) for name in ["dcxtls_common.c", *_sources]],
    include_dirs=[os.path.relpath(HERE)],
    libraries=_libraries,
    extra_compile_args=[] if sys.platform == "win32" else ["-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
