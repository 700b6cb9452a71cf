"""``dcxsec receive``, run as an operator runs it: its own process, real
senders (``dcxsec send``, DCMTK's storescu and echoscu +tls)."""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import free_port, needs_tools
from dcxsec.receive import component
from test_cli_echo import dcxsec_cli, tls
from test_dcmtk import tls_args as dcmtk_tls
from test_pynetdicom import dataset_bytes


class Receive:
    """A ``dcxsec receive`` process on a free port, its log kept."""

    def __init__(self, pki, out: Path, *extra: str, limit_file_size: int | None = None) -> None:
        self.port, self.out = free_port(), out
        self.log_path = out.parent / f"receive-{self.port}.log"
        self.log = self.log_path.open("w")

        def limits() -> None:
            if limit_file_size is not None:  # writes past it fail with EFBIG, as on a full disk
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dcxsec", "receive", str(self.port), "--out", str(out),
             "--aet", "ARCHIVE", *tls(pki.server, pki.ca), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=limits)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dcxsec receive did not listen: {self.text()}")

    def text(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(90)
        self.log.close()
        return code


@pytest.fixture
def receive(pki, tmp_path):
    started: list[Receive] = []

    def start(*extra: str, **kw) -> Receive:
        started.append(Receive(pki, tmp_path / f"archive{len(started)}", *extra, **kw))
        return started[-1]

    yield start
    for r in started:
        r.stop()


def stored(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.dcm"))


def test_send_into_receive_writes_the_layout_and_logs_the_association(pki, receive, study):
    r = receive()
    done = dcxsec_cli("send", "127.0.0.1", str(r.port), str(study), "-r", "--aec", "ARCHIVE",
                      "--json", *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    files = stored(r.out)
    assert sorted(dataset_bytes(p) for p in files) == sorted(
        dataset_bytes(p) for p in study.rglob("*.dcm"))
    for path in files:  # patient/study/series/instance
        ds = dcmread(path, stop_before_pixels=True)
        assert path.relative_to(r.out).parts == (
            component(ds.PatientID), ds.StudyInstanceUID, ds.SeriesInstanceUID,
            f"{ds.SOPInstanceUID}.dcm")
    assert not list(r.out.rglob(".incoming-*"))
    assert r.stop() == 0
    assert "CN=dcxsec-scu" in r.text() and pki.client.thumbprint in r.text()
    assert f"{len(files)} objects stored" in r.text()


@needs_tools("storescu", "echoscu", install="dcmtk")
def test_dcmtk_storescu_and_echoscu_into_receive(pki, receive, dicom_file):
    r = receive("--layout", "flat")
    sources = [dicom_file(256 * 1024), dicom_file(2 * 1024 * 1024)]
    echo = subprocess.run(["echoscu", *dcmtk_tls(pki.client, pki.ca), "-aec", "ARCHIVE",
                           "127.0.0.1", str(r.port)], capture_output=True, text=True, timeout=60)
    assert echo.returncode == 0, echo.stderr
    done = subprocess.run(["storescu", *dcmtk_tls(pki.client, pki.ca), "-aec", "ARCHIVE",
                           "127.0.0.1", str(r.port), *map(str, sources)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(dataset_bytes(p) for p in stored(r.out)) == sorted(map(dataset_bytes, sources))


def test_a_failing_disk_answers_failure_and_keeps_what_it_acknowledged(pki, receive, dicom_file,
                                                                      tmp_path):
    r = receive("--layout", "flat", limit_file_size=200 * 1024)
    small = [dicom_file(32 * 1024, tmp_path / f"small{i}.dcm") for i in range(3)]
    large = [dicom_file(1024 * 1024, tmp_path / f"large{i}.dcm") for i in range(2)]
    done = dcxsec_cli("send", "127.0.0.1", str(r.port), *map(str, small + large), "--json",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["stored"] == 3 and result["failed"] == 2
    assert all("0xA700" in f["reason"] for f in result["failures"])
    assert sorted(dataset_bytes(p) for p in stored(r.out)) == sorted(map(dataset_bytes, small))
    assert not list(r.out.rglob(".incoming-*"))
    r.stop()
    assert "not stored" in r.text() and "Traceback" not in r.text()


def test_sigterm_lets_the_association_in_flight_finish(pki, receive, dicom_file, tmp_path):
    r = receive("--layout", "flat")
    files = [dicom_file(2 * 1024 * 1024, tmp_path / f"o{i}.dcm") for i in range(15)]
    sender = subprocess.Popen([sys.executable, "-m", "dcxsec", "send", "127.0.0.1", str(r.port),
                               *map(str, files), "--json", *tls(pki.client, pki.ca)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not stored(r.out) and time.monotonic() < deadline:
        time.sleep(0.02)
    r.proc.send_signal(signal.SIGTERM)
    out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err
    assert json.loads(out)["stored"] == len(files)
    assert r.proc.wait(60) == 0
    assert len(stored(r.out)) == len(files)
    late = dcxsec_cli("echo", "127.0.0.1", str(r.port), *tls(pki.client, pki.ca),
                      "--timeout", "5")
    assert late.returncode == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers are forked processes")
def test_two_workers_share_the_port(pki, receive, study):
    r = receive("--workers", "2")
    done = dcxsec_cli("send", "127.0.0.1", str(r.port), str(study), "-r", "--associations", "4",
                      "--json", *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == len(list(study.rglob("*.dcm")))
    assert r.stop() == 0
    assert r.text().count("receiving on port") == 2


def test_plain_receive_says_so(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dcxsec", "receive", str(port), "--out",
                             str(tmp_path / "plain"), "--plain"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)
        done = dcxsec_cli("echo", "127.0.0.1", str(port), "--plain")
        assert done.returncode == 0, done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    assert "NOT encrypted" in out and "plain DICOM, no TLS" in out


@pytest.fixture
def study(tmp_path, dicom_file) -> Path:
    root = tmp_path / "study"
    (root / "b").mkdir(parents=True)
    for i, size in enumerate((64 * 1024, 512 * 1024)):
        dicom_file(size, root / f"a{i}.dcm")
        dicom_file(size, root / "b" / f"b{i}.dcm")
    return root



def test_the_max_pdu_offered_is_the_one_given(pki, receive, client_ctx, dicom_file):
    from conftest import requestor

    for extra, offered in (((), 1 << 20), (("--max-pdu", "65536"), 65536)):
        r = receive("--layout", "flat", *extra)
        assoc = requestor().associate("127.0.0.1", r.port, ae_title="ARCHIVE",
                                      tls_args=(client_ctx, None))
        assert assoc.is_established
        assert assoc.acceptor.maximum_length == offered
        source = dicom_file(2 * 1024 * 1024)
        assert assoc.send_c_store(source).Status == 0x0000
        assoc.release()
        assert [dataset_bytes(p) for p in stored(r.out)] == [dataset_bytes(source)]
    done = dcxsec_cli("receive", str(free_port()), "--out", str(r.out), "--max-pdu", "100")
    assert done.returncode == 2 and "--max-pdu must be 0 (no limit) or at least 4096" in done.stderr


@pytest.mark.parametrize("instance", ["1.2.3.4.5", "1.2.3.4.55"])  # odd and even lengths
def test_file_head_is_the_one_pynetdicom_writes(instance):
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    from dcxsec.part10 import PREAMBLE, file_head

    ct, explicit = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"
    expected = PREAMBLE + encode_file_meta(create_file_meta(
        sop_class_uid=ct, sop_instance_uid=instance, transfer_syntax=explicit))
    assert file_head(ct, instance, explicit) == expected
    for bad in ("", "1." * 40, "1.2.3.é"):
        with pytest.raises(ValueError):
            file_head(ct, bad, explicit)

