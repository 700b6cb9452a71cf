"""Scenario 2: C-STORE throughput, pynetdicom SCU to pynetdicom SCP on loopback.

200 CT-like objects of 512 KiB, and 5 of 50 MB, each set in one association,
with maximum PDU 16382 (pynetdicom's default) and 0 (unlimited) on both AEs.
The SCU sends the files by path, as a gateway forwarding files would; the SCP
writes every received dataset to disk.  Throughput counts file bytes.  The
contenders (those of scenario 1) take their rounds in turn (see interleave.py).
"""
from __future__ import annotations

from functools import partial

import pytest

from conftest import SIZES, dataset_size, requestor
from contenders import DCXSEC, PYNETDICOM_CONTENDERS, pynetdicom_contender
from interleave import Contestant, best_rounds
from report import STORE_TARGETS

MAX_PDUS = (16382, 0)


def store_all(contender, scp, files, max_pdu: int) -> None:
    assoc = requestor(max_pdu).associate("127.0.0.1", scp.port, tls_args=contender.tls_args)
    assert assoc.is_established
    try:
        for path in files:
            assert assoc.send_c_store(path).Status == 0x0000
    finally:
        assoc.release()


def run_store_benchmark(benchmark, report, pki, scp_factory, files, label, max_pdu):
    expected = sorted(dataset_size(p) for p in files)
    total = sum(p.stat().st_size for p in files)
    contestants = []
    for name in PYNETDICOM_CONTENDERS:
        contender = pynetdicom_contender(name, pki)
        scp = scp_factory(contender.server_context, max_pdu=max_pdu)

        def check_and_clear(scp=scp) -> None:
            # Every file of the previous round arrived whole; a clean directory for the next.
            if scp.dataset_sizes:
                assert scp.received() == (len(files), expected)
            scp.clear()

        store_all(contender, scp, files[:1], max_pdu)  # warm-up: lazy imports, caches
        scp.clear()
        contestants.append(Contestant(name, partial(store_all, contender, scp, files, max_pdu),
                                      prepare=check_and_clear))

    best = best_rounds(benchmark, contestants, DCXSEC, SIZES.store_rounds)
    for contestant in contestants:
        contestant.prepare()  # checks the last round of each

    key = f"2-{label}-{max_pdu}"
    report.group(key, f"2 C-STORE {len(files)} x {label}, max PDU {max_pdu}", "MB/s",
                 targets=STORE_TARGETS)
    for name in PYNETDICOM_CONTENDERS:
        report.add(key, name, total / best[name] / 1e6)
    benchmark.extra_info["MB_per_s"] = total / best[DCXSEC] / 1e6


@pytest.mark.parametrize("max_pdu", MAX_PDUS)
def test_cstore_small_objects(benchmark, report, max_pdu, pki, scp_factory, small_files):
    run_store_benchmark(benchmark, report, pki, scp_factory, small_files,
                        f"{SIZES.small_size // 1024} KiB", max_pdu)


@pytest.mark.parametrize("max_pdu", MAX_PDUS)
def test_cstore_large_objects(benchmark, report, max_pdu, pki, scp_factory, large_files):
    run_store_benchmark(benchmark, report, pki, scp_factory, large_files,
                        f"{SIZES.large_size / 1e6:g} MB", max_pdu)
