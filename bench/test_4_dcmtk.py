"""Scenario 4: DCMTK as the native anchor.

The same ``storescu +tls`` run (one association carrying every file) into
``storescp +tls`` and into a pynetdicom SCP on dcxsec, and on Python's ssl for
scale.  Both kinds of SCP write the received files into a folder under the
same temporary directory, i.e. the same disk.  Both SCPs offer a maximum PDU
of 16384 (storescp's default).  The time includes starting storescu, which
is the same for every SCP.

This DCMTK build leaves Nagle's algorithm on unless the environment variable
TCP_NODELAY=1 is set, and then every C-STORE waits for a delayed ACK (about
40 ms).  storescu always runs with TCP_NODELAY=1, and the reference is
storescp with it too; storescp as started with no environment is shown as well.
All four SCPs listen at once and take their rounds in turn (see interleave.py).

With BENCH_ABLATE=1, the same ``storescu`` into dcxsec SCPs with and without
each of dcxsec's speed mechanisms, each SCP in a process of its own started
with that DCXSEC_WITHOUT (peers.py).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SIZES, ablation
from contenders import ABLATION_VARIANTS, DCXSEC, SSL, pynetdicom_contender
from interleave import Contestant, best_rounds
from report import ABLATION, MAIN

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None or shutil.which("storescp") is None,
                                reason="DCMTK is not installed (Debian package dcmtk)")

STORESCP = "storescp"
STORESCP_NAGLE = "storescp (Nagle)"
MAX_PDU = 16384
NODELAY_ENV = {**os.environ, "TCP_NODELAY": "1"}


def tls_args(identity, ca) -> list[str]:
    return ["+tls", str(identity.key_path), str(identity.cert_path), "+cf", str(ca.cert_path)]


def wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"storescp exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("storescp did not start listening")


class DcmtkSCP:
    """``storescp +tls`` writing into ``directory``."""

    def __init__(self, pki, directory: Path, nodelay: bool) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = directory
        self.proc = subprocess.Popen(
            ["storescp", *tls_args(pki.server, pki.ca), "-od", str(directory), "-aet", "BENCH-SCP",
             "--max-pdu", str(MAX_PDU), str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=NODELAY_ENV if nodelay else None)
        wait_for_port(self.port, self.proc)

    def clear(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def file_count(server) -> int:
    return len(list(server.directory.iterdir()))


def storescu(pki, port: int, files: list[Path]) -> None:
    done = subprocess.run(["storescu", *tls_args(pki.client, pki.ca), "-aec", "BENCH-SCP",
                           "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=600, env=NODELAY_ENV)
    assert done.returncode == 0, done.stderr



@pytest.fixture
def scps(pki, scp_factory, tmp_path):
    """Every SCP of the scenario, listening at once, so that they take their rounds in turn."""
    made = {}
    try:
        for name, folder in ((STORESCP, "storescp"), (STORESCP_NAGLE, "storescp-nagle")):
            (tmp_path / folder).mkdir()
            made[name] = DcmtkSCP(pki, tmp_path / folder, nodelay=name == STORESCP)
        for name in (DCXSEC, SSL):
            made[name] = scp_factory(pynetdicom_contender(name, pki).server_context,
                                     max_pdu=MAX_PDU)
        yield made
    finally:
        for name in (STORESCP, STORESCP_NAGLE):
            if name in made:
                made[name].stop()


class Stores:
    """One SCP's rounds: ``storescu`` with every file; each round checks the one before."""

    def __init__(self, pki, server, files: list[Path]) -> None:
        self.pki, self.server, self.files = pki, server, files

    def prepare(self) -> None:
        self.check()
        self.server.clear()

    def run(self) -> None:
        storescu(self.pki, self.server.port, self.files)

    def check(self) -> None:
        """The last round's files all arrived (none before the first round)."""
        assert file_count(self.server) in (0, len(self.files))


def run_storescu_benchmark(benchmark, report, pki, scps, files: list[Path], label: str,
                           section: str = MAIN) -> None:
    stores = {}
    for name, server in scps.items():
        storescu(pki, server.port, files[:1])  # warm-up
        server.clear()
        stores[name] = Stores(pki, server, files)
    every: dict[str, list[float]] = {}
    best = best_rounds(benchmark, [Contestant(name, s.run, prepare=s.prepare)
                                   for name, s in stores.items()], DCXSEC, SIZES.store_rounds,
                       every)
    for name, server in scps.items():
        assert file_count(server) == len(files), name
        server.clear()

    size = sum(p.stat().st_size for p in files)
    key = f"4-{label}-{section}"
    report.group(key, f"4 storescu +tls {len(files)} x {label} into ...", "MB/s",
                 ref=STORESCP if section == MAIN else None, section=section)
    notes = {STORESCP: "DCMTK storescp +tls, TCP_NODELAY=1",
             STORESCP_NAGLE: "DCMTK storescp +tls, no environment"}
    for name in scps:
        note = notes.get(name) or f"pynetdicom SCP on {name}, {scps[name].protocol}"
        report.add(key, name, size / best[name] / 1e6, note=note,
                   rounds=[size / s / 1e6 for s in every[name]])


def test_storescu_small_objects(benchmark, report, pki, scps, small_files):
    run_storescu_benchmark(benchmark, report, pki, scps, small_files,
                           f"{SIZES.small_size // 1024} KiB")


def test_storescu_large_objects(benchmark, report, pki, scps, large_files):
    run_storescu_benchmark(benchmark, report, pki, scps, large_files,
                           f"{SIZES.large_size / 1e6:g} MB")


@pytest.fixture
def ablation_scps(remote_scp_factory):
    """dcxsec SCPs with and without each mechanism, each in a process of its own."""
    return {name: remote_scp_factory(DCXSEC, without=without, max_pdu=MAX_PDU)
            for name, without in ABLATION_VARIANTS.items()}


@ablation
def test_storescu_ablation_small_objects(benchmark, report, pki, ablation_scps, small_files):
    run_storescu_benchmark(benchmark, report, pki, ablation_scps, small_files,
                           f"{SIZES.small_size // 1024} KiB", ABLATION)


@ablation
def test_storescu_ablation_large_objects(benchmark, report, pki, ablation_scps, large_files):
    run_storescu_benchmark(benchmark, report, pki, ablation_scps, large_files,
                           f"{SIZES.large_size / 1e6:g} MB", ABLATION)
