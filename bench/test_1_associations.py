"""Scenario 1: associations per second (associate, C-ECHO, release) on loopback.

Mutual TLS with TRUST_CHAIN for dcxsec; pynetdicom with Python's ssl set up
as its documentation shows, and the same with TCP_NODELAY on both sides;
plain TCP; plain TCP with TCP_NODELAY.  One
requestor AE repeats associations to the same SCP, so a transport that
resumes sessions for a repeat peer may do so.  The contenders take their
rounds in turn (see interleave.py).
"""
from __future__ import annotations

from conftest import SIZES, requestor
from contenders import DCXSEC, PYNETDICOM_CONTENDERS, SSL, pynetdicom_contender
from interleave import Contestant, best_rounds
from report import ASSOC_TARGETS, Target


def test_associations_per_second(benchmark, pki, scp_factory, report):
    contestants, resumed = [], {DCXSEC: [], SSL: []}
    for name in PYNETDICOM_CONTENDERS:
        contender = pynetdicom_contender(name, pki)
        scp = scp_factory(contender.server_context)
        ae = requestor()

        def one_association(contender=contender, scp=scp, ae=ae) -> None:
            assoc = ae.associate("127.0.0.1", scp.port, tls_args=contender.tls_args)
            assert assoc.is_established
            if contender.name in resumed:
                sock = assoc.dul.socket.socket
                resumed[contender.name].append(bool(getattr(sock, "session_reused", False)))
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()

        def round_of_associations(one_association=one_association) -> None:
            for _ in range(SIZES.associations):
                one_association()

        one_association()  # the first one loads and builds everything lazily made
        contestants.append(Contestant(name, round_of_associations))
    for shares in resumed.values():
        shares.clear()

    best = best_rounds(benchmark, contestants, DCXSEC, SIZES.association_rounds)

    report.group("1-assoc", "1 associate+C-ECHO+release", "assoc/s", targets=ASSOC_TARGETS)
    for name in PYNETDICOM_CONTENDERS:
        report.add("1-assoc", name, SIZES.associations / best[name])
    benchmark.extra_info["associations_per_s"] = SIZES.associations / best[DCXSEC]
    report.group("1-resume", "1 sessions resumed (repeat peer)", "%",
                 targets=(Target(None, 100.0),))
    for name, shares in resumed.items():
        report.add("1-resume", name, 100.0 * sum(shares) / max(1, len(shares)),
                   note=f"{sum(shares)} of {len(shares)}")
