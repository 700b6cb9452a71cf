"""Scenario 7: a gateway.  32 SCUs, in 4 processes of 8, store objects of
assorted sizes at once into one SCP process, which writes each and keeps its
SHA-256; after every round the hashes must be exactly those of the files
sent, each once.  Objects per second, for dcxsec (its SCP started with
dcxsec.start_server), ``ssl`` and plain TCP, taken in turn (interleave.py).

dcxsec runs a second time with a junk flood alongside, from a process of
its own (gateway.py flood): silent sockets, half ClientHellos, HTTP, random
bytes, plain DICOM, TLS 1.0 hellos, oversized records, resets mid-handshake,
at most 40 at once and about 100 a second.  Under it, dcxsec must keep at
least 0.8x its own throughput without it, and lose nothing.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import QUICK, dataset_size, write_ct_files
from contenders import DCXSEC, SSL, TCP, pki_folder
from interleave import Contestant, best_rounds
from peers import Peer
from report import Target

SCU_PROCESSES, SCUS_EACH = 4, 8
OBJECT_SIZES = (16 * 1024, 128 * 1024, 512 * 1024, 2 * 1024 * 1024)
OBJECTS_EACH = 1 if QUICK else 4  # per SCU and round
ROUNDS = 1 if QUICK else 3
UNDER_FLOOD = "dcxsec under flood"
FLOOD_TARGETS = (Target("ref", 0.8),)


def dataset_hash(path: Path) -> str:
    """SHA-256 of what a C-STORE of the file carries: its dataset, meta group left out."""
    data = path.read_bytes()
    return hashlib.sha256(data[len(data) - dataset_size(path):]).hexdigest()


@pytest.fixture(scope="module")
def gateway_files(tmp_path_factory) -> list[Path]:
    count = SCU_PROCESSES * SCUS_EACH * OBJECTS_EACH
    folder = tmp_path_factory.mktemp("gateway")
    files: list[Path] = []
    for size in OBJECT_SIZES:
        files += write_ct_files(folder / str(size), count // len(OBJECT_SIZES), size)
    return files


class Flood(Peer):
    """gateway.py flood: hostile connections from its start until request_stop()."""

    def __init__(self, port: int) -> None:
        super().__init__(["flood", str(port)], None, script="gateway.py")

    def request_stop(self) -> None:
        self.proc.stdin.write(json.dumps("quit") + "\n")
        self.proc.stdin.flush()

    def collect(self) -> dict[str, int]:
        """What it sent, once it has stopped."""
        sent = self._answer()["sent"]
        super().stop()
        return sent


class Gateway:
    """One contender's SCP and its requestor processes."""

    def __init__(self, kind: str, pki, directory: Path, files: list[Path]) -> None:
        directory.mkdir()
        folder = str(pki_folder(pki))
        self.scp = Peer(["scp", kind, folder, str(directory)], None, script="gateway.py")
        self.port = self.scp.first["port"]
        self.scus = [Peer(["scu", kind, folder], None, script="gateway.py")
                     for _ in range(SCU_PROCESSES)]
        self.files = files
        self.name = f"{kind} gateway in {directory.name}"
        self.expected = sorted(dataset_hash(p) for p in files)
        self.flood: Flood | None = None
        self.junk: dict[str, int] = {}  # hostile connections sent, by kind

    def start_flood(self) -> None:
        self.stop_flood()
        self.flood = Flood(self.port)

    def store_flooded(self) -> None:
        """store(), the flood running throughout; it is told to stop at once after."""
        self.store()
        self.flood.request_stop()

    def stop_flood(self) -> None:
        if self.flood is not None:
            self.flood.request_stop()
            for kind, n in self.flood.collect().items():
                self.junk[kind] = self.junk.get(kind, 0) + n
            self.flood = None

    def store(self) -> None:
        """Every file once: each SCU process gets SCUS_EACH shares, all at once."""
        shares = [[str(p) for p in self.files[i::SCU_PROCESSES * SCUS_EACH]]
                  for i in range(SCU_PROCESSES * SCUS_EACH)]
        for n, scu in enumerate(self.scus):
            mine = shares[n * SCUS_EACH:(n + 1) * SCUS_EACH]
            scu.proc.stdin.write(json.dumps({"port": self.port, "shares": mine}) + "\n")
            scu.proc.stdin.flush()
        answers = [scu._answer() for scu in self.scus]
        failed = [reason for answer in answers for reason in answer["failed"]]
        assert not failed, f"{self.name}: {len(failed)} failures: {failed[:3]}"
        assert sum(answer["stored"] for answer in answers) == len(self.files)

    def check_and_clear(self) -> None:
        """Nothing lost, nothing twice: the previous round's hashes are the files'."""
        hashes = self.scp.call("received")["hashes"]
        if hashes:
            assert hashes == self.expected
        self.scp.call("clear")

    def stop(self) -> None:
        self.stop_flood()
        for peer in self.scus + [self.scp]:
            peer.stop()


def test_gateway(benchmark, report, pki, tmp_path, gateway_files):
    gateways = {kind: Gateway(kind, pki, tmp_path / kind, gateway_files)
                for kind in (DCXSEC, SSL, TCP)}
    gateways[UNDER_FLOOD] = Gateway(DCXSEC, pki, tmp_path / "flooded", gateway_files)
    flooded = gateways[UNDER_FLOOD]
    try:
        contestants = []
        for name, gateway in gateways.items():
            gateway.store()  # warm-up
            gateway.check_and_clear()

            def prepare(gateway=gateway, name=name) -> None:
                if name == UNDER_FLOOD:
                    gateway.stop_flood()  # the last round's, if any: its connections end first
                gateway.check_and_clear()
                if name == UNDER_FLOOD:
                    gateway.start_flood()

            run = flooded.store_flooded if gateway is flooded else gateway.store
            contestants.append(Contestant(name, run, prepare=prepare))
        every: dict[str, list[float]] = {}
        best = best_rounds(benchmark, contestants, DCXSEC, ROUNDS, every)
        flooded.stop_flood()
        for gateway in gateways.values():
            gateway.check_and_clear()
        sent = flooded.junk
    finally:
        for gateway in gateways.values():
            gateway.stop()

    count = len(gateway_files)
    note = f"{SCU_PROCESSES * SCUS_EACH} SCUs in {SCU_PROCESSES} processes, {count} objects"
    report.group("7", "7 gateway: 32 SCUs store into one SCP", "objects/s")
    for name in (DCXSEC, SSL, TCP):
        report.add("7", name, count / best[name], note=note,
                   rounds=[count / s for s in every[name]])
    report.group("7-flood", "7 gateway under a junk flood", "objects/s",
                 ref="dcxsec, no flood", targets=FLOOD_TARGETS)
    report.add("7-flood", "dcxsec, no flood", count / best[DCXSEC])
    report.add("7-flood", DCXSEC, count / best[UNDER_FLOOD],
               note=f"junk connections: {sum(sent.values())} ({json.dumps(sent)})",
               rounds=[count / s for s in every[UNDER_FLOOD]])
