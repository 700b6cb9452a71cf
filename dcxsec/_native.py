"""Loads the compiled engine, and says plainly when it is not there."""
from __future__ import annotations

try:
    from dcxsec._tls import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "dcxsec's compiled TLS engine (dcxsec._tls) is missing or failed to build: "
        f"{exc}. Reinstall with 'pip install .' on a machine with a C compiler and the "
        "OpenSSL 3 headers (Debian/Ubuntu: apt-get install gcc libssl-dev)."
    ) from exc

__all__ = ["ffi", "lib"]
