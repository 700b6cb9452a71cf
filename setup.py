"""Builds dcxsec's C engine with cffi, the C recv() that reads its plaintext,
and the engine calls that keep the GIL; the metadata is in pyproject.toml.

Every C source lives under csrc/; csrc/python/ holds the two CPython
extension modules, which exist only for Python's sake.  All three modules are
on the limited API from CPython 3.11 on (_recvbuf needs its Py_buffer), so
one wheel per platform (cp311-abi3) serves 3.11 and every later CPython; a
build on 3.9 or 3.10 is for that version only."""
import sys

from setuptools import Extension, setup

ABI3 = sys.version_info >= (3, 11)

setup(
    cffi_modules=["csrc/build.py:ffibuilder"],
    ext_modules=[
        Extension("dcxsec._recvbuf", ["csrc/python/_recvbuf.c"], py_limited_api=ABI3),
        Extension("dcxsec._keepgil", ["csrc/python/_keepgil.c"], include_dirs=["csrc"],
                  libraries=["ws2_32"] if sys.platform == "win32" else [], py_limited_api=ABI3),
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if ABI3 else {},
)
