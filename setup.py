"""Builds dcxsec's C engine with cffi, the C recv() that reads its plaintext,
and the engine calls that keep the GIL; the metadata is in pyproject.toml.

Every C source lives under csrc/; csrc/python/ holds the two CPython
extension modules, which exist only for Python's sake."""
import sys

from setuptools import Extension, setup

setup(
    cffi_modules=["csrc/build.py:ffibuilder"],
    ext_modules=[
        Extension("dcxsec._recvbuf", ["csrc/python/_recvbuf.c"]),
        Extension("dcxsec._keepgil", ["csrc/python/_keepgil.c"], include_dirs=["csrc"],
                  libraries=["ws2_32"] if sys.platform == "win32" else []),
    ],
)
