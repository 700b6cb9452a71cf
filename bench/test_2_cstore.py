"""Scenario 2: C-STORE throughput, pynetdicom SCU to pynetdicom SCP on loopback.

200 CT-like objects of 512 KiB, and 5 of 50 MB, each set in one association,
with maximum PDU 16382 (pynetdicom's default) and 0 (unlimited) on both AEs.
The SCU sends the files by path, as a gateway forwarding files would; the SCP
writes every received dataset to disk and reports the size of each, which
is checked after every round.  Throughput counts file bytes.  The
contenders (those of scenario 1) take their rounds in turn (see interleave.py).

The main rows run each contender's SCP in a process of its own (peers.py)
and the SCU here.  BENCH_ONE_PROCESS=1 adds rows with both in this process;
BENCH_ABLATE=1 adds dcxsec with and without each of its speed mechanisms,
the SCU and the SCP each in a process of its own started with that
DCXSEC_WITHOUT.
"""
from __future__ import annotations

from functools import partial

import pytest

from conftest import ONE_PROCESS, SIZES, ablation, dataset_size
from contenders import ABLATION_VARIANTS, DCXSEC, PYNETDICOM_CONTENDERS, pynetdicom_contender
from interleave import Contestant, best_rounds
from peers import store_all
from report import ABLATION, MAIN, STORE_TARGETS
from report import ONE_PROCESS as ONE_PROCESS_SECTION

MAX_PDUS = (16382, 0)


def run_store_benchmark(benchmark, report, files, label: str, max_pdu: int, section: str,
                        peers) -> None:
    """``peers``: (name, SCP, store(files)) of each contender."""
    expected = sorted(dataset_size(p) for p in files)
    total = sum(p.stat().st_size for p in files)
    contestants, scps = [], []
    for name, scp, store in peers:
        def check_and_clear(scp=scp) -> None:
            # Every file of the previous round arrived whole; a clean directory for the next.
            received = scp.received()
            if received[0] or received[1]:
                assert received == (len(files), expected)
            scp.clear()

        store(files[:1])  # warm-up: lazy imports, caches
        scp.clear()
        scps.append(scp)
        contestants.append(Contestant(name, partial(store, files), prepare=check_and_clear))

    every: dict[str, list[float]] = {}
    best = best_rounds(benchmark, contestants, DCXSEC, SIZES.store_rounds, every)
    for scp in scps:
        assert scp.received() == (len(files), expected)  # the last round of each
        scp.clear()

    where = {MAIN: " (SCP in its own process)", ONE_PROCESS_SECTION: " (one process)"}
    key = f"2-{label}-{max_pdu}-{section}"
    report.group(key, f"2 C-STORE {len(files)} x {label}, max PDU {max_pdu}"
                 f"{where.get(section, '')}", "MB/s",
                 targets=STORE_TARGETS if section == MAIN else (), section=section)
    for name in best:
        report.add(key, name, total / best[name] / 1e6, rounds=[total / s / 1e6 for s in every[name]])
    if section == MAIN:
        benchmark.extra_info["MB_per_s"] = total / best[DCXSEC] / 1e6


def remote_scps(pki, remote_scp_factory, max_pdu: int):
    for name in PYNETDICOM_CONTENDERS:
        contender = pynetdicom_contender(name, pki)
        scp = remote_scp_factory(name, max_pdu=max_pdu)
        yield name, scp, partial(lambda c, s, f: store_all(c.tls_args, s.port, f, max_pdu),
                                 contender, scp)


def local_scps(pki, scp_factory, max_pdu: int):
    for name in PYNETDICOM_CONTENDERS:
        contender = pynetdicom_contender(name, pki)
        scp = scp_factory(contender.server_context, max_pdu=max_pdu)
        yield name, scp, partial(lambda c, s, f: store_all(c.tls_args, s.port, f, max_pdu),
                                 contender, scp)


def ablation_peers(remote_scp_factory, remote_scu_factory, max_pdu: int):
    for name, without in ABLATION_VARIANTS.items():
        scp = remote_scp_factory(DCXSEC, without=without, max_pdu=max_pdu)
        scu = remote_scu_factory(DCXSEC, without=without)
        yield name, scp, partial(lambda u, s, f: u.store(s.port, f, max_pdu), scu, scp)


def small(files) -> str:
    return f"{SIZES.small_size // 1024} KiB"


def large(files) -> str:
    return f"{SIZES.large_size / 1e6:g} MB"


@pytest.mark.parametrize("max_pdu", MAX_PDUS)
def test_cstore_small_objects(benchmark, report, max_pdu, pki, remote_scp_factory, small_files):
    run_store_benchmark(benchmark, report, small_files, small(small_files), max_pdu, MAIN,
                        remote_scps(pki, remote_scp_factory, max_pdu))


@pytest.mark.parametrize("max_pdu", MAX_PDUS)
def test_cstore_large_objects(benchmark, report, max_pdu, pki, remote_scp_factory, large_files):
    run_store_benchmark(benchmark, report, large_files, large(large_files), max_pdu, MAIN,
                        remote_scps(pki, remote_scp_factory, max_pdu))


one_process = pytest.mark.skipif(not ONE_PROCESS,
                                 reason="scenario 2 in one process runs with BENCH_ONE_PROCESS=1")


@one_process
@pytest.mark.parametrize("max_pdu", MAX_PDUS)
def test_cstore_small_objects_one_process(benchmark, report, max_pdu, pki, scp_factory,
                                          small_files):
    run_store_benchmark(benchmark, report, small_files, small(small_files), max_pdu,
                        ONE_PROCESS_SECTION, local_scps(pki, scp_factory, max_pdu))


@one_process
@pytest.mark.parametrize("max_pdu", MAX_PDUS)
def test_cstore_large_objects_one_process(benchmark, report, max_pdu, pki, scp_factory,
                                          large_files):
    run_store_benchmark(benchmark, report, large_files, large(large_files), max_pdu,
                        ONE_PROCESS_SECTION, local_scps(pki, scp_factory, max_pdu))


@ablation
@pytest.mark.parametrize("max_pdu", MAX_PDUS)
@pytest.mark.parametrize("objects", ["small", "large"])
def test_cstore_ablation(benchmark, report, objects, max_pdu, remote_scp_factory,
                         remote_scu_factory, request):
    files = request.getfixturevalue(f"{objects}_files")
    label = small(files) if objects == "small" else large(files)
    run_store_benchmark(benchmark, report, files, label, max_pdu, ABLATION,
                        ablation_peers(remote_scp_factory, remote_scu_factory, max_pdu))
