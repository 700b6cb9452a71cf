"""Runs on Windows CPython: puts a CRL into Cert:\\CurrentUser\\CA, or takes
it out again: in through Crypt32 (what ``certutil -user -addstore CA FILE.crl``
does; Wine has no certutil), out by its registry key.  dcxsec's engine reads that store's CRLs itself.

    python crl_store.py add|remove CRL.der
"""
from __future__ import annotations

import ctypes
import hashlib
import sys
import winreg
from ctypes import wintypes

CERT_STORE_PROV_SYSTEM_W = 10
CERT_SYSTEM_STORE_CURRENT_USER = 1 << 16
X509_ASN_ENCODING = 1
CERT_STORE_ADD_REPLACE_EXISTING = 3


class CRLContext(ctypes.Structure):
    _fields_ = [("dwCertEncodingType", wintypes.DWORD), ("pbCrlEncoded", ctypes.POINTER(ctypes.c_ubyte)),
                ("cbCrlEncoded", wintypes.DWORD), ("pCrlInfo", ctypes.c_void_p), ("hCertStore", ctypes.c_void_p)]


crypt32 = ctypes.WinDLL("crypt32", use_last_error=True)
crypt32.CertOpenStore.restype = ctypes.c_void_p
crypt32.CertOpenStore.argtypes = [ctypes.c_void_p, wintypes.DWORD, ctypes.c_void_p, wintypes.DWORD,
                                  wintypes.LPCWSTR]
crypt32.CertAddEncodedCRLToStore.argtypes = [ctypes.c_void_p, wintypes.DWORD, ctypes.c_char_p, wintypes.DWORD,
                                             wintypes.DWORD, ctypes.c_void_p]
crypt32.CertEnumCRLsInStore.restype = ctypes.POINTER(CRLContext)
crypt32.CertEnumCRLsInStore.argtypes = [ctypes.c_void_p, ctypes.POINTER(CRLContext)]
crypt32.CertCloseStore.argtypes = [ctypes.c_void_p, wintypes.DWORD]


def crls(store) -> list[bytes]:
    """The encoded CRLs of an open store."""
    found, crl = [], crypt32.CertEnumCRLsInStore(store, None)
    while crl:
        found.append(ctypes.string_at(crl.contents.pbCrlEncoded, crl.contents.cbCrlEncoded))
        crl = crypt32.CertEnumCRLsInStore(store, crl)
    return found


def remove(der: bytes) -> None:
    """Deletes the CRL's registry key, where Windows keeps CurrentUser's CRLs by
    their SHA-1: Wine 8.0's CertDeleteCRLFromStore on a system store releases
    the CRL once too often and the process dies (crypt32/context.c)."""
    key = rf"Software\Microsoft\SystemCertificates\CA\CRLs\{hashlib.sha1(der).hexdigest().upper()}"
    winreg.DeleteKey(winreg.HKEY_CURRENT_USER, key)


def open_ca():
    store = crypt32.CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, None, CERT_SYSTEM_STORE_CURRENT_USER, "CA")
    if not store:
        raise SystemExit(f"CertOpenStore(CurrentUser\\CA) failed: {ctypes.get_last_error():#x}")
    return store


def main() -> None:
    action, path = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        der = f.read()
    if action == "remove":
        remove(der)
    store = open_ca()
    try:
        if action == "add" and not crypt32.CertAddEncodedCRLToStore(
                store, X509_ASN_ENCODING, der, len(der), CERT_STORE_ADD_REPLACE_EXISTING, None):
            raise SystemExit(f"CertAddEncodedCRLToStore failed: {ctypes.get_last_error():#x}")
        if (der in crls(store)) != (action == "add"):
            raise SystemExit(f"{action}: the CRL is {'not ' if action == 'add' else ''}in Cert:\\CurrentUser\\CA")
    finally:
        crypt32.CertCloseStore(store, 0)
    print(f"{action} done")


if __name__ == "__main__":
    main()
