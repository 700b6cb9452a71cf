"""pynetdicom's own TLS tests, ``TestTLS`` from its wheel, on dcxsec.

The class runs unchanged.  Its module makes its contexts with
``ssl.create_default_context`` and sets them up as ``ssl.SSLContext``s are;
here the name ``ssl`` in that module is a stand-in whose contexts record
those settings and build a real ``dcxsec.TLSContext`` (through
``SecurityConfig``) on their first ``wrap_socket``.  Every other name of
``ssl`` is the real one.  The certificates are the suite's own, copied with
their keys made private (0600), as dcxsec demands.

Every test of the class runs.  These make no handshake by design, and run
as they are:

- ``test_tls_not_server_not_client``: plain DICOM on both sides, the control.
- ``test_no_ssl_scp``, ``test_no_ssl_scu``: ``ssl`` is hidden from
  pynetdicom, which refuses any context before using it.

Every other test is checked, after it ran, to have wrapped its sockets in
dcxsec (so none passes on Python's ``ssl`` by mistake).
"""
from __future__ import annotations

import os
import shutil
import ssl
import types
from pathlib import Path
from typing import Any

import pytest

from dcxsec import SecurityConfig, TLSContext, TLSSocket, VerificationMethod

suite = pytest.importorskip("pynetdicom.tests.test_transport")

from pynetdicom.tests.test_transport import TestTLS, client_context  # noqa: E402,F401

WITHOUT_HANDSHAKE = {
    "test_tls_not_server_not_client": "plain DICOM on both sides, the suite's control",
    "test_no_ssl_scp": "ssl hidden from pynetdicom: the server refuses any context first",
    "test_no_ssl_scu": "ssl hidden from pynetdicom: the requestor refuses any context first",
}
# Both sides wrap in these; the others wrap one side (the other is plain DICOM).
BOTH_SIDES = ("test_tls_yes_server_yes_client", "test_tls_transfer", "test_multiple_pdu_req",
              "test_multiple_pdu_acc")


class SSLContextStandIn:
    """What the suite does to an ``ssl.SSLContext``, mapped onto ``SecurityConfig``.

    Settings the mapping does not know are refused (AttributeError), so a
    suite that grows one fails here instead of running on something else.
    """

    _SETTINGS = ("verify_mode", "check_hostname", "minimum_version", "maximum_version")
    wraps: list[TLSSocket] = []  # every socket wrapped by any stand-in, for the checks

    def __init__(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
                 cafile: str | None = None) -> None:
        # As ssl.create_default_context sets them.
        client = purpose == ssl.Purpose.SERVER_AUTH
        object.__setattr__(self, "_trusted", [cafile] if cafile else [])
        object.__setattr__(self, "_identity", None)
        object.__setattr__(self, "_built", None)
        self.verify_mode = ssl.CERT_REQUIRED if client else ssl.CERT_NONE
        self.check_hostname = client
        self.minimum_version = ssl.TLSVersion.TLSv1_2
        self.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._SETTINGS:
            raise AttributeError(f"the dcxsec stand-in does not map ssl.SSLContext.{name}")
        if self._built is not None:
            raise AttributeError(f"{name} set after the first wrap_socket")
        object.__setattr__(self, name, value)

    def load_cert_chain(self, certfile: str, keyfile: str | None = None,
                        password: Any = None) -> None:
        object.__setattr__(self, "_identity", (certfile, keyfile or certfile, password))

    def load_verify_locations(self, cafile: str | None = None, capath: str | None = None,
                              cadata: Any = None) -> None:
        if capath is not None:
            raise AttributeError("capath is not mapped (SecurityConfig.trusted_folder would be)")
        self._trusted.extend(c for c in (cafile, cadata) if c)

    def config(self) -> SecurityConfig:
        """The SecurityConfig these settings mean."""
        method = {ssl.CERT_NONE: VerificationMethod.NONE,
                  ssl.CERT_REQUIRED: VerificationMethod.TRUST_CHAIN}[self.verify_mode]
        cert, key, password = self._identity or (None, None, None)
        trusted = [t.encode() if isinstance(t, str) and t.lstrip().startswith("-----") else t
                   for t in self._trusted]
        return SecurityConfig(
            certificate=cert, private_key=key, private_key_password=password,
            verification_method=method,
            trusted_certificates=trusted if method is VerificationMethod.TRUST_CHAIN else (),
            use_system_trust=False, use_store_trust=False,
            check_hostname=bool(self.check_hostname) and method is VerificationMethod.TRUST_CHAIN,
            minimum_version=self.minimum_version, maximum_version=self.maximum_version)

    def wrap_socket(self, sock: Any, server_side: bool = False, do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: str | None = None,
                    session: Any = None) -> TLSSocket:
        if self._built is None:
            object.__setattr__(self, "_built", TLSContext(self.config()))
        wrapped = self._built.wrap_socket(sock, server_side=server_side,
                                          do_handshake_on_connect=do_handshake_on_connect,
                                          server_hostname=server_hostname)
        self.wraps.append(wrapped)
        return wrapped


def _ssl_stand_in() -> types.ModuleType:
    """``ssl`` with its contexts replaced by the stand-in."""
    module = types.ModuleType("ssl")
    module.__dict__.update({k: v for k, v in vars(ssl).items() if not k.startswith("__")})
    module.SSLContext = SSLContextStandIn
    module.create_default_context = SSLContextStandIn
    return module


@pytest.fixture(scope="module")
def private_certs(tmp_path_factory) -> Path:
    """The suite's certificates, with keys readable by their owner only."""
    folder = tmp_path_factory.mktemp("pynetdicom-certs")
    for name in os.listdir(suite.CERT_DIR):
        shutil.copy(os.path.join(suite.CERT_DIR, name), folder / name)
        if name.endswith(".key"):
            os.chmod(folder / name, 0o600)
    return folder


@pytest.fixture(autouse=True)
def on_dcxsec(request, monkeypatch, private_certs):
    """The suite's module sees the stand-in and the private copies; after
    the test, its sockets must have been dcxsec's."""
    monkeypatch.setattr(suite, "ssl", _ssl_stand_in())
    for name, file in (("SERVER_CERT", "server.crt"), ("SERVER_KEY", "server.key"),
                       ("CLIENT_CERT", "client.crt"), ("CLIENT_KEY", "client.key")):
        monkeypatch.setattr(suite, name, str(private_certs / file))
    SSLContextStandIn.wraps.clear()
    yield
    if request.node.cls is not TestTLS:
        return
    test = request.node.originalname
    wraps = SSLContextStandIn.wraps
    if test in WITHOUT_HANDSHAKE:
        assert not wraps
        return
    assert all(isinstance(s, TLSSocket) for s in wraps)
    assert len({s.server_side for s in wraps}) == (2 if test in BOTH_SIDES else 1), wraps


def test_every_test_of_the_class_is_accounted_for():
    """A TestTLS grown with a test these checks do not know fails here."""
    tests = {name for name in dir(TestTLS) if name.startswith("test_")}
    assert set(WITHOUT_HANDSHAKE) <= tests
    assert set(BOTH_SIDES) <= tests
    assert len(tests) == 9, sorted(tests)
