"""Scenario 1: associations per second (associate, C-ECHO, release) on loopback.

Mutual TLS with TRUST_CHAIN for dcxsec; pynetdicom with Python's ssl set up
as its documentation shows, and the same with TCP_NODELAY on both sides;
plain TCP; plain TCP with TCP_NODELAY.  One
requestor AE repeats associations to the same SCP, so a transport that
resumes sessions for a repeat peer may do so.  The contenders take their
rounds in turn (see interleave.py).

The main rows run each contender's SCP in a process of its own (peers.py),
as a modality and a PACS never share a GIL, and the requestor here; the
second rows run both in this process, as the suite did before.  With
BENCH_ABLATE=1, dcxsec with and without each of its speed mechanisms, the
requestor and the SCP each in a process of its own started with that
DCXSEC_WITHOUT.
"""
from __future__ import annotations

from functools import partial

from conftest import SIZES, ablation, requestor
from contenders import (ABLATION_VARIANTS, DCXSEC, PYNETDICOM_CONTENDERS, SSL,
                        pynetdicom_contender)
from interleave import Contestant, best_rounds
from peers import echo_association
from report import ABLATION, ASSOC_TARGETS, ONE_PROCESS, Target

TITLE = "1 associate+C-ECHO+release"


def record(report, key: str, title: str, best: dict[str, float], every: dict[str, list[float]],
           **group) -> None:
    report.group(key, title, "assoc/s", **group)
    for name, seconds in best.items():
        report.add(key, name, SIZES.associations / seconds,
                   rounds=[SIZES.associations / s for s in every[name]])


def pynetdicom_rounds(benchmark, pki, make_scp) -> tuple[dict, dict, dict[str, list[bool]]]:
    """Every contender's rounds, the requestor here and the SCP from make_scp(name, contender)."""
    contestants, resumed = [], {DCXSEC: [], SSL: []}
    for name in PYNETDICOM_CONTENDERS:
        contender = pynetdicom_contender(name, pki)
        scp, ae = make_scp(name, contender), requestor()

        def one_association(contender=contender, scp=scp, ae=ae) -> None:
            reused = echo_association(ae, scp.port, contender.tls_args)
            if contender.name in resumed:
                resumed[contender.name].append(reused)

        def round_of_associations(one_association=one_association) -> None:
            for _ in range(SIZES.associations):
                one_association()

        one_association()  # the first one loads and builds everything lazily made
        contestants.append(Contestant(name, round_of_associations))
    for shares in resumed.values():
        shares.clear()
    every: dict[str, list[float]] = {}
    best = best_rounds(benchmark, contestants, DCXSEC, SIZES.association_rounds, every)
    return best, every, resumed


def test_associations_per_second(benchmark, pki, remote_scp_factory, report):
    best, every, resumed = pynetdicom_rounds(benchmark, pki,
                                             lambda name, contender: remote_scp_factory(name))
    record(report, "1-assoc", f"{TITLE} (SCP in its own process)", best, every,
           targets=ASSOC_TARGETS)
    benchmark.extra_info["associations_per_s"] = SIZES.associations / best[DCXSEC]
    report.group("1-resume", "1 sessions resumed (repeat peer)", "%",
                 targets=(Target(None, 100.0),))
    for name, shares in resumed.items():
        report.add("1-resume", name, 100.0 * sum(shares) / max(1, len(shares)),
                   note=f"{sum(shares)} of {len(shares)}")


def test_associations_per_second_one_process(benchmark, pki, scp_factory, report):
    best, every, _ = pynetdicom_rounds(
        benchmark, pki, lambda name, contender: scp_factory(contender.server_context))
    record(report, "1-assoc-1p", f"{TITLE} (one process)", best, every, section=ONE_PROCESS)


@ablation
def test_associations_ablation(benchmark, remote_scp_factory, remote_scu_factory, report):
    contestants = []
    for name, without in ABLATION_VARIANTS.items():
        scp = remote_scp_factory(DCXSEC, without=without)
        scu = remote_scu_factory(DCXSEC, without=without)
        scu.associations(scp.port, 1)  # warm-up
        contestants.append(Contestant(name, partial(scu.associations, scp.port,
                                                    SIZES.associations)))
    every: dict[str, list[float]] = {}
    best = best_rounds(benchmark, contestants, DCXSEC, SIZES.association_rounds, every)
    record(report, "1-ablate", TITLE, best, every, section=ABLATION)
