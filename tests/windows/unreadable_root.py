"""Runs on Windows CPython: a certificate that cryptography cannot read (its
serial number is negative) in Cert:\\CurrentUser\\Root, put there through the
engine's Crypt32 functions, must be skipped by dcxsec's store listing with a
warning naming it, not stop the listing or leak a deprecation warning.

    python unreadable_root.py CERT.der

Prints ``RESULT {json}``: the thumbprints listed, the warnings that escaped,
and what the dcxsec logger said; the certificate is removed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import warnings

from dcxsec import CertificateStore, CertStore
from dcxsec._native import ffi, lib
from dcxsec.engine import new_error
from dcxsec.winstore import _blob, _check


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        der = f.read()
    sha1 = hashlib.sha1(der).digest()
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("dcxsec").addHandler(handler)
    err, keep = new_error(), []
    _check(lib.dcx_store_add(int(CertStore.CURRENT_USER), b"Root", _blob(der, keep), ffi.NULL, err), err)
    try:
        with warnings.catch_warnings(record=True) as escaped:
            warnings.simplefilter("always")
            listed = [e.thumbprint for e in CertificateStore(CertStore.CURRENT_USER).certificates("Root")]
            again = [e.thumbprint for e in CertificateStore(CertStore.CURRENT_USER).certificates("Root")]
    finally:
        _check(lib.dcx_store_remove(int(CertStore.CURRENT_USER), b"Root", sha1, 1, err), err)
    print("RESULT " + json.dumps({"listed": listed, "listed_again": again, "log": messages,
                                  "escaped": [f"{w.category.__name__}: {w.message}" for w in escaped],
                                  "thumbprint": sha1.hex().upper()}), flush=True)


if __name__ == "__main__":
    main()
