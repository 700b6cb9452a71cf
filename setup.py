"""Builds dcxsec's C engine with cffi, the C recv() that reads its plaintext,
and the engine calls that keep the GIL; the metadata is in pyproject.toml."""
import sys

from setuptools import Extension, setup

setup(
    cffi_modules=["csrc/build.py:ffibuilder"],
    ext_modules=[
        Extension("dcxsec._recvbuf", ["dcxsec/_recvbuf.c"]),
        Extension("dcxsec._keepgil", ["dcxsec/_keepgil.c"], include_dirs=["csrc"],
                  libraries=["ws2_32"] if sys.platform == "win32" else []),
    ],
)
