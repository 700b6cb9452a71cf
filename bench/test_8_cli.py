"""Scenario 8: the command line.  4 senders at once, each with its own
folder of 512 KiB CT objects, into one receiver that writes every object to
disk.  The senders are ``dcxsec send`` processes, and then DCMTK's
``storescu +tls``, which leaves the receiver most of the 2 cores (4 Python
senders take about 1.8 of the 3.3 core-seconds a round has).  The receivers:

- ``dcxsec receive`` with ``--workers 1`` and ``--workers 2``, and with
  ``--max-pdu 16382`` (what its 1 MiB default gains);
- DCMTK's ``storescp +tls --fork`` (the native anchor; TCP_NODELAY=1, as
  DCMTK reads it from the environment);
- a pynetdicom SCP on Python's ``ssl`` (peers.py, in a process of its own).

Objects/s and MB/s from the first sender's start to the last one's end,
rounds taken in turn (interleave.py), and the receiver's CPU time per object
(its processes and their children, over the best round).  Every round's
objects must all be on disk before the next.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import QUICK, SIZES, write_ct_files
from contenders import SSL, pki_folder
from interleave import Contestant, best_rounds
from peers import RemoteSCP
from report import Target

SENDERS = 4
LOADS = ("dcxsec send", "storescu +tls")
RECEIVER_AT: dict[int, str] = {}  # port -> receiver, for a failing sender's message
WORKERS_1, WORKERS_2 = "dcxsec receive", "dcxsec receive --workers 2"
SMALL_PDU = "dcxsec receive --max-pdu 16382"  # pynetdicom's and DCMTK's usual size: what 1 MiB gains
DCMTK, PYNETDICOM_SSL = "storescp +tls --fork", "pynetdicom on ssl"
TARGETS_VS_SSL = (Target(PYNETDICOM_SSL, 1.2),)
TARGETS_WORKERS = (Target(WORKERS_1, 1.6),)
pytestmark = pytest.mark.skipif(shutil.which("storescp") is None, reason="needs DCMTK's storescp")


def tls_files(pki, identity) -> list[str]:
    return ["--cert", str(identity.cert_path), "--key", str(identity.key_path),
            "--trust", str(pki.ca.cert_path)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.args} did not listen")


class Receiver:
    """A receiving process writing into ``out``, and how to count what it wrote."""

    def __init__(self, name: str, pki, out: Path) -> None:
        self.name, self.out, self.port = name, out, free_port()
        out.mkdir(parents=True)
        self.scp = None
        if name == PYNETDICOM_SSL:
            self.scp = RemoteSCP(SSL, pki_folder(pki), out)
            self.port, self.proc = self.scp.port, None
            return
        if name == DCMTK:
            args = ["storescp", "+tls", str(pki.server.key_path), str(pki.server.cert_path),
                    "+cf", str(pki.ca.cert_path), "--fork", "-od", str(out), str(self.port)]
            env = dict(os.environ, TCP_NODELAY="1")
        else:
            args = [sys.executable, "-m", "dcxsec", "receive", str(self.port), "--out", str(out),
                    "--layout", "flat", "--log-level", "WARNING", *tls_files(pki, pki.server)]
            if name == WORKERS_2:
                args += ["--workers", "2"]
            if name == SMALL_PDU:
                args += ["--max-pdu", "16382"]
            env = dict(os.environ)
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc)

    def cpu_seconds(self) -> float:
        """CPU time of the receiver's processes so far, their children included
        (storescp's forked ones once reaped, the workers while they run)."""
        pid = self.scp.proc.pid if self.scp is not None else self.proc.pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, check=False,
                                  text=True).stdout.split()
        total = 0.0
        for p in [pid, *map(int, children)]:
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a child that ended meanwhile
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return total

    def count(self) -> int:
        return sum(1 for p in self.out.rglob("*") if p.is_file() and not p.name.startswith("."))

    def clear(self) -> None:
        if self.scp is not None:
            self.scp.clear()
            return
        for path in list(self.out.rglob("*")):
            if path.is_file():
                path.unlink()

    def stop(self) -> None:
        if self.scp is not None:
            self.scp.stop()
        elif self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def sender(load: str, port: int, folder: Path, pki) -> subprocess.Popen:
    if load == "dcxsec send":
        args = [sys.executable, "-m", "dcxsec", "send", "127.0.0.1", str(port), str(folder),
                "--json", *tls_files(pki, pki.client)]
    else:
        args = ["storescu", "+tls", str(pki.client.key_path), str(pki.client.cert_path),
                "+cf", str(pki.ca.cert_path), "127.0.0.1", str(port),
                *map(str, sorted(folder.iterdir()))]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TCP_NODELAY="1"))


def send_all(load: str, port: int, folders: list[Path], pki) -> None:
    """The 4 senders at once; each must store all of its folder."""
    procs = [sender(load, port, folder, pki) for folder in folders]
    for proc, folder in zip(procs, folders):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"into {RECEIVER_AT.get(port)}: {out[-2000:]} {err[-2000:]}"
        if load == "dcxsec send":
            assert json.loads(out)["stored"] == len(list(folder.iterdir()))


@pytest.fixture(scope="module")
def sender_folders(tmp_path_factory) -> list[Path]:
    each = max(1, (20 if QUICK else SIZES.small_count) // SENDERS)
    root = tmp_path_factory.mktemp("senders")
    return [Path(write_ct_files(root / f"sender{i}", each, SIZES.small_size)[0]).parent
            for i in range(SENDERS)]


@pytest.mark.parametrize("load", LOADS)
def test_cli_send_into_receivers(benchmark, report, pki, tmp_path, sender_folders, load):
    total = sum(len(list(f.iterdir())) for f in sender_folders)
    nbytes = sum(p.stat().st_size for f in sender_folders for p in f.iterdir())
    receivers = {}
    try:
        for name in (WORKERS_1, WORKERS_2, SMALL_PDU, DCMTK, PYNETDICOM_SSL):
            receivers[name] = Receiver(name, pki, tmp_path / name.replace(" ", "_"))
            RECEIVER_AT[receivers[name].port] = name
        contestants = []
        for name, receiver in receivers.items():
            def prepare(receiver=receiver) -> None:
                done = receiver.count()
                assert done in (0, total), f"{receiver.name}: {done} of {total} objects on disk"
                receiver.clear()

            def round_(receiver=receiver) -> None:
                before = receiver.cpu_seconds()
                send_all(load, receiver.port, sender_folders, pki)
                cpu.setdefault(receiver.name, []).append(receiver.cpu_seconds() - before)

            send_all(load, receiver.port, sender_folders, pki)  # warm-up
            contestants.append(Contestant(name, round_, prepare=prepare))
        every: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        best = best_rounds(benchmark, contestants, WORKERS_1, SIZES.store_rounds, every)
        for receiver in receivers.values():
            assert receiver.count() == total, receiver.name
    finally:
        for receiver in receivers.values():
            receiver.stop()

    note = f"{SENDERS} {load} processes, {total} x {SIZES.small_size // 1024} KiB"
    key = f"8-{load}"
    report.group(f"{key}-objects", f"8 {load} x4 into ...", "objects/s", ref=DCMTK)
    report.group(f"{key}-cpu", f"8 {load} x4: receiver CPU per object", "ms", ref=PYNETDICOM_SSL)
    report.group(f"{key}-vs-ssl", f"8 {load} x4: dcxsec receive against pynetdicom on ssl",
                 "objects/s", ref=PYNETDICOM_SSL, targets=TARGETS_VS_SSL)
    report.group(f"{key}-workers", f"8 {load} x4: dcxsec receive --workers 2 against 1",
                 "objects/s", ref=WORKERS_1, targets=TARGETS_WORKERS)
    for name, seconds in best.items():
        report.add(f"{key}-objects", name, total / seconds,
                   note=f"{nbytes / seconds / 1e6:.1f} MB/s; {note}",
                   rounds=[total / s for s in every[name]])
        per_round = dict(zip(every[name], cpu[name]))
        report.add(f"{key}-cpu", name, per_round[seconds] * 1000 / total,
                   note="over the best round; its processes and their children")
    # the verdicts: dcxsec's row of each comparison is the one the target reads
    report.add(f"{key}-vs-ssl", PYNETDICOM_SSL, total / best[PYNETDICOM_SSL])
    report.add(f"{key}-vs-ssl", "dcxsec", total / best[WORKERS_1], note="dcxsec receive, 1 worker")
    report.add(f"{key}-workers", WORKERS_1, total / best[WORKERS_1])
    report.add(f"{key}-workers", "dcxsec", total / best[WORKERS_2],
               note="dcxsec receive --workers 2")
