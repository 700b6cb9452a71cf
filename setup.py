"""Builds dcxsec's C engine with cffi, and the C recv() that reads its
plaintext; the metadata is in pyproject.toml."""
from setuptools import Extension, setup

setup(
    cffi_modules=["csrc/build.py:ffibuilder"],
    ext_modules=[Extension("dcxsec._recvbuf", ["dcxsec/_recvbuf.c"])],
)
