"""Peer verification, decided in C: every method, accepting and refusing, both roles."""
from __future__ import annotations

import logging
import ssl

import pytest

from dcxsec import (
    CertificateVerificationError,
    SecurityConfig,
    TLSContext,
    TLSError,
    VerificationMethod,
    normalize_thumbprint,
)
from conftest import config_for, listener

TRUST_CHAIN, THUMBPRINT, NONE = (VerificationMethod.TRUST_CHAIN, VerificationMethod.THUMBPRINT,
                                 VerificationMethod.NONE)


def ctx(issued, method=TRUST_CHAIN, trusted=(), **kw) -> TLSContext:
    return TLSContext(config_for(issued, method, trusted, **kw))


def client_failure(pair) -> BaseException | None:
    """The requestor's error: at connect, or (TLS 1.3) at its first read."""
    if pair.client_error is not None:
        return pair.client_error
    try:
        pair.client.settimeout(5)
        pair.client.recv(1)
    except OSError as exc:
        return exc
    return None


def assert_ok(pair) -> None:
    assert pair.server_error is None, pair.server_error
    assert pair.client_error is None, pair.client_error
    pair.client.sendall(b"ping")
    assert pair.server.recv(4) == b"ping"
    pair.server.sendall(b"pong")  # the requestor's read also takes in TLS 1.3 tickets
    assert pair.client.recv(4) == b"pong"


# ---- the accepting side verifies the requestor ----------------------------------

def test_trust_chain_accepts_a_client_from_a_trusted_ca(pki, pair_factory):
    assert_ok(pair_factory(ctx(pki.server, trusted=[pki.ca.cert_path]), ctx(pki.client, NONE)))


@pytest.mark.parametrize("who, rule, words, alert", [
    ("untrusted", "untrusted", "is not trusted: its issuer 'CN=", "unknown CA"),
    ("expired", "expired", "expired on", "certificate expired"),
    ("not_yet_valid", "not_yet_valid", "is not yet valid", "bad certificate"),
    ("self_signed", "untrusted", "is self-signed and not among the trusted", "unknown CA"),
])
def test_trust_chain_refuses_a_bad_client_certificate(pki, pair_factory, caplog, who, rule, words, alert):
    caplog.set_level(logging.WARNING, logger="dcxsec")
    peer = getattr(pki, who)
    pair = pair_factory(ctx(pki.server, trusted=[pki.ca.cert_path]), ctx(peer, NONE))
    exc = pair.server_error
    assert isinstance(exc, CertificateVerificationError) and isinstance(exc, ssl.SSLError)
    assert exc.rule == rule and exc.thumbprint == peer.thumbprint
    assert words in str(exc) and peer.thumbprint in str(exc)
    failure = client_failure(pair)
    assert isinstance(failure, TLSError) and alert in str(failure)
    logged = [r.getMessage() for r in caplog.records if r.name == "dcxsec"]
    assert any("127.0.0.1:" in m and words in m for m in logged), logged


def test_trust_chain_requires_a_client_certificate(pki, pair_factory):
    anonymous = TLSContext(SecurityConfig(verification_method=NONE))
    pair = pair_factory(ctx(pki.server, trusted=[pki.ca.cert_path]), anonymous)
    assert isinstance(pair.server_error, CertificateVerificationError)
    assert pair.server_error.rule == "no_certificate"
    assert "presented no certificate" in str(pair.server_error)
    failure = client_failure(pair)
    assert isinstance(failure, TLSError) and "requires a client certificate" in str(failure)


def test_thumbprint_accepts_a_pinned_client_and_refuses_others(pki, pair_factory):
    server = ctx(pki.server, THUMBPRINT, accepted_thumbprints=[pki.self_signed.thumbprint])
    assert_ok(pair_factory(server, ctx(pki.self_signed, NONE)))
    pair = pair_factory(server, ctx(pki.client, NONE))
    assert isinstance(pair.server_error, CertificateVerificationError)
    assert pair.server_error.rule == "thumbprint"
    assert "not in the accepted thumbprints" in str(pair.server_error)
    assert pki.client.thumbprint in str(pair.server_error)


def test_thumbprint_requires_a_client_certificate(pki, pair_factory):
    server = ctx(pki.server, THUMBPRINT, accepted_thumbprints=[pki.client.thumbprint])
    pair = pair_factory(server, TLSContext(SecurityConfig(verification_method=NONE)))
    assert pair.server_error.rule == "no_certificate"


def test_none_accepts_any_client_or_none(pki, pair_factory):
    server = ctx(pki.server, NONE)
    assert_ok(pair_factory(server, ctx(pki.untrusted, NONE)))
    assert_ok(pair_factory(server, TLSContext(SecurityConfig(verification_method=NONE))))


# ---- the requesting side verifies the acceptor -----------------------------------

def test_requestor_refuses_a_server_from_an_unknown_ca(pki, pair_factory):
    pair = pair_factory(ctx(pki.untrusted, NONE), ctx(pki.client, trusted=[pki.ca.cert_path]))
    exc = pair.client_error
    assert isinstance(exc, CertificateVerificationError) and exc.rule == "untrusted"
    assert "dcxsec-untrusted" in exc.subject or exc.subject
    assert isinstance(pair.server_error, TLSError) and "unknown CA" in str(pair.server_error)


def test_requestor_follows_a_chain_through_an_intermediate(pki, pair_factory):
    assert_ok(pair_factory(ctx(pki.leaf_via_intermediate, NONE),
                           ctx(pki.client, trusted=[pki.ca.cert_path])))


def test_requestor_refuses_an_expired_server(pki, pair_factory):
    pair = pair_factory(ctx(pki.expired, NONE), ctx(pki.client, trusted=[pki.ca.cert_path]))
    assert pair.client_error.rule == "expired"
    assert pki.expired.identity.certificate.not_valid_after_utc.strftime("%Y-%m-%d") in str(
        pair.client_error)


@pytest.mark.parametrize("spelling", [
    lambda t, t256: t.lower(),
    lambda t, t256: " ".join(t[i:i + 2] for i in range(0, 40, 2)),
    lambda t, t256: "\u200e" + " ".join(t[i:i + 2] for i in range(0, 40, 2)).lower(),
    lambda t, t256: ":".join(t256[i:i + 2] for i in range(0, 64, 2)),
], ids=["lower", "spaced", "windows-dialog", "sha256-colons"])
def test_thumbprint_written_as_people_paste_it(pki, pair_factory, spelling):
    pinned = spelling(pki.self_signed.thumbprint, pki.self_signed.thumbprint256)
    assert_ok(pair_factory(ctx(pki.self_signed, NONE),
                           ctx(pki.client, THUMBPRINT, accepted_thumbprints=[pinned])))


def test_requestor_refuses_a_server_not_pinned(pki, pair_factory):
    pair = pair_factory(ctx(pki.server, NONE),
                        ctx(pki.client, THUMBPRINT, accepted_thumbprints=[pki.self_signed.thumbprint]))
    assert pair.client_error.rule == "thumbprint"
    assert pki.server.thumbprint in str(pair.client_error)


def test_none_requestor_accepts_any_server(pki, pair_factory):
    assert_ok(pair_factory(ctx(pki.untrusted, NONE), ctx(pki.client, NONE)))


def test_host_name_is_checked_only_when_asked(pki, pair_factory):
    server = ctx(pki.server, NONE)
    plain = ctx(pki.client, trusted=[pki.ca.cert_path])
    assert_ok(pair_factory(server, plain, server_hostname="elsewhere.example"))
    strict = ctx(pki.client, trusted=[pki.ca.cert_path], check_hostname=True)
    assert_ok(pair_factory(server, strict, server_hostname="localhost"))
    pair = pair_factory(server, strict, server_hostname="elsewhere.example")
    assert pair.client_error.rule == "hostname" and "elsewhere.example" in str(pair.client_error)


def test_accepted_thumbprints_change_on_a_live_context(pki, pair_factory):
    server = ctx(pki.server, THUMBPRINT, accepted_thumbprints=[pki.self_signed.thumbprint])
    first = pair_factory(server, ctx(pki.self_signed, NONE))
    assert_ok(first)
    server.accepted_thumbprints = [pki.client.thumbprint256]
    assert_ok(pair_factory(server, ctx(pki.client, NONE)))
    assert pair_factory(server, ctx(pki.self_signed, NONE)).server_error.rule == "thumbprint"
    first.client.sendall(b"pong")  # the running connection is not disturbed
    assert first.server.recv(4) == b"pong"


def test_thumbprint_format_is_checked():
    assert normalize_thumbprint("\u200eab cd" + " ef" * 18) == "ABCD" + "EF" * 18
    with pytest.raises(ValueError, match="not a certificate thumbprint"):
        normalize_thumbprint("12:34")


# ---- resumption ------------------------------------------------------------------

def test_a_repeat_peer_resumes_its_session(pki, pair_factory):
    server, client = ctx(pki.server, trusted=[pki.ca.cert_path]), ctx(pki.client, trusted=[pki.ca.cert_path])
    port = listener()  # a repeat peer: same address, same port
    first = pair_factory(server, client, listen_on=port)
    assert_ok(first)  # the first read also takes in the TLS 1.3 tickets
    second = pair_factory(server, client, listen_on=port)
    assert_ok(second)
    assert not first.client.session_reused
    assert second.client.session_reused and second.server.session_reused
    assert second.server.peer_thumbprint == pki.client.thumbprint
    assert second.client.peer_thumbprint == pki.server.thumbprint


@pytest.mark.parametrize("closes_first", ["requestor", "acceptor"])
def test_a_session_outlives_the_association_that_closed_cleanly(pki, pair_factory, closes_first):
    server, client = ctx(pki.server, trusted=[pki.ca.cert_path]), ctx(pki.client, trusted=[pki.ca.cert_path])
    port = listener()
    first = pair_factory(server, client, listen_on=port)
    assert_ok(first)
    ends = [first.client, first.server] if closes_first == "requestor" else [first.server, first.client]
    for sock in ends:  # close_notify each way: nothing marks the session bad
        sock.close()
    second = pair_factory(server, client, listen_on=port)
    assert_ok(second)
    assert second.client.session_reused and second.server.session_reused


def test_a_resumed_session_still_meets_the_acceptors_thumbprints(pki, pair_factory):
    server = ctx(pki.server, THUMBPRINT, accepted_thumbprints=[pki.client.thumbprint])
    client, port = ctx(pki.client, NONE), listener()
    assert_ok(pair_factory(server, client, listen_on=port))
    server.accepted_thumbprints = [pki.self_signed.thumbprint]
    pair = pair_factory(server, client, listen_on=port)

    assert isinstance(pair.server_error, CertificateVerificationError)
    assert pair.server_error.rule == "thumbprint" and pki.client.thumbprint in str(pair.server_error)


def test_a_resumed_session_still_meets_the_requestors_thumbprints(pki, pair_factory):
    server = ctx(pki.server, NONE)
    client = ctx(pki.client, THUMBPRINT, accepted_thumbprints=[pki.server.thumbprint])
    port = listener()
    assert_ok(pair_factory(server, client, listen_on=port))
    client.accepted_thumbprints = [pki.self_signed.thumbprint]
    pair = pair_factory(server, client, listen_on=port)
    assert isinstance(pair.client_error, CertificateVerificationError)
    assert pair.client_error.rule == "thumbprint"
    client.accepted_thumbprints = [pki.server.thumbprint]
    assert_ok(pair_factory(server, client, listen_on=port))
