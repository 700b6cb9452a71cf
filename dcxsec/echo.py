"""``dcxsec echo HOST PORT``: a C-ECHO over TLS, and what the connection is.

It prints the protocol and cipher suite, the peer certificate's subject,
thumbprints and expiry, the time to associate and each C-ECHO's round trip
(with ``--repeat N``, their minimum, median and maximum).  Exit status 0
when every C-ECHO succeeded, 1 when the peer could not be reached, refused
the association or answered a failure, 2 for an unusable configuration.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from typing import Any

from dcxsec import cliopts
from dcxsec.errors import ConfigurationError
from dcxsec.requestor import steady


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("echo", help="C-ECHO a DICOM peer over TLS (as DCMTK's echoscu +tls)")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--aet", default="ECHOSCU", help="this AE's title (default ECHOSCU)")
    p.add_argument("--aec", default="ANY-SCP", help="the peer's AE title (default ANY-SCP)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="C-ECHO N times in the association (default 1)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the peer at each step (default 30)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    cliopts.add_tls_options(p)
    p.set_defaults(run=run)


def peer_details(sock: Any) -> dict[str, Any]:
    """Protocol, cipher suite and peer certificate of a TLS socket (nothing for plain TCP)."""
    version = getattr(sock, "version", lambda: None)()
    if not version:
        return {}
    details: dict[str, Any] = {"protocol": version, "cipher": (sock.cipher() or ("",))[0]}
    der = sock.getpeercert(binary_form=True)
    if der:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        details["peer"] = {
            "subject": cert.subject.rfc4514_string(),
            "thumbprint_sha1": hashlib.sha1(der).hexdigest().upper(),
            "thumbprint_sha256": hashlib.sha256(der).hexdigest().upper(),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
    return details


def echo(args: argparse.Namespace, tls_args: Any) -> dict[str, Any]:
    """Associate, C-ECHO ``args.repeat`` times, release; the facts, as a dict."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(args.aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = args.timeout
    ae.connection_timeout = args.timeout
    result: dict[str, Any] = {"host": args.host, "port": args.port, "called": args.aec,
                              "tls": tls_args is not None, "ok": False}
    with cliopts.reasons_heard() as reasons:
        start = time.perf_counter()
        assoc = steady(ae.associate(args.host, args.port, ae_title=args.aec, tls_args=tls_args))
        result["associate_ms"] = round((time.perf_counter() - start) * 1000, 2)
        if not assoc.is_established:
            result["error"] = reasons.reason(plain=tls_args is None)
            return result
        result.update(peer_details(assoc.dul.socket.socket))
        rtts, statuses = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            status = assoc.send_c_echo()
            rtts.append(round((time.perf_counter() - start) * 1000, 2))
            statuses.append(getattr(status, "Status", None))
        assoc.release()
    result["echo_ms"] = rtts
    result["statuses"] = [f"0x{s:04X}" if s is not None else None for s in statuses]
    result["ok"] = all(s == 0x0000 for s in statuses)
    if not result["ok"]:
        result["error"] = "the peer answered a failure or did not answer: " + (
            reasons.reason() if None in statuses else ", ".join(result["statuses"]))
    return result


def _print(result: dict[str, Any]) -> None:
    where = f"{result['host']}:{result['port']} ({result['called']})"
    if "echo_ms" not in result:
        print(f"C-ECHO to {where} failed: {result['error']}", file=sys.stderr)
        return
    if result.get("protocol"):
        print(f"TLS:         {result['protocol']} {result['cipher']}")
        peer = result.get("peer")
        if peer:
            print(f"peer:        {peer['subject']}")
            print(f"thumbprint:  {peer['thumbprint_sha1']} (SHA-1)")
            print(f"             {peer['thumbprint_sha256']} (SHA-256)")
            print(f"expires:     {peer['not_after']}")
    rtts = result["echo_ms"]
    print(f"associated:  {result['associate_ms']:.1f} ms")
    if len(rtts) == 1:
        print(f"C-ECHO:      {rtts[0]:.2f} ms round trip, status {result['statuses'][0]}")
    else:
        print(f"C-ECHO x{len(rtts)}:  min {min(rtts):.2f} / median {statistics.median(rtts):.2f}"
              f" / max {max(rtts):.2f} ms")
    if not result["ok"]:
        print(f"C-ECHO to {where} failed: {result['error']}", file=sys.stderr)
    else:
        print(f"C-ECHO to {where}: success")


def run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        print("dcxsec echo: --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        tls_args = cliopts.tls_args(cliopts.config_from_args(args))
    except (ConfigurationError, ValueError) as exc:
        print(f"dcxsec echo: {exc}", file=sys.stderr)
        return 2
    result = echo(args, tls_args)
    if args.json:
        if result.get("echo_ms"):
            rtts = result["echo_ms"]
            result.update(min_ms=min(rtts), median_ms=statistics.median(rtts), max_ms=max(rtts))
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0 if result["ok"] else 1
