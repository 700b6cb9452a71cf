"""Shared fixtures: a test PKI, TLS contexts, connected pairs, pynetdicom SCPs."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sysconfig
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage, Verification

import dcxsec
from dcxsec import SecurityConfig, TLSContext, VerificationMethod

pytest_plugins = ["pki_fixtures"]

UNDER_CI = os.environ.get("CI", "").lower() == "true"

# pynetdicom installs echoscu, storescu and storescp of its own, without TLS,
# beside this interpreter: an activated virtualenv would put them before
# DCMTK's.  The peers meant here are DCMTK's.
_SCRIPTS = sysconfig.get_path("scripts")
os.environ["PATH"] = os.pathsep.join(
    d for d in os.environ.get("PATH", "").split(os.pathsep) if os.path.realpath(d) != os.path.realpath(_SCRIPTS))


def needs_tools(*tools: str, install: str) -> pytest.MarkDecorator:
    """A mark for tests that run a program .ci/run installs (Debian package
    ``install``): skipped with the reason where it is missing, but under CI
    (``CI=true``) failed with the tool's name, so that CI never skips them."""
    return pytest.mark.needs_tools(tools=tools, install=install)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_tools(tools, install): runs installed programs")


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="needs_tools"):
        missing = [tool for tool in mark.kwargs["tools"] if shutil.which(tool) is None]
        if not missing:
            continue
        reason = f"needs {', '.join(missing)} (apt-get install {mark.kwargs['install']})"
        if UNDER_CI:
            pytest.fail(f"CI installs this tool but it is missing: {reason}", pytrace=False)
        pytest.skip(reason)


def exit_code_within(pid: int, seconds: float) -> int | None:
    """A forked child's exit code, or None (and the child killed) if it is still running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def read_exactly(sock, size: int, chunk: int = 65536) -> bytes:
    """``size`` bytes, read at most ``chunk`` at a time (4096: pynetdicom's
    reads, which the decrypted storage answers; 65536: straight reads)."""
    got = bytearray()
    while len(got) < size:
        piece = sock.recv(min(chunk, size - len(got)))
        assert piece, f"EOF after {len(got)} of {size} bytes"
        got += piece
    return bytes(got)


@pytest.fixture(scope="session", autouse=True)
def isolated_stores(tmp_path_factory):
    """Point both store scopes at empty folders, so no real store leaks into a test."""
    root = tmp_path_factory.mktemp("stores")
    saved = {k: os.environ.get(k) for k in ("DCXSEC_CURRENT_USER_STORE", "DCXSEC_LOCAL_COMPUTER_STORE")}
    os.environ["DCXSEC_CURRENT_USER_STORE"] = str(root / "current-user")
    os.environ["DCXSEC_LOCAL_COMPUTER_STORE"] = str(root / "local-computer")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def config_for(issued, method=VerificationMethod.TRUST_CHAIN, trusted=(), **kw) -> SecurityConfig:
    """A SecurityConfig with ``issued`` as the local identity."""
    return SecurityConfig(certificate=issued.cert_path, private_key=issued.key_path,
                          verification_method=method, trusted_certificates=list(trusted),
                          use_system_trust=False, **kw)


@pytest.fixture(scope="session")
def server_ctx(pki) -> TLSContext:
    return TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path]))


@pytest.fixture(scope="session")
def client_ctx(pki) -> TLSContext:
    return TLSContext(config_for(pki.client, trusted=[pki.ca.cert_path]))


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pair:
    """A connected, handshaken client/server pair of TLSSockets (or the server's error)."""

    def __init__(self, server_ctx: TLSContext, client_ctx: TLSContext, listen_on=None, **client_kw):
        self.listener = listen_on or listener()
        self.owns_listener = listen_on is None
        self.server = None
        self.server_error: BaseException | None = None
        accepted = threading.Event()

        def accept() -> None:
            raw, _ = self.listener.accept()
            try:
                self.server = server_ctx.wrap_socket(raw, server_side=True)
                self.server.do_handshake()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                self.server_error = exc
            finally:
                accepted.set()

        self.thread = threading.Thread(target=accept, daemon=True)
        self.thread.start()
        self.client = client_ctx.wrap_socket(socket.socket(), **client_kw)
        self.client_error: BaseException | None = None
        try:
            self.client.connect(self.listener.getsockname())
        except OSError as exc:
            self.client_error = exc
        accepted.wait(10)

    def close(self) -> None:
        for sock in (self.client, self.server, self.listener if self.owns_listener else None):
            if sock is not None:
                sock.close()


@pytest.fixture
def pair_factory():
    pairs = []

    def make(server_ctx, client_ctx, **client_kw) -> Pair:
        pairs.append(Pair(server_ctx, client_ctx, **client_kw))
        return pairs[-1]

    yield make
    for p in pairs:
        p.close()


class SCP:
    """A pynetdicom Verification + CT Storage SCP, optionally on dcxsec."""

    def __init__(self, ssl_context, directory: Path, ae_title: str = "DCXSEC-SCP", **ae_kw):
        self.directory = directory
        self.received: list[Path] = []
        self.peer_thumbprints: list[str | None] = []
        self.ae = AE(ae_title)
        for key, value in ae_kw.items():
            setattr(self.ae, key, value)
        self.ae.add_supported_context(Verification)
        self.ae.add_supported_context(CTImageStorage)
        self.port = free_port()
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo)]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           ssl_context=ssl_context, evt_handlers=handlers)

    def _peer(self, event) -> None:
        sock = event.assoc.dul.socket.socket
        self.peer_thumbprints.append(getattr(sock, "peer_thumbprint", None))

    def _on_echo(self, event) -> int:
        self._peer(event)
        return 0x0000

    def _on_store(self, event) -> int:
        self._peer(event)
        path = self.directory / f"{event.request.AffectedSOPInstanceUID}.dcm"
        with path.open("wb") as f:
            f.write(event.encoded_dataset())
        self.received.append(path)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp_factory(tmp_path):
    scps = []

    def make(ssl_context, **kw) -> SCP:
        directory = tmp_path / f"scp{len(scps)}"
        directory.mkdir()
        scps.append(SCP(ssl_context, directory, **kw))
        return scps[-1]

    yield make
    for s in scps:
        s.stop()


def requestor(**kw) -> AE:
    """A pynetdicom SCU that proposes Verification and CT Image Storage."""
    ae = AE("DCXSEC-SCU")
    ae.add_requested_context(Verification)
    # Only the files' own transfer syntax, so that nothing is transcoded on the way.
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.connection_timeout = 10
    for key, value in kw.items():
        setattr(ae, key, value)
    return ae


def wait_until(predicate, timeout: float) -> bool:
    """Whether ``predicate()`` came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def wait_for_log(caplog, words: str, timeout: float = 10) -> list[str]:
    """dcxsec's log messages once one holds ``words`` (or at the timeout).

    The acceptor logs a refusal after its alert has left, so the requestor
    can see the refusal before the record is written."""
    deadline = time.monotonic() + timeout
    while True:
        messages = [r.getMessage() for r in caplog.records if r.name == "dcxsec"]
        if any(words in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.02)


__all__ = ["config_for", "listener", "free_port", "requestor", "wait_for_log", "wait_until",
           "dcxsec"]
