"""``DCXSEC_WITHOUT``: mechanisms that exist only for speed, switched off.

For the benchmark's ablation (bench/README.md, "What each mechanism pays"):
a comma-separated subset of ``MECHANISMS``, read once, when dcxsec is
imported; each falls back to the plain path.  The engine reads the same
variable when it is loaded (``dcx_without`` in csrc/dcxtls_common.c);
tlssocket.py hands ``shelf`` to csrc/python/_recvbuf.c.

- keepgil: _keepgil's engine and socket calls go through cffi's lib and the
  socket module, which let the GIL go around each.
- recvbuf: recv() is the Python method, reading through dcx_conn_read.
- shelf: receive buffers and plaintext storage come from the heap and go
  back to it (no shelf in the engine nor in _recvbuf).
- readahead: dcx_conn_read returns after one record, and the socket's
  plaintext buffer does not grow to take the records queued behind it.
"""
from __future__ import annotations

import os

MECHANISMS = ("keepgil", "recvbuf", "shelf", "readahead")


def parse(text: str) -> frozenset[str]:
    names = frozenset(word.strip() for word in text.split(",") if word.strip())
    unknown = sorted(names - set(MECHANISMS))
    if unknown:
        raise ValueError(f"DCXSEC_WITHOUT names {', '.join(unknown)}: not one of "
                         f"{', '.join(MECHANISMS)}")
    return names


WITHOUT = parse(os.environ.get("DCXSEC_WITHOUT", ""))
