"""Certificate stores, the dcxsec cert command, and AE titles bound to certificates."""
from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

import dcxsec.context
import dcxsec.winstore
from conftest import needs_tools, requestor
from dcxsec import (
    CertificateVerificationError,
    CertStore,
    ConfigurationError,
    SecurityConfig,
    TLSContext,
    VerificationMethod,
)
from dcxsec import pki as certs
from dcxsec._native import ffi, lib
from dcxsec.store import CertificateStore
from dcxsec.winstore import SystemStoreSource
from dcxsec import TLSError as dcxsec_TLSError

TRUST_CHAIN, THUMBPRINT, NONE = (VerificationMethod.TRUST_CHAIN, VerificationMethod.THUMBPRINT,
                                 VerificationMethod.NONE)


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """Two empty stores in temporary folders: A is CURRENT_USER, B is LOCAL_COMPUTER."""
    monkeypatch.setenv("DCXSEC_CURRENT_USER_STORE", str(tmp_path / "A"))
    monkeypatch.setenv("DCXSEC_LOCAL_COMPUTER_STORE", str(tmp_path / "B"))
    return CertificateStore(CertStore.CURRENT_USER), CertificateStore(CertStore.LOCAL_COMPUTER)


def cert_cli(*args: str, scope: str = "current-user", check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dcxsec cert`` as a user would, in a separate process."""
    done = subprocess.run([sys.executable, "-m", "dcxsec.cli", "cert", "--store", scope, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def created_thumbprint(done: subprocess.CompletedProcess) -> str:
    return done.stdout.split()[1]


@pytest.fixture
def two_sites(stores, tmp_path):
    """Site A: a test CA and an SCP certificate.  Site B: an SCU certificate from the
    same CA (made in A, moved as PKCS#12) and the CA trusted in Root."""
    ca = created_thumbprint(cert_cli("new", "Site CA", "--ca"))
    scp = created_thumbprint(cert_cli("new", "DCXSEC-SCP", "--issuer", ca, "--dns", "localhost"))
    scu = created_thumbprint(cert_cli("new", "DCXSEC-SCU", "--issuer", ca))
    p12 = tmp_path / "scu.p12"
    cert_cli("export", scu, str(p12), "--format", "pkcs12", "--password", "pw")
    cert_cli("remove", scu)
    cert_cli("export", ca, str(tmp_path / "ca.pem"), "--from", "Root")
    cert_cli("import", str(p12), "--password", "pw", scope="local-computer")
    cert_cli("trust", str(tmp_path / "ca.pem"), scope="local-computer")
    return {"ca": ca, "scp": scp, "scu": scu}


def store_ctx(scope: CertStore, method=TRUST_CHAIN, **kw) -> TLSContext:
    return TLSContext(SecurityConfig(cert_store=scope, verification_method=method,
                                     use_system_trust=False, **kw))


def test_default_store_follows_the_account(monkeypatch, tmp_path):
    expected = CertStore.LOCAL_COMPUTER if os.geteuid() == 0 else CertStore.CURRENT_USER
    assert CertStore.default() == expected
    assert SecurityConfig(verification_method=NONE).cert_store == expected
    monkeypatch.setenv("DCXSEC_LOCAL_COMPUTER_STORE", str(tmp_path / "lc"))
    assert CertStore.LOCAL_COMPUTER.root() == tmp_path / "lc"
    monkeypatch.delenv("DCXSEC_CURRENT_USER_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert CertStore.CURRENT_USER.root() == tmp_path / "xdg" / "dcxsec" / "store"


def test_cli_list_shows_what_the_store_holds(two_sites):
    listing = cert_cli("list").stdout
    assert "Thumbprint" in listing and "HasKey" in listing
    assert two_sites["scp"] in listing and "CN=DCXSEC-SCP" in listing and "CN=Site CA" in listing
    assert two_sites["scu"] not in listing  # removed from A
    other = cert_cli("list", scope="local-computer").stdout
    lines = {line.split()[1]: line for line in other.splitlines()[1:]}
    assert two_sites["scu"] in lines["My"] and lines["My"].rstrip().endswith("yes")
    assert two_sites["ca"] in lines["Root"] and lines["Root"].rstrip().endswith("no")


def test_identities_from_two_stores_authenticate_each_other(two_sites, pair_factory):
    server = store_ctx(CertStore.CURRENT_USER, certificate_thumbprint=two_sites["scp"])
    client = store_ctx(CertStore.LOCAL_COMPUTER)  # its only usable identity
    pair = pair_factory(server, client)
    assert pair.server_error is None and pair.client_error is None
    assert pair.server.peer_thumbprint == two_sites["scu"]
    assert pair.client.peer_thumbprint == two_sites["scp"]


def test_several_identities_need_a_thumbprint(two_sites, stores):
    cert_cli("new", "ANOTHER-AE")
    with pytest.raises(ConfigurationError) as raised:
        store_ctx(CertStore.CURRENT_USER)
    message = str(raised.value)
    assert "several usable identities" in message and "certificate_thumbprint" in message
    assert two_sites["scp"] in message and "CN=DCXSEC-SCP" in message and "expires" in message
    assert "a CA certificate, not an AE identity" in message  # the CA is listed, not chosen


def test_only_expired_identities_are_listed_as_such(stores):
    store, _ = stores
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=100)
    old = certs.self_signed("OLD-AE", not_before=past, not_after=past + dt.timedelta(days=10))
    store.add("My", [old.certificate], old.key_pem())
    with pytest.raises(ConfigurationError, match="(?s)no usable identity.*expired on"):
        store_ctx(CertStore.CURRENT_USER, NONE)
    with pytest.raises(ConfigurationError, match="no certificate with thumbprint"):
        store_ctx(CertStore.CURRENT_USER, NONE, certificate_thumbprint="AB" * 20)


def test_key_file_open_to_others_is_refused(two_sites, stores):
    store, _ = stores
    key = store.find("My", two_sites["scp"]).key_path
    key.chmod(0o644)
    with pytest.raises(ConfigurationError, match=f"chmod 600 '{key}'"):
        store_ctx(CertStore.CURRENT_USER, certificate_thumbprint=two_sites["scp"])


def test_trust_comes_from_the_store_root(two_sites, pair_factory, stores, tmp_path):
    server = store_ctx(CertStore.CURRENT_USER, certificate_thumbprint=two_sites["scp"])
    cert_cli("remove", two_sites["ca"], "--from", "Root", scope="local-computer")
    pair = pair_factory(server, store_ctx(CertStore.LOCAL_COMPUTER))
    assert isinstance(pair.client_error, CertificateVerificationError)
    assert pair.client_error.rule == "untrusted" and "Site CA" in str(pair.client_error)


def test_intermediates_come_from_the_store_ca(stores, pki, pair_factory):
    a, b = stores
    leaf = pki.leaf_via_intermediate.identity
    a.add("My", [leaf.certificate], leaf.key_pem())  # the leaf alone, without its intermediate
    b.add("Root", [pki.ca.identity.certificate])
    client = store_ctx(CertStore.LOCAL_COMPUTER)
    pair = pair_factory(store_ctx(CertStore.CURRENT_USER, NONE), client)
    assert pair.client_error.rule == "untrusted"
    b.add("CA", [pki.intermediate.identity.certificate])
    pair = pair_factory(store_ctx(CertStore.CURRENT_USER, NONE), store_ctx(CertStore.LOCAL_COMPUTER))
    assert pair.client_error is None, pair.client_error


def test_renewed_identity_is_reloaded_without_a_restart(two_sites, stores, pair_factory):
    server = store_ctx(CertStore.CURRENT_USER, NONE, certificate_thumbprint=two_sites["scp"])
    first = pair_factory(server, store_ctx(CertStore.LOCAL_COMPUTER, NONE))
    assert first.client.peer_thumbprint == two_sites["scp"]
    renewed = created_thumbprint(cert_cli("new", "DCXSEC-SCP", "--issuer", two_sites["ca"]))
    server.config.certificate_thumbprint = renewed
    server.reload_identity()
    second = pair_factory(server, store_ctx(CertStore.LOCAL_COMPUTER, NONE))
    assert second.client.peer_thumbprint == renewed
    first.client.sendall(b"old session still up")
    assert first.server.recv(100) == b"old session still up"


def test_cli_imports_pem_der_and_pkcs12_and_exports(stores, pki, tmp_path):
    a, _ = stores
    cert_cli("import", str(pki.client.cert_path), "--key", str(pki.client.key_path))
    der = tmp_path / "ca.der"
    der.write_bytes(pki.ca.identity.certificate.public_bytes(serialization.Encoding.DER))
    cert_cli("import", str(der))  # a self-signed CA without a key goes to Root
    (tmp_path / "s.pfx").write_bytes(pki.server.identity.to_pkcs12(b"secret"))
    refused = cert_cli("import", str(tmp_path / "s.pfx"), check=False)
    assert refused.returncode == 1 and "password" in refused.stderr
    cert_cli("import", str(tmp_path / "s.pfx"), "--password", "secret")
    assert {e.thumbprint for e in a.certificates("My")} == {pki.client.thumbprint, pki.server.thumbprint}
    assert [e.thumbprint for e in a.certificates("Root")] == [pki.ca.thumbprint]
    assert all(oct(e.key_path.stat().st_mode & 0o777) == "0o600" for e in a.certificates("My"))
    out = tmp_path / "client.pem"
    cert_cli("export", pki.client.thumbprint.lower(), str(out), "--key")
    assert out.read_bytes() == pki.client.cert_path.read_bytes()
    assert oct(out.with_suffix(".key").stat().st_mode & 0o777) == "0o600"
    cert_cli("export", pki.client.thumbprint, str(tmp_path / "c.der"), "--format", "der")
    assert certs.load_certificates((tmp_path / "c.der").read_bytes())[0] == pki.client.identity.certificate
    nokey = cert_cli("import", str(pki.untrusted.cert_path), check=False)
    assert nokey.returncode == 1 and "--key" in nokey.stderr


# ---- peer AE identity ------------------------------------------------------------

@pytest.fixture
def bound_contexts(pki):
    """(acceptor, requestor) contexts over the test PKI, each binding the other's AE title."""
    def make(server_bindings=None, client_bindings=None):
        trust = dict(trusted_certificates=[pki.ca.cert_path], use_system_trust=False)
        return (TLSContext(SecurityConfig(certificate=pki.server.cert_path, private_key=pki.server.key_path,
                                          ae_bindings=server_bindings, **trust)),
                TLSContext(SecurityConfig(certificate=pki.client.cert_path, private_key=pki.client.key_path,
                                          ae_bindings=client_bindings, **trust)))
    return make


def test_acceptor_rejects_a_calling_ae_title_not_bound_to_the_certificate(pki, bound_contexts,
                                                                        scp_factory, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    server, client = bound_contexts(server_bindings={"DCXSEC-SCU": [pki.client.thumbprint]})
    scp = scp_factory(server)
    assoc = requestor().associate("127.0.0.1", scp.port, tls_args=(client, None))
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()
    impostor = requestor()
    impostor.ae_title = "MODALITY-X"
    assoc = impostor.associate("127.0.0.1", scp.port, tls_args=(client, None))
    assert assoc.is_rejected and not assoc.is_aborted  # a real A-ASSOCIATE-RJ
    messages = [r.getMessage() for r in caplog.records if r.name == "dcxsec"]
    assert any("calling AE title 'MODALITY-X' is not bound to" in m and pki.client.thumbprint in m
               and "127.0.0.1:" in m for m in messages), messages
    assert scp.peer_thumbprints == [pki.client.thumbprint]


def test_requestor_refuses_an_acceptor_not_bound_to_the_called_ae_title(pki, bound_contexts,
                                                                       scp_factory, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    server, client = bound_contexts(client_bindings={"DCXSEC-SCP": pki.server.thumbprint256})
    scp = scp_factory(server)
    assoc = requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP", tls_args=(client, None))
    assert assoc.is_established
    assoc.release()
    assoc = requestor().associate("127.0.0.1", scp.port, ae_title="ARCHIVE", tls_args=(client, None))
    assert not assoc.is_established
    assert any("called AE title 'ARCHIVE' is not bound to" in r.getMessage()
               and "association request not sent" in r.getMessage() for r in caplog.records)


def test_binding_refusal_raises_the_dcxsec_exception(pki, bound_contexts, pair_factory):
    import dicom_wire

    server, client = bound_contexts(client_bindings={"PACS": pki.self_signed.thumbprint})
    pair = pair_factory(server, client)
    with pytest.raises(CertificateVerificationError) as raised:
        pair.client.sendall(dicom_wire.associate_rq(called="PACS"))
    assert raised.value.rule == "ae_title" and "dcxsec-scp" in raised.value.subject


@needs_tools("echoscu", "storescp", install="dcmtk")
def test_dcmtk_peers_with_certificates_exported_from_the_store(two_sites, scp_factory, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    server = store_ctx(CertStore.CURRENT_USER, certificate_thumbprint=two_sites["scp"],
                       ae_bindings={"DCMTK-SCU": two_sites["scu"]})
    scp = scp_factory(server)
    out = tmp_path / "dcmtk"
    out.mkdir()
    cert_cli("export", two_sites["scu"], str(out / "scu.pem"), "--key", scope="local-computer")
    cert_cli("export", two_sites["ca"], str(out / "ca.pem"), "--from", "Root", scope="local-computer")
    tls = ["+tls", str(out / "scu.key"), str(out / "scu.pem"), "+cf", str(out / "ca.pem")]
    ok = subprocess.run(["echoscu", *tls, "-aet", "DCMTK-SCU", "-aec", "DCXSEC-SCP", "127.0.0.1",
                         str(scp.port)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(["echoscu", *tls, "-aet", "SOMEONE", "127.0.0.1", str(scp.port)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stdout + refused.stderr
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr


# ---- the refusal matrix, between two stores ----------------------------------------

def peer_ctx(peer, scope: CertStore, method) -> TLSContext:
    """The misbehaving side: its (possibly out-of-date) certificate from files, so
    that its own store does not refuse to hand it out; trust from its store."""
    if peer is None:
        return store_ctx(scope, method)
    return TLSContext(SecurityConfig(certificate=peer.cert_path, private_key=peer.key_path,
                                     cert_store=scope, verification_method=method, use_system_trust=False))


MATRIX = [
    # (rule, acceptor's method, the requestor's identity, words in the acceptor's reason, alert)
    ("untrusted", TRUST_CHAIN, "untrusted", "is not trusted: its issuer", "unknown CA"),
    ("expired", TRUST_CHAIN, "expired", "expired on", "certificate expired"),
    ("not_yet_valid", TRUST_CHAIN, "not_yet_valid", "is not yet valid", "bad certificate"),
    ("thumbprint", THUMBPRINT, "client", "is not in the accepted thumbprints", "bad certificate"),
    ("no_certificate", TRUST_CHAIN, None, "presented no certificate", "certificate required"),
]


@pytest.mark.parametrize("rule, method, who, words, alert", MATRIX, ids=[row[0] for row in MATRIX])
def test_acceptor_refusals_between_stores(stores, pki, pair_factory, caplog, rule, method, who, words, alert):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    a, b = stores
    server = pki.server.identity
    a.add("My", [server.certificate], server.key_pem())
    a.add("Root", [pki.ca.identity.certificate])
    b.add("Root", [pki.ca.identity.certificate])
    peer = getattr(pki, who) if who else None
    accepted = [pki.self_signed.thumbprint] if method == THUMBPRINT else []
    pair = pair_factory(store_ctx(CertStore.CURRENT_USER, method, accepted_thumbprints=accepted),
                        peer_ctx(peer, CertStore.LOCAL_COMPUTER, TRUST_CHAIN))
    refused = pair.server_error
    assert isinstance(refused, CertificateVerificationError) and refused.rule == rule
    assert words in str(refused)
    if peer:
        assert refused.thumbprint == peer.thumbprint and peer.identity.certificate.subject.rfc4514_string() \
            in str(refused)
    logged = [r.getMessage() for r in caplog.records if r.name == "dcxsec"]
    assert any(words in m and "127.0.0.1:" in m for m in logged), logged
    failure = pair.client_error
    if failure is None:  # TLS 1.3: the requestor learns at its first read
        with pytest.raises(dcxsec_TLSError) as raised:
            pair.client.settimeout(5)
            pair.client.recv(1)
        failure = raised.value
    assert alert in str(failure)


REQUESTOR_MATRIX = [
    ("untrusted", TRUST_CHAIN, "untrusted", "is not trusted"),
    ("expired", TRUST_CHAIN, "expired", "expired on"),
    ("not_yet_valid", TRUST_CHAIN, "not_yet_valid", "is not yet valid"),
    ("thumbprint", THUMBPRINT, "server", "is not in the accepted thumbprints"),
]


@pytest.mark.parametrize("rule, method, who, words", REQUESTOR_MATRIX, ids=[r[0] for r in REQUESTOR_MATRIX])
def test_requestor_refusals_between_stores(stores, pki, pair_factory, caplog, rule, method, who, words):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    a, b = stores
    peer = getattr(pki, who)
    b.add("My", [pki.client.identity.certificate], pki.client.identity.key_pem())
    b.add("Root", [pki.ca.identity.certificate])
    accepted = [pki.self_signed.thumbprint] if method == THUMBPRINT else []
    pair = pair_factory(peer_ctx(peer, CertStore.CURRENT_USER, NONE),
                        store_ctx(CertStore.LOCAL_COMPUTER, method, accepted_thumbprints=accepted))
    refused = pair.client_error
    assert isinstance(refused, CertificateVerificationError) and refused.rule == rule
    assert words in str(refused) and peer.thumbprint in str(refused)
    assert any(words in r.getMessage() for r in caplog.records if r.name == "dcxsec")


# ---- the Windows system stores, through the engine's store API -------------------
#
# Windows has no Python here, so the win32 path runs against FakeSystemStores:
# the functions of csrc/dcxstore.h as store_crypt32.c answers them (proven under
# Wine by tests/test_schannel_wine.py), over dictionaries.  What runs for real is
# dcxsec.winstore's marshalling, the selection in dcxsec.store shared with the
# folder store, TLSContext's win32 identity branch and `dcxsec cert`.

def _der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class FakeSystemStores:
    """dcx_store_* over {(scope, logical): {SHA-1 hex: (DER, has_key)}}."""

    def __init__(self):
        self.stores: dict = {}
        self.lists: dict = {}
        self.exportable: list[int] = []

    def _fail(self, err, status, text):
        err.status, err.reason = status, text.encode()
        return status

    def _put(self, scope, logical, cert, key, replace=True):
        store = self.stores.setdefault((scope, logical), {})
        sha1 = certs.thumbprint(cert)
        if replace or sha1 not in store:
            store[sha1] = (_der(cert), key)
        return sha1

    def dcx_store_list_open(self, scope, logical, err):
        items = list(self.stores.get((scope, logical.decode()), {}).items())
        entries = ffi.new("dcx_store_entry[]", max(1, len(items)))
        keep = [entries]
        for i, (sha1, (der, key)) in enumerate(items):
            keep.append(ffi.new("unsigned char[]", der))
            entries[i].der, entries[i].der_len, entries[i].has_key = keep[-1], len(der), key
            entries[i].thumbprint_hex = sha1.encode()
        handle = len(self.lists) + 1
        self.lists[handle] = (len(items), keep)
        return ffi.cast("dcx_store_list *", handle)

    def _handle(self, listing):
        return int(ffi.cast("uintptr_t", listing))

    def dcx_store_list_count(self, listing):
        return self.lists[self._handle(listing)][0]

    def dcx_store_list_get(self, listing, i):
        return self.lists[self._handle(listing)][1][0] + i

    def dcx_store_list_free(self, listing):
        del self.lists[self._handle(listing)]

    def dcx_store_add(self, scope, logical, blob, thumbprint, err):
        cert = certs.load_certificates(bytes(ffi.buffer(blob.data, blob.len)))[0]
        self._put(scope, logical.decode(), cert, False, replace=False)
        return lib.DCX_OK

    def dcx_store_import_pfx(self, scope, blob, password, exportable, thumbprint, err):
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(bytes(ffi.buffer(blob.data, blob.len)),
                                                                password)
        except ValueError:
            return self._fail(err, lib.DCX_E_CONFIG, "cannot open the PKCS#12 file: wrong password")
        if key is None or key.public_key().public_numbers() != cert.public_key().public_numbers():
            return self._fail(err, lib.DCX_E_CONFIG, "the PKCS#12 file holds no certificate with its key")
        self.exportable.append(exportable)
        self._put(scope, "My", cert, True)
        for other in extra:
            self._put(scope, "CA", other, False, replace=False)
        return lib.DCX_OK

    def dcx_store_remove(self, scope, logical, sha1, delete_key, err):
        store = self.stores.get((scope, logical.decode()), {})
        if store.pop(bytes(sha1).hex().upper(), None) is None:
            return self._fail(err, lib.DCX_E_CONFIG, "no certificate with that thumbprint")
        return lib.DCX_OK


@pytest.fixture
def windows(monkeypatch):
    """CertificateStore, TLSContext and `dcxsec cert` as on Windows, over FakeSystemStores."""
    fake = FakeSystemStores()
    monkeypatch.setattr(dcxsec.winstore, "lib", fake)

    def store(scope=None, source=None):
        scope = CertStore.default() if scope is None else CertStore(scope)
        return CertificateStore(scope, source=source or SystemStoreSource(scope))

    monkeypatch.setattr("dcxsec.certcli.CertificateStore", store)
    monkeypatch.setattr(SecurityConfig, "store", lambda self: store(self.cert_store))
    monkeypatch.setattr(dcxsec.context, "sys", SimpleNamespace(platform="win32"))
    return SimpleNamespace(fake=fake, store=store)


def windows_identity(windows, monkeypatch, **kw):
    """The SHA-1 TLSContext hands to the engine on Windows (None: no identity)."""
    seen = []

    class Engine:
        def __getattr__(self, name):
            return getattr(lib, name)

        def dcx_ctx_new(self, cfg, err):
            seen.append(None if cfg.identity_thumbprint == ffi.NULL
                        else bytes(ffi.buffer(cfg.identity_thumbprint, 20)).hex().upper())
            cfg.identity_thumbprint = ffi.NULL  # the OpenSSL engine has no system store to open
            return lib.dcx_ctx_new(cfg, err)

    monkeypatch.setattr(dcxsec.context, "lib", Engine())
    TLSContext(SecurityConfig(cert_store=CertStore.CURRENT_USER, verification_method=NONE, **kw))
    return seen[0]


def test_windows_identity_is_chosen_by_the_shared_selection(windows, monkeypatch, pki):
    my = windows.store(CertStore.CURRENT_USER)
    assert windows_identity(windows, monkeypatch) is None  # an empty My: no identity
    my.add("My", [pki.ca.identity.certificate], pki.ca.identity.key_pem())  # a CA: not an AE
    my.add("My", [pki.server.identity.certificate])  # no key
    my.add("My", [pki.client.identity.certificate, pki.ca.identity.certificate],
           pki.client.identity.key_pem())
    assert windows.fake.exportable == [0, 0]  # keys stay with Windows
    assert windows_identity(windows, monkeypatch) == pki.client.thumbprint
    assert windows_identity(windows, monkeypatch,
                            certificate_thumbprint=pki.client.thumbprint256) == pki.client.thumbprint
    my.add("My", [pki.self_signed.identity.certificate], pki.self_signed.identity.key_pem())
    with pytest.raises(ConfigurationError) as raised:
        windows_identity(windows, monkeypatch)
    message = str(raised.value)
    assert "several usable identities" in message and "Cert:\\CurrentUser\\My" in message
    assert f"{pki.server.thumbprint}" in message and "no private key" in message
    assert "a CA certificate, not an AE identity" in message


def test_windows_store_entries(windows, pki):
    my = windows.store(CertStore.LOCAL_COMPUTER)
    where = my.add("My", [pki.client.identity.certificate, pki.ca.identity.certificate],
                   pki.client.identity.key_pem())
    assert where == "Cert:\\LocalMachine\\My"
    (entry,) = my.certificates("My")
    assert entry.has_key and entry.path is None and entry.key_path is None
    assert entry.certificate == pki.client.identity.certificate and entry.unusable_because() is None
    assert entry.chain_pem() == pki.client.identity.certificate.public_bytes(serialization.Encoding.PEM)
    assert [e.thumbprint for e in my.certificates("CA")] == [pki.ca.thumbprint]  # the chain
    assert not next(my.certificates("CA")).has_key
    assert my.find("My", pki.client.thumbprint256.lower()) == entry
    assert my.remove("My", pki.client.thumbprint) == entry and list(my.certificates("My")) == []
    with pytest.raises(ConfigurationError, match=r"no certificate with thumbprint .* \(Cert:\\LocalMachine\\My\)"):
        my.find("My", pki.client.thumbprint)


def test_windows_cert_command(windows, pki, tmp_path, capsys):
    from dcxsec.cli import main

    pfx = tmp_path / "client.pfx"
    pfx.write_bytes(pki.client.identity.to_pkcs12(b"secret"))
    assert main(["cert", "--store", "current-user", "import", str(pfx), "--password", "secret"]) == 0
    assert "into CURRENT_USER\\My (Cert:\\CurrentUser\\My)" in capsys.readouterr().out
    assert main(["cert", "--store", "current-user", "trust", str(pki.ca.cert_path)]) == 0
    assert main(["cert", "--store", "current-user", "list"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert pki.client.thumbprint in rows["My"] and rows["My"].rstrip().endswith("yes")
    assert pki.ca.thumbprint in rows["Root"] and rows["Root"].rstrip().endswith("no")
    out = tmp_path / "client.der"
    assert main(["cert", "--store", "current-user", "export", pki.client.thumbprint, str(out),
                 "--format", "der"]) == 0
    assert out.read_bytes() == _der(pki.client.identity.certificate)
    assert main(["cert", "--store", "current-user", "export", pki.client.thumbprint,
                 str(tmp_path / "c.pem"), "--key"]) == 1
    assert "stays in the Windows certificate store" in capsys.readouterr().err
    assert main(["cert", "--store", "current-user", "remove", pki.ca.thumbprint, "--from", "Root"]) == 0
    assert main(["cert", "--store", "current-user", "list", "Root"]) == 0
    assert "(empty: Cert:\\CurrentUser)" in capsys.readouterr().out


def test_no_system_store_on_this_platform():
    """Here the engine's store functions (store_none.c) refuse, saying why."""
    source = SystemStoreSource(CertStore.CURRENT_USER)
    with pytest.raises(dcxsec_TLSError) as raised:
        source.entries("My")
    assert raised.value.status == "UNSUPPORTED"
    assert str(raised.value) == "no system certificate store on this platform; the folder store is used"
