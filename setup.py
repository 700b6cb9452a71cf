"""Builds dcxsec's C engine with cffi; the metadata is in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder"])
