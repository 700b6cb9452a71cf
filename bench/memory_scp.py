"""A pynetdicom Verification SCP in a process of its own, for scenario 6.

Usage: python memory_scp.py KIND PKI_FOLDER MAX_ASSOCIATIONS [--traced]

Prints {"port": N} once listening, then answers each "measure N" line on
stdin, once N associations are established, with one JSON line of its memory:
RSS and the bytes malloc has handed out (all arenas); with --traced, also the
bytes Python's allocators hold (tracemalloc).  "quit" ends it.  A process of
its own keeps the clients' memory and the test runner's out of the numbers.

tracemalloc's own bookkeeping (a hash entry per live Python allocation, more
than get_tracemalloc_memory() owns to) would land in malloc's count, so the
malloc and RSS figures come from an untraced run and only Python's share
from a traced one.
"""
from __future__ import annotations

import ctypes
import gc
import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import pki_in, pynetdicom_contender  # noqa: E402

# Python hands requests above this size to malloc; smaller ones live in
# pymalloc's own arenas (mmap), which malloc's statistics do not see.
PYMALLOC_THRESHOLD = 512


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_in_use() -> int:
    """Bytes malloc has handed out and not had back, over every arena (glibc)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure() -> dict[str, int]:
    gc.collect()
    in_use = malloc_in_use()
    rss = rss_bytes()
    if not tracemalloc.is_tracing():
        return {"rss": rss, "malloc": in_use, "threads": threading.active_count()}
    traced, _ = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    python_in_malloc = sum(t.size for t in snapshot.traces if t.size > PYMALLOC_THRESHOLD)
    del snapshot
    return {"python": traced, "python_in_malloc": python_in_malloc,
            "threads": threading.active_count()}


def main() -> None:
    kind, folder, max_associations = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    traced = sys.argv[4:] == ["--traced"]
    ae = AE("BENCH-SCP")
    ae.maximum_associations = max_associations
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = None  # idle is the point
    ae.add_supported_context(Verification)
    contender = pynetdicom_contender(kind, pki_in(folder))
    server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=contender.server_context)
    if traced:
        tracemalloc.start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        wanted = int(words[1])
        deadline = time.monotonic() + 300
        while len(server.active_associations) != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # let the last handshakes' transient buffers go
        result = measure()
        result["associations"] = len(server.active_associations)
        print(json.dumps(result), flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
