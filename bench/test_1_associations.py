"""Scenario 1: associations per second (associate, C-ECHO, release) on loopback.

Mutual TLS with TRUST_CHAIN for dcxsec; pynetdicom with Python's ssl set up
as its documentation shows; plain TCP; plain TCP with TCP_NODELAY.  One
requestor AE repeats associations to the same SCP, so a transport that
resumes sessions for a repeat peer may do so.
"""
from __future__ import annotations

import pytest

from conftest import SIZES, requestor
from contenders import DCXSEC, PYNETDICOM_CONTENDERS, SSL, pynetdicom_contender
from report import ASSOC_TARGETS, Target


@pytest.mark.parametrize("name", PYNETDICOM_CONTENDERS)
def test_associations_per_second(benchmark, name, pki, scp_factory, report):
    contender = pynetdicom_contender(name, pki)
    scp = scp_factory(contender.server_context)
    ae = requestor()
    resumed = []

    def one_association() -> None:
        assoc = ae.associate("127.0.0.1", scp.port, tls_args=contender.tls_args)
        assert assoc.is_established
        resumed.append(bool(getattr(assoc.dul.socket.socket, "session_reused", False)))
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()

    def round_of_associations() -> None:
        for _ in range(SIZES.associations):
            one_association()

    one_association()  # the first one loads and builds everything lazily made
    resumed.clear()
    benchmark.pedantic(round_of_associations, rounds=SIZES.association_rounds, iterations=1)

    rate = SIZES.associations / benchmark.stats.stats.min
    benchmark.extra_info["associations_per_s"] = rate
    report.group("1-assoc", "1 associate+C-ECHO+release", "assoc/s", targets=ASSOC_TARGETS)
    report.add("1-assoc", name, rate)
    if name in (DCXSEC, SSL):
        share = 100.0 * sum(resumed) / max(1, len(resumed))
        report.group("1-resume", "1 sessions resumed (repeat peer)", "%",
                     targets=(Target(None, 100.0),))
        report.add("1-resume", name, share, note=f"{sum(resumed)} of {len(resumed)}")
