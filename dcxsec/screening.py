"""The A-ASSOCIATE-RQ screened against the AE-title bindings (dcxsec.aetitle).

Each side checks the first PDU of the association once, after the
handshake: the acceptor answers a calling AE title that is not bound to the
requestor's certificate with a real A-ASSOCIATE-RJ; the requestor refuses to
send a request whose called AE title is not bound to the acceptor's
certificate.  A refusal is logged, recorded as the connection's failure, and
raised as ``CertificateVerificationError(rule="ae_title")``.
"""
from __future__ import annotations

import logging
from typing import Any

from dcxsec import aetitle
from dcxsec.certinfo import subject_text
from dcxsec.connection import Connection, EngineConn
from dcxsec.errors import CertificateVerificationError

log = logging.getLogger("dcxsec")

_LONGEST_REQUEST = 1 << 20  # a longer "request" is left to the DICOM layer unread


def screen_request(connection: Connection, conn: EngineConn, prefix: bytearray) -> None:
    """Acceptor: read the A-ASSOCIATE-RQ whole into ``prefix`` (the socket
    serves it first) and reject it unless its calling AE title is bound to
    the requestor's certificate; lock held."""
    header = connection.read_exactly(conn, 6)
    prefix.extend(header)
    if len(header) < 6 or header[0] != aetitle.A_ASSOCIATE_RQ:
        return  # not a request: the DICOM layer deals with it
    length = int.from_bytes(header[2:6], "big")
    if length > _LONGEST_REQUEST:
        return
    prefix.extend(connection.read_exactly(conn, length))
    called, calling = aetitle.ae_titles(bytes(prefix))
    if peer_bound_to(connection, calling):
        return
    prefix.clear()
    refusal = _refuse(connection, f"calling AE title '{calling}' is not bound to",
                      "A-ASSOCIATE-RJ sent (calling AE title not recognized)")
    connection.send_last(conn, aetitle.reject_pdu(aetitle.CALLING_AE_NOT_RECOGNIZED))
    raise refusal


def check_called_ae(connection: Connection, data: Any) -> None:
    """Requestor: refuse to send an A-ASSOCIATE-RQ to an acceptor whose
    certificate is not bound to the called AE title."""
    head = bytes(memoryview(data)[:42])
    if not connection.context.ae_bindings or not head or head[0] != aetitle.A_ASSOCIATE_RQ:
        return
    called, _ = aetitle.ae_titles(head)
    if not peer_bound_to(connection, called):
        raise _refuse(connection, f"called AE title '{called}' is not bound to",
                      "association request not sent")


def peer_bound_to(connection: Connection, ae_title: str) -> bool:
    """Whether the peer's certificate is bound to ``ae_title``."""
    return connection.context.ae_bindings.allows(
        ae_title, connection.peer_thumbprint("sha1") or "", connection.peer_thumbprint("sha256") or "")


def _refuse(connection: Connection, what: str, outcome: str) -> CertificateVerificationError:
    """Log and record an AE title refusal; the caller raises it."""
    der = connection.peer_certificate_der()
    thumbprint = connection.peer_thumbprint("sha1")
    subject = subject_text(der) if der else "(no certificate)"
    exc = CertificateVerificationError(
        f"{what} the peer's certificate '{subject}' (thumbprint {thumbprint}): "
        f"{outcome}; bind it in ae_bindings if this peer may use that AE title",
        rule="ae_title", subject=subject, thumbprint=thumbprint or "")
    log.warning("association with %s refused: %s", connection.peer_text(), exc)
    connection.failure = exc
    if connection.on_binding_refusal is not None:
        connection.on_binding_refusal(str(exc), subject, thumbprint or "")
    return exc
