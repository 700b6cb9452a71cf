"""``dcxsec send HOST PORT PATH...``: C-STORE files and folders over TLS.

Presentation contexts come from the files themselves: each object is offered
in the transfer syntax it is stored in (``--decompress`` also offers an
uncompressed one, and converts when the peer takes only that).  Several
associations run at once with ``--associations N``.  Exit status 0 when every
object was stored, 1 when any was refused, failed or not sent (``--retry N``
sends those again; ``--failed-list FILE`` lists them), 2 for an unusable
configuration.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcxsec import cliopts
from dcxsec.errors import ConfigurationError
from dcxsec.progress import Progress
from dcxsec.requestor import steady

if TYPE_CHECKING:  # pydicom is imported once the command line is read (see cli.py)
    from dcxsec.dicomfiles import DicomFile

WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)  # stored, with a remark


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("send", help="C-STORE files and folders over TLS "
                            "(as DCMTK's storescu +tls)")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files and folders")
    p.add_argument("-r", "--recursive", action="store_true", help="into subfolders too")
    p.add_argument("--aet", default="STORESCU", help="this AE's title (default STORESCU)")
    p.add_argument("--aec", default="ANY-SCP", help="the peer's AE title (default ANY-SCP)")
    p.add_argument("--associations", type=int, default=1, metavar="N",
                   help="associations at once (default 1)")
    p.add_argument("--decompress", action="store_true",
                   help="also offer compressed objects uncompressed, converting when needed")
    p.add_argument("--retry", type=int, default=0, metavar="N",
                   help="send what failed again, up to N more times (default 0)")
    p.add_argument("--failed-list", type=Path, metavar="FILE",
                   help="write the paths of the objects not stored, one per line")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the peer at each step (default 30)")
    p.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    cliopts.add_tls_options(p)
    p.set_defaults(run=run)


@dataclass
class Outcome:
    """What became of every file."""

    stored: list[DicomFile] = field(default_factory=list)
    warned: list[tuple[DicomFile, str]] = field(default_factory=list)
    failed: dict[Path, tuple[DicomFile, str, bool]] = field(default_factory=dict)  # ..., retryable
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, f: DicomFile, warning: str = "") -> None:
        with self.lock:
            self.failed.pop(f.path, None)
            self.stored.append(f)
            if warning:
                self.warned.append((f, warning))

    def fail(self, f: DicomFile, why: str, retryable: bool = True) -> None:
        with self.lock:
            self.failed[f.path] = (f, why, retryable)


class Sender:
    """The requestor side of one pass: associations at once over a queue of files."""

    def __init__(self, args: argparse.Namespace, tls_args: Any, outcome: Outcome,
                 progress: Progress) -> None:
        self.args, self.tls_args = args, tls_args
        self.outcome, self.progress = outcome, progress

    def associate(self, contexts: set[tuple[str, str]]) -> tuple[Any, str]:
        from pynetdicom import AE

        ae = AE(self.args.aet)
        for sop_class, syntax in sorted(contexts):
            ae.add_requested_context(sop_class, syntax)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.args.timeout
        ae.connection_timeout = self.args.timeout
        with cliopts.reasons_heard() as reasons:
            assoc = ae.associate(self.args.host, self.args.port, ae_title=self.args.aec,
                                 tls_args=self.tls_args)
        return steady(assoc), "" if assoc.is_established else reasons.reason(
            plain=self.tls_args is None)

    def store(self, assoc: Any, f: DicomFile) -> None:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
        source: Any = f.path
        if (f.sop_class, f.transfer_syntax) not in accepted:
            plain = [ts for cls, ts in accepted if cls == f.sop_class]
            if not (self.args.decompress and f.compressed and plain):
                hint = " (--decompress converts it)" if f.compressed and not self.args.decompress else ""
                self.outcome.fail(f, f"the peer accepted no presentation context for SOP class "
                                  f"{f.sop_class} in transfer syntax {f.transfer_syntax}{hint}",
                                  retryable=False)
                return
            try:
                source = decompressed(f)
            except Exception as exc:  # noqa: BLE001 - pydicom's handlers raise many kinds
                self.outcome.fail(f, f"cannot be decompressed: {exc}", retryable=False)
                return
        try:
            if source is f.path and not f.as_stored:
                from pydicom import dcmread

                source = dcmread(f.path)  # a quirky file: decoded, and encoded again as it says
            status = assoc.send_c_store(source)
        except Exception as exc:  # noqa: BLE001 - pynetdicom refuses a dataset in many ways
            self.outcome.fail(f, f"not sent: {exc}", retryable=False)
            self.progress.advance(f.size)
            return
        code = getattr(status, "Status", None)
        if code == 0x0000:
            self.outcome.ok(f)
        elif code in WARNINGS:
            self.outcome.ok(f, f"warning status 0x{code:04X}")
        elif code is None:
            self.outcome.fail(f, "no response from the peer (the association ended or timed out)")
        else:
            comment = getattr(status, "ErrorComment", "")
            self.outcome.fail(f, f"refused with status 0x{code:04X}" + (f": {comment}" if comment else ""))
        self.progress.advance(f.size)

    def worker(self, contexts: set, files: queue.Queue, last_refusal: list[str]) -> None:
        assoc = None
        while True:
            try:
                f = files.get_nowait()
            except queue.Empty:
                break
            if assoc is None or not assoc.is_established:
                assoc, why = self.associate(contexts)
                if why:
                    self.outcome.fail(f, f"association not established: {why}")
                    last_refusal.append(why)
                    self.progress.advance(f.size)
                    return
            self.store(assoc, f)
        if assoc is not None and assoc.is_established:
            assoc.release()

    def run(self, files: list[DicomFile]) -> None:
        from dcxsec.dicomfiles import batches, contexts_for

        for f in files:  # a file cut short fails before any association is asked for it
            if f.damage:
                self.outcome.fail(f, f.damage, retryable=False)
                self.progress.advance(f.size)
        for batch in batches([f for f in files if not f.damage], self.args.decompress):
            contexts = contexts_for(batch, self.args.decompress)
            work: queue.Queue = queue.Queue()
            for f in batch:
                work.put(f)
            last_refusal: list[str] = []
            threads = [threading.Thread(target=self.worker, args=(contexts, work, last_refusal))
                       for _ in range(min(self.args.associations, len(batch)))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            while not work.empty():  # every association was refused: the rest was not sent
                f = work.get_nowait()
                self.outcome.fail(f, f"not sent: {last_refusal[-1] if last_refusal else 'no association'}")
                self.progress.advance(f.size)


def decompressed(f: DicomFile):
    from pydicom import dcmread

    ds = dcmread(f.path)
    ds.decompress()
    return ds


def collect(paths: list[Path], recursive: bool) -> tuple[list[DicomFile], list[tuple[Path, str]]]:
    """The DICOM files found, and the files skipped with why."""
    from dcxsec.dicomfiles import read_header, walk

    files, skipped = [], []
    for path in walk(paths, recursive):
        try:
            files.append(read_header(path))
        except ValueError as exc:
            skipped.append((path, str(exc)))
    return files, skipped


def summary(outcome: Outcome, skipped: list, seconds: float) -> dict[str, Any]:
    sent_bytes = sum(f.size for f in outcome.stored)
    return {
        "stored": len(outcome.stored), "warnings": len(outcome.warned),
        "failed": len(outcome.failed), "skipped": len(skipped),
        "bytes": sent_bytes, "seconds": round(seconds, 3),
        "mb_per_s": round(sent_bytes / seconds / 1e6, 2) if seconds > 0 else 0.0,
        "failures": [{"path": str(p), "reason": why} for p, (_, why, _) in outcome.failed.items()],
        "skipped_files": [{"path": str(p), "reason": why} for p, why in skipped],
    }


def run(args: argparse.Namespace) -> int:
    from pynetdicom import _config

    # A file given by its path goes out as stored, read from disk PDU by PDU:
    # no decoding and encoding again (half the CPU of a send), and the peer
    # gets the very bytes of the file.  read_header() says which files can.
    _config.STORE_SEND_CHUNKED_DATASET = True
    if args.associations < 1 or args.retry < 0:
        print("dcxsec send: --associations must be at least 1 and --retry at least 0", file=sys.stderr)
        return 2
    try:
        tls_args = cliopts.tls_args(cliopts.config_from_args(args))
    except (ConfigurationError, ValueError) as exc:
        print(f"dcxsec send: {exc}", file=sys.stderr)
        return 2
    # pydicom's remarks on files it reads past (implicit VR where explicit was
    # announced, ...) are not the operator's business; refusals are.
    warnings.filterwarnings("ignore", module=r"pydicom\.")
    files, skipped = collect(args.paths, args.recursive)
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not files:
        print("dcxsec send: no DICOM files to send", file=sys.stderr)
        return 1
    outcome = Outcome()
    start = time.perf_counter()
    todo = files
    for attempt in range(args.retry + 1):
        with Progress(len(todo), sum(f.size for f in todo), quiet=args.json,
                      label="send" if attempt == 0 else f"retry {attempt}") as progress:
            Sender(args, tls_args, outcome, progress).run(todo)
        todo = [f for f, _, retryable in outcome.failed.values() if retryable]
        if not todo:
            break
    result = summary(outcome, skipped, time.perf_counter() - start)
    if args.failed_list is not None:
        args.failed_list.write_text("".join(f"{p}\n" for p in outcome.failed))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for failure in result["failures"]:
            print(f"FAILED {failure['path']}: {failure['reason']}", file=sys.stderr)
        print(f"{result['stored']} of {len(files)} objects stored ({result['bytes'] / 1e6:.1f} MB "
              f"in {result['seconds']:.1f} s, {result['mb_per_s']:.1f} MB/s)"
              + (f", {result['warnings']} with warnings" if result["warnings"] else "")
              + (f", {result['failed']} failed" if result["failed"] else "")
              + (f", {result['skipped']} files skipped" if result["skipped"] else ""))
    return 0 if not outcome.failed else 1
