"""``dcxsec receive PORT --out DIR``: a storage SCP over TLS, on the engine's acceptor.

Every object is on disk before its success status goes back: written to a
temporary file in its folder, flushed with fsync, then renamed into place.
When that fails (a full disk, a folder it may not write), the C-STORE is
answered 0xA700 (out of resources) and nothing is acknowledged that is not
stored.  C-ECHO is answered.  Each association ends with one line: the peer's
address, AE titles, certificate, and what it stored.  SIGTERM (or Ctrl-C)
stops accepting and lets the associations in flight finish.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dcxsec import cliopts
from dcxsec.errors import ConfigurationError

log = logging.getLogger("dcxsec.receive")
DEFAULT_LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
FLAT_LAYOUT = "{SOPInstanceUID}.dcm"
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# What the SCP offers to receive per PDU.  pynetdicom handles each PDU in
# Python: 512 KiB objects from storescu +tls took 0.95 core-s per 200 at
# 16,382 bytes, 0.78 at 1 MiB (bench/README.md, scenario 8).
DEFAULT_MAX_PDU = 1 << 20
DRAIN_SECONDS = 60.0  # at SIGTERM, how long associations in flight may go on
_UNSAFE = re.compile(r"[^A-Za-z0-9._^=+-]")


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("receive", help="a storage SCP over TLS that writes what it receives "
                            "(as DCMTK's storescp +tls)")
    p.add_argument("port", type=int)
    p.add_argument("--out", type=Path, required=True, help="the folder objects are written into")
    p.add_argument("--layout", default=DEFAULT_LAYOUT,
                   help="each object's path under --out, from its attributes "
                   f"(default {DEFAULT_LAYOUT}; 'flat' for {FLAT_LAYOUT})")
    p.add_argument("--aet", default="DCXSEC", help="this AE's title (default DCXSEC)")
    p.add_argument("--bind-address", default="", metavar="ADDRESS",
                   help="listen on this address only (default: all)")
    p.add_argument("--max-pdu", type=int, default=DEFAULT_MAX_PDU, metavar="BYTES",
                   help=f"the largest PDU this SCP receives (default {DEFAULT_MAX_PDU}; "
                   "0 for no limit; at least 4096)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="N processes sharing the port (default 1)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    cliopts.add_tls_options(p)
    p.set_defaults(run=run)


def component(value: Any) -> str:
    """A path component from an attribute: no separators, never empty or a dot name."""
    text = _UNSAFE.sub("_", str(value).strip()) if value not in (None, "") else "UNKNOWN"
    return text if text.strip(".") else "UNKNOWN"


def layout_names(layout: str) -> set[str]:
    return set(re.findall(r"{(\w+)}", layout))


def object_path(out: Path, layout: str, values: dict[str, Any]) -> Path:
    """Where an object goes: ``layout`` with its attributes, every part made safe."""
    safe = {name: component(values.get(name)) for name in layout_names(layout)}
    return out.joinpath(*[part.format(**safe) for part in layout.split("/") if part])


def attributes(event: Any, names: set[str]) -> dict[str, Any]:
    """The attributes a layout names: the instance UID from the request, the
    others read from the dataset's elements before its pixel data (never all of it)."""
    values: dict[str, Any] = {"SOPInstanceUID": event.request.AffectedSOPInstanceUID,
                              "SOPClassUID": event.request.AffectedSOPClassUID}
    wanted = names - set(values)
    if wanted:
        from pydicom.filereader import read_dataset
        from pydicom.tag import Tag

        syntax = event.context.transfer_syntax
        stream = event.request.DataSet
        stream.seek(0)
        ds = read_dataset(stream, syntax.is_implicit_VR, syntax.is_little_endian,
                          stop_when=lambda tag, vr, length: tag >= 0x7FE00010,
                          specific_tags=[Tag(name) for name in sorted(wanted)])
        values.update({name: ds.get(name) for name in wanted})
    return values


def write_atomically(path: Path, *parts: Any) -> None:
    """``parts`` (bytes-like) at ``path`` whole or not at all: a temporary
    file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".incoming-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:  # the rename itself survives a crash once the folder is flushed
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass


def write_object(path: Path, event: Any) -> int:
    """The C-STORE's dataset as a DICOM file at ``path``, as received (never
    decoded); returns the file's size."""
    from dcxsec.part10 import file_head

    request = event.request
    head = file_head(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID,
                     event.context.transfer_syntax)
    with request.DataSet.getbuffer() as dataset:  # the received bytes, not a copy
        write_atomically(path, head, dataset)
        return len(head) + dataset.nbytes


class Receiver:
    """The SCP's event handlers, and a line per association."""

    def __init__(self, out: Path, layout: str) -> None:
        self.out, self.layout = out, layout
        self.names = layout_names(layout)
        self.lock = threading.Lock()
        self.per_association: dict[int, list[int]] = {}  # id -> [objects, bytes, failures]
        self.certificates: dict[int, str] = {}  # id -> the peer certificate, for the last line

    def _tally(self, event: Any) -> list[int]:
        with self.lock:
            return self.per_association.setdefault(id(event.assoc), [0, 0, 0])

    def on_established(self, event: Any) -> None:
        who = _certificate(event.assoc.dul.socket.socket)
        with self.lock:
            self.certificates[id(event.assoc)] = who

    def on_store(self, event: Any) -> int:
        tally = self._tally(event)
        try:
            path = object_path(self.out, self.layout, attributes(event, self.names))
            size = write_object(path, event)
        except OSError as exc:
            tally[2] += 1
            log.warning("object %s from %s not stored: %s: answered 0x%04X",
                        event.request.AffectedSOPInstanceUID, _peer(event),
                        exc.strerror or exc, OUT_OF_RESOURCES)
            return OUT_OF_RESOURCES
        except ValueError as exc:  # a UID no file meta can hold
            tally[2] += 1
            log.warning("object from %s not stored: %s: answered 0x%04X", _peer(event), exc,
                        CANNOT_UNDERSTAND)
            return CANNOT_UNDERSTAND
        tally[0] += 1
        tally[1] += size
        return 0x0000

    def on_echo(self, event: Any) -> int:
        return 0x0000

    def on_close(self, event: Any) -> None:
        with self.lock:
            objects, nbytes, failures = self.per_association.pop(id(event.assoc), [0, 0, 0])
            who = self.certificates.pop(id(event.assoc), "")
        assoc = event.assoc
        log.info("association from %s (%s -> %s)%s: %d objects stored, %.1f MB%s",
                 _peer(event), assoc.requestor.ae_title, assoc.acceptor.ae_title, who,
                 objects, nbytes / 1e6, f", {failures} not stored" if failures else "")

    def handlers(self) -> list:
        from pynetdicom import evt

        return [(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo),
                (evt.EVT_ESTABLISHED, self.on_established), (evt.EVT_CONN_CLOSE, self.on_close)]


def _peer(event: Any) -> str:
    return f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"


def _certificate(sock: Any) -> str:
    from dcxsec.echo import peer_details

    peer = peer_details(sock).get("peer")
    if not peer:
        return ""
    return f", certificate '{peer['subject']}' (thumbprint {peer['thumbprint_sha1']})"


def context(config: Any) -> Any:
    if config is None:
        return None
    from dcxsec.context import TLSContext

    return TLSContext(config)


def server_class(tls: bool, worker: Any = None) -> type:
    """dcxsec's acceptor (or pynetdicom's plain server); for one of several
    workers (dcxsec.workers), on the listening socket they share."""
    if tls:
        from dcxsec import ThreadedAssociationServer as base
    else:
        from pynetdicom.transport import ThreadedAssociationServer as base
    if worker is None:
        return base

    class WorkerServer(base):  # type: ignore[misc, valid-type]
        def server_bind(self) -> None:
            self.socket.close()
            self.socket = worker.listener.dup()
            self.socket.setblocking(False)  # another worker may take what woke this one
            self.server_address = self.socket.getsockname()

        def server_activate(self) -> None:
            if worker.loads is not None:
                self.balance(worker.loads, worker.index)
            super().server_activate()

    return WorkerServer


def serve(args: argparse.Namespace, config: Any, worker: Any = None) -> int:
    """One process's SCP, until SIGTERM or Ctrl-C; then the associations in flight finish."""
    from pynetdicom import AE, AllStoragePresentationContexts, ALL_TRANSFER_SYNTAXES
    from pynetdicom.sop_class import Verification

    ae = AE(args.aet)
    ae.maximum_pdu_size = args.max_pdu
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    receiver = Receiver(args.out, FLAT_LAYOUT if args.layout == "flat" else args.layout)
    server = ae.make_server((args.bind_address, args.port), ssl_context=context(config),
                            evt_handlers=receiver.handlers(),
                            server_class=server_class(config is not None, worker))
    ae._servers.append(server)  # as AE.start_server keeps it, for its shutdown()
    threading.Thread(target=server.serve_forever, name="dcxsec receive", daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("receiving on port %d into %s (%s)", server.server_address[1], args.out,
             "plain DICOM, no TLS" if config is None else "TLS")
    while not stop.wait(0.5):
        pass
    server.shutdown()  # no new associations; those in flight go on
    deadline = time.monotonic() + DRAIN_SECONDS
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.1)
    left = len(server.active_associations)
    if left:
        log.warning("stopping with %d associations still in flight after %.0f s", left,
                    DRAIN_SECONDS)
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    # pynetdicom says a line per request at INFO; dcxsec's line per association is the record.
    logging.getLogger("pynetdicom").setLevel("DEBUG" if args.log_level == "DEBUG" else "WARNING")
    if args.workers < 1:
        print("dcxsec receive: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.max_pdu != 0 and args.max_pdu < 4096:
        print("dcxsec receive: --max-pdu must be 0 (no limit) or at least 4096", file=sys.stderr)
        return 2
    try:
        config = cliopts.config_from_args(args)
        args.out.mkdir(parents=True, exist_ok=True)
    except (ConfigurationError, ValueError) as exc:
        print(f"dcxsec receive: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dcxsec receive: cannot use --out {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.workers == 1:
        return serve(args, config)
    from dcxsec.workers import run_workers

    return run_workers(args.workers, (args.bind_address, args.port),
                       lambda worker: serve(args, config, worker), balanced=config is not None)
