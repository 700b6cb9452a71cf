"""Runs on Windows CPython (under Wine in the tests): dcxsec's client role,
installed from its wheel, against the peers tests/test_windows_wheel.py runs
on Linux.

    python client_cases.py PLAN.json

The plan lists cases; each is one association (``echo`` or ``store``) or
one bare handshake (``handshake``, which keeps the exception dcxsec raised)
with one SecurityConfig.  One line ``RESULT {json}`` per case goes to stdout:
what happened, the exception's type, rule and words, the negotiated cipher,
and what the dcxsec logger said meanwhile.
"""
from __future__ import annotations

import json
import logging
import socket
import sys
import traceback

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

import dcxsec
from dcxsec import CertStore, SecurityConfig, TLSContext, VerificationMethod


class Recorder(logging.Handler):
    """Keeps the messages of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def make_context(settings: dict) -> TLSContext:
    """A TLSContext from the plan's SecurityConfig keywords (enums by name)."""
    settings = dict(settings)
    settings["verification_method"] = VerificationMethod[settings.get("verification_method", "TRUST_CHAIN")]
    if "cert_store" in settings:
        settings["cert_store"] = CertStore[settings["cert_store"]]
    return TLSContext(SecurityConfig(**settings))


def associate(case: dict, ctx: TLSContext, result: dict) -> None:
    """One pynetdicom association: C-ECHO, or C-STORE of the case's file."""
    ae = AE("WIN-SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", case["port"], ae_title=case.get("ae_title", "ANY-SCP"),
                         tls_args=(ctx, "localhost"))
    result["established"] = assoc.is_established
    if not assoc.is_established:
        return
    sock = assoc.dul.socket.socket
    result["cipher"] = sock.cipher()
    result["version"] = sock.version()
    result["peer_thumbprint"] = sock.peer_thumbprint
    if case["action"] == "echo":
        result["status"] = assoc.send_c_echo().Status
    else:
        result["status"] = assoc.send_c_store(dcmread(case["file"])).Status
    assoc.release()


def handshake(case: dict, ctx: TLSContext, result: dict) -> None:
    """A bare TLS handshake with the case's peer, kept to see dcxsec's exception."""
    sock = ctx.wrap_socket(socket.socket(), server_hostname="localhost")
    try:
        sock.connect(("127.0.0.1", case["port"]))
        result["established"] = True
        result["cipher"] = sock.cipher()
        sock.sendall(b"\0")  # TLS 1.2 peers refuse a missing client certificate here at the latest
        sock.recv(1)
    except OSError as exc:
        result["error_type"] = type(exc).__name__
        result["error"] = str(exc)
        result["rule"] = getattr(exc, "rule", None)
        result["is_dcxsec_error"] = isinstance(exc, dcxsec.TLSError)
        try:  # a dead connection repeats why it died
            sock.sendall(b"\0")
        except OSError as again:
            result["repeat_error"] = f"{type(again).__name__}: {again}"
    finally:
        sock.close()


def run_case(case: dict) -> dict:
    recorder = Recorder()
    for name in ("dcxsec", "pynetdicom"):
        logging.getLogger(name).addHandler(recorder)
        logging.getLogger(name).setLevel(logging.INFO)
    result: dict = {"name": case["name"]}
    try:
        ctx = make_context(case["config"])
        (handshake if case["action"] == "handshake" else associate)(case, ctx, result)
    except Exception as exc:  # noqa: BLE001 - reported to the Linux side, which judges
        result["exception"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    finally:
        for name in ("dcxsec", "pynetdicom"):
            logging.getLogger(name).removeHandler(recorder)
    result["log"] = recorder.messages
    return result


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        plan = json.load(f)
    print("BACKEND " + json.dumps(dcxsec.backend()), flush=True)
    print("MODULE " + json.dumps(dcxsec.__file__), flush=True)
    for case in plan["cases"]:
        print("RESULT " + json.dumps(run_case(case)), flush=True)


if __name__ == "__main__":
    main()
