"""Scenario 7's processes: a gateway SCP, requestor processes of several SCUs
each, and a junk flood.

As a program, each is driven by one JSON line per command on stdin and
answers one JSON line on stdout (peers.py's protocol):

    python gateway.py scp KIND PKI_FOLDER DIRECTORY
        first {"port": N}; "received" -> {"hashes": [...]} (SHA-256 of every
        dataset received since the last "clear"); "clear" -> {}; "quit".
    python gateway.py scu KIND PKI_FOLDER
        first {}; {"port": P, "shares": [[file, ...], ...]} stores each share
        in an association of its own, all at once, one thread each ->
        {"stored": n, "failed": [reason, ...]}; "quit".
    python gateway.py flood PORT
        first {}; hostile connections to PORT until "quit" -> {"sent": {...}}.

The SCP of dcxsec is started with dcxsec.start_server, the engine's acceptor;
the others with AE.start_server.  It accepts up to 40 associations, as a
gateway configured for its 32 modalities would.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from contenders import DCXSEC, pki_in, pynetdicom_contender  # noqa: E402
from peers import _say, _serve  # noqa: E402
from dcxsec.requestor import steady  # noqa: E402

sys.path.insert(0, str(HERE.parent / "tests"))
from dicom_wire import associate_rq  # noqa: E402

GATEWAY_ASSOCIATIONS = 40


# ---- the gateway SCP ---------------------------------------------------------------

def scp_main(kind: str, folder: str, directory: str) -> None:
    contender = pynetdicom_contender(kind, pki_in(Path(folder)))
    out = Path(directory)
    hashes: list[str] = []
    lock = threading.Lock()

    def on_store(event) -> int:
        data = event.request.DataSet.getvalue()
        path = out / f"{event.request.AffectedSOPInstanceUID}.dcm"
        with path.open("wb") as f:
            f.write(event.encoded_dataset())
        with lock:
            hashes.append(hashlib.sha256(data).hexdigest())
        return 0x0000

    ae = AE("GATEWAY")
    ae.maximum_associations = GATEWAY_ASSOCIATIONS
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_C_ECHO, lambda event: 0x0000)]
    if kind == DCXSEC:
        import dcxsec
        server = dcxsec.start_server(ae, ("127.0.0.1", 0), contender.server_context,
                                     block=False, evt_handlers=handlers)
    else:
        server = ae.start_server(("127.0.0.1", 0), block=False,
                                 ssl_context=contender.server_context, evt_handlers=handlers)
    _say({"port": server.server_address[1]})

    def handle(command: str) -> dict[str, Any]:
        if command == "received":
            with lock:
                return {"hashes": sorted(hashes)}
        if command == "clear":
            with lock:
                hashes.clear()
            for path in out.iterdir():
                path.unlink()
            return {}
        raise ValueError(f"unknown command {command!r}")

    try:
        _serve(handle)
    finally:
        server.shutdown()


# ---- requestors ----------------------------------------------------------------------

def store_share(tls_args, port: int, files: list[str], failed: list[str]) -> int:
    """One SCU: its files in one association; the count stored."""
    ae = AE("MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = steady(ae.associate("127.0.0.1", port, tls_args=tls_args))  # bench/README.md
    if not assoc.is_established:
        failed.append(f"association refused or aborted ({len(files)} files not sent)")
        return 0
    stored = 0
    try:
        for path in files:
            status = assoc.send_c_store(path)
            if getattr(status, "Status", None) == 0x0000:
                stored += 1
            else:
                failed.append(f"{path}: status {getattr(status, 'Status', 'none')}")
    finally:
        assoc.release()
    return stored


def scu_main(kind: str, folder: str) -> None:
    contender = pynetdicom_contender(kind, pki_in(Path(folder)))
    _say({})

    def handle(command: dict[str, Any]) -> dict[str, Any]:
        failed: list[str] = []
        counts = [0] * len(command["shares"])

        def one(i: int, share: list[str]) -> None:
            try:
                counts[i] = store_share(contender.tls_args, command["port"], share, failed)
            except Exception as exc:  # noqa: BLE001 - reported, and the round fails
                failed.append(f"SCU {i}: {exc!r}")

        threads = [threading.Thread(target=one, args=(i, share))
                   for i, share in enumerate(command["shares"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"stored": sum(counts), "failed": failed}

    _serve(handle)


# ---- the junk flood -----------------------------------------------------------------

def client_hello() -> bytes:
    """The first flight of a real TLS client, made in memory."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="gateway")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def junk_kinds() -> dict[str, Any]:
    """Each kind: what it sends, how long it then holds the connection, and
    whether it resets (RST) instead of closing."""
    hello = client_hello()
    tls10 = bytearray(hello)
    tls10[1:3] = b"\x03\x01"
    tls10[9:11] = b"\x03\x01"
    return {
        "silent": (b"", 2.0, False),
        "half ClientHello": (hello[: len(hello) // 2], 2.0, False),
        "HTTP": (b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n", 0.2, False),
        "random bytes": (os.urandom(300), 0.2, False),
        "plain DICOM": (associate_rq(called="GATEWAY"), 0.5, False),
        "TLS 1.0 hello": (bytes(tls10), 0.5, False),
        "oversized record": (b"\x16\x03\x01\xff\xff" + os.urandom(64), 0.5, False),
        "reset mid-handshake": (hello, 0.05, True),
    }


class Junk:
    """One hostile connection: connect, send its bytes, hold, then close or reset."""

    def __init__(self, port: int, payload: bytes, hold: float, reset: bool) -> None:
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))
        self.payload, self.reset = payload, reset
        self.until = time.monotonic() + hold + 0.05  # connected by then, on loopback

    def pump(self) -> None:
        if self.payload:
            try:
                self.payload = self.payload[self.sock.send(self.payload):]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.payload = b""

    def close(self) -> None:
        if self.reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def flood_main(port: str) -> None:
    """At most 40 hostile connections open at once, about 100 new ones a second,
    from one thread with non-blocking sockets: the flood costs its machine little."""
    kinds = junk_kinds()
    names = sorted(kinds)
    sent = {name: 0 for name in names}
    rng = random.Random(7)
    stop = threading.Event()

    def loop() -> None:
        open_: list[Junk] = []
        next_at = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_at and len(open_) < 40:
                name = rng.choice(names)
                sent[name] += 1
                open_.append(Junk(int(port), *kinds[name]))
                next_at = now + 0.01
            for junk in open_:
                junk.pump()
            for junk in [j for j in open_ if j.until <= now]:
                junk.close()
                open_.remove(junk)
            time.sleep(0.002)
        for junk in open_:
            junk.close()

    flooder = threading.Thread(target=loop, daemon=True)
    flooder.start()
    _say({})
    for line in sys.stdin:
        if json.loads(line) == "quit":
            break
    stop.set()
    flooder.join()
    _say({"sent": sent})


if __name__ == "__main__":
    role, *arguments = sys.argv[1:]
    {"scp": scp_main, "scu": scu_main, "flood": flood_main}[role](*arguments)
