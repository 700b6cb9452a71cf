"""`dcxsec cert export`: a private key never leaves unencrypted by accident."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from dcxsec import CertStore
from dcxsec.store import CertificateStore

CLI = [sys.executable, "-m", "dcxsec.cli", "cert", "--store", "current-user"]


@pytest.fixture
def stored(pki, tmp_path, monkeypatch):
    """The test client's identity in a CURRENT_USER store of its own; its thumbprint."""
    monkeypatch.setenv("DCXSEC_CURRENT_USER_STORE", str(tmp_path / "store"))
    CertificateStore(CertStore.CURRENT_USER).add("My", [pki.client.identity.certificate],
                                                 pki.client.identity.key_pem())
    return pki.client.thumbprint


def export(*args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    """`dcxsec cert export ...` as a script runs it: no terminal on stdin."""
    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([*CLI, "export", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, preexec_fn=set_umask)


def export_on_terminal(args: list[str], typed: list[str]) -> tuple[int, str]:
    """`dcxsec cert export ...` on a real pseudo-terminal, typing ``typed`` at each
    password prompt; (exit code, what the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and controlling terminal are the pty
        try:
            os.execv(sys.executable, [*CLI, "export", *args])
        finally:
            os._exit(127)
    shown, answers = b"", list(typed)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child has gone
                break
            if not chunk:
                break
            shown += chunk
            # one answer per prompt, once it is whole (getpass flushes what came before it)
            if answers and shown.count(b"password") > len(typed) - len(answers) \
                    and shown.rstrip().endswith(b":"):
                os.write(fd, answers.pop(0).encode() + b"\n")
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:  # still waiting for input: end it, and fail below with what it showed
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_pkcs12_with_no_password_and_no_terminal_is_refused(stored, tmp_path):
    out = tmp_path / "ae.pfx"
    done = export(stored, str(out), "--key")
    assert done.returncode == 1
    assert "no password was given" in done.stderr and "--no-password" in done.stderr
    assert not out.exists()
    done = export(stored, str(out), "--key", "--password", "")
    assert done.returncode == 1 and "--no-password" in done.stderr and not out.exists()


def test_pkcs12_unencrypted_only_when_asked_for(stored, pki, tmp_path):
    out = tmp_path / "ae.pfx"
    done = export(stored, str(out), "--key", "--no-password", umask=0)
    assert done.returncode == 0, done.stderr
    assert "UNENCRYPTED" in done.stdout
    key, cert, _ = pkcs12.load_key_and_certificates(out.read_bytes(), None)
    assert cert == pki.client.identity.certificate
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert mode(out) == 0o600
    assert not out.with_suffix(".key").exists()  # the key is inside the PFX, nowhere else


def test_pkcs12_with_a_given_password(stored, pki, tmp_path):
    out = tmp_path / "ae.p12"  # the suffix chooses PKCS#12
    done = export(stored, str(out), "--key", "--password", "pw")
    assert done.returncode == 0, done.stderr
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(out.read_bytes(), None)
    _, cert, _ = pkcs12.load_key_and_certificates(out.read_bytes(), b"pw")
    assert cert == pki.client.identity.certificate and mode(out) == 0o600


def test_terminal_asks_for_the_password_twice(stored, pki, tmp_path):
    out = tmp_path / "ae.pfx"
    code, shown = export_on_terminal([stored, str(out), "--key"], ["s3cret", "s3cret"])
    assert code == 0, shown
    assert "PKCS#12 password:" in shown and "PKCS#12 password (again):" in shown
    assert "s3cret" not in shown  # getpass does not echo
    _, cert, _ = pkcs12.load_key_and_certificates(out.read_bytes(), b"s3cret")
    assert cert == pki.client.identity.certificate


def test_terminal_passwords_that_differ_write_nothing(stored, tmp_path):
    out = tmp_path / "ae.pfx"
    code, shown = export_on_terminal([stored, str(out), "--key"], ["s3cret", "s3creT"])
    assert code == 1 and "the two passwords differ" in shown
    assert not out.exists()
    code, shown = export_on_terminal([stored, str(out), "--key"], [""])
    assert code == 1 and "--no-password" in shown and not out.exists()


def test_pem_key_for_dcmtk_is_private_from_the_start(stored, pki, tmp_path):
    out = tmp_path / "ae.pem"
    stale = out.with_suffix(".key")
    stale.write_text("an older, world-readable file")
    stale.chmod(0o644)
    done = export(stored, str(out), "--key", umask=0)
    assert done.returncode == 0, done.stderr
    assert mode(stale) == 0o600 and mode(out) == 0o666  # the key private, the certificate as umask 0 makes it
    key = serialization.load_pem_private_key(stale.read_bytes(), None)  # DCMTK's unencrypted PEM
    assert key.public_key().public_numbers() == pki.client.identity.certificate.public_key().public_numbers()


def test_password_options_are_refused_where_they_mean_nothing(stored, tmp_path):
    done = export(stored, str(tmp_path / "ae.pem"), "--key", "--no-password")
    assert done.returncode == 1 and "are for PKCS#12" in done.stderr
    assert not (tmp_path / "ae.pem").exists()
    done = export(stored, str(tmp_path / "ae.key"), "--key")
    assert done.returncode == 1 and "would overwrite the certificate" in done.stderr
