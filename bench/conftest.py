"""Fixtures of the benchmark suite, and the table of ratios printed at the end.

Run with ``bash scripts/bench.sh`` (or ``python -m pytest bench``).
``BENCH_QUICK=1`` shrinks every size for a smoke run; its numbers are noisy.

Every rate is taken from the best (shortest) of a test's rounds: on a shared
machine, noise only ever adds time, so the best round is the most repeatable.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from contenders import make_pki, pki_folder
from peers import RemoteSCP, RemoteSCU, StoreSCP, requestor  # noqa: F401 - the tests' too
from report import Report

# The test suite's DICOM file maker: the same CT-like objects the tests send.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pki_fixtures import make_ct_dataset  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")

# pynetdicom installs echoscu, storescu and storescp of its own, without TLS,
# beside this interpreter: an activated virtualenv would put them before
# DCMTK's.  The peers meant here are DCMTK's.
_SCRIPTS = sysconfig.get_path("scripts")
os.environ["PATH"] = os.pathsep.join(
    d for d in os.environ.get("PATH", "").split(os.pathsep) if os.path.realpath(d) != os.path.realpath(_SCRIPTS))
# Each mechanism of dcxsec with and without (contenders.ABLATION_VARIANTS).
ABLATE = os.environ.get("BENCH_ABLATE", "") not in ("", "0")
# Scenario 2 again with the SCU and the SCP in this one process (scenario 1 always).
ONE_PROCESS = os.environ.get("BENCH_ONE_PROCESS", "") not in ("", "0")
ablation = pytest.mark.skipif(not ABLATE, reason="the ablation runs with BENCH_ABLATE=1")
KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does; the full run takes about 12 minutes on 2 cores."""

    associations: int = 40         # scenario 1: associations per round
    association_rounds: int = 5
    small_count: int = 200         # scenario 2 and 4: 512 KiB objects
    small_size: int = 512 * KiB
    large_count: int = 5           # scenario 2 and 4: 50 MB objects
    large_size: int = 50_000_000
    store_rounds: int = 3
    raw_bytes: int = 1024 * MiB    # scenario 3
    raw_rounds: int = 5            # the reader is CPU-bound, and a core's speed here moves
                                   # by up to 60 % between rounds: best of five, in turn
    handshakes: int = 200          # scenario 5: connections per round
    handshake_rounds: int = 5
    idle_associations: int = 200   # scenario 6


SIZES = Sizes() if not QUICK else Sizes(
    associations=10, association_rounds=1, small_count=20, large_count=2,
    large_size=8_000_000, store_rounds=1, raw_bytes=64 * MiB, raw_rounds=1, handshakes=30,
    handshake_rounds=1, idle_associations=20)

if os.environ.get("BENCH_ROUNDS"):  # more rounds for scenarios 1, 2 and 4 (the ablation's)
    SIZES = replace(SIZES, association_rounds=int(os.environ["BENCH_ROUNDS"]),
                    store_rounds=int(os.environ["BENCH_ROUNDS"]))

REPORT = Report()


# ---- PKI and files ------------------------------------------------------------

@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """ECDSA P-256 CA and leaves: what dcxsec.pki issues by default."""
    return make_pki(tmp_path_factory.mktemp("pki-ec"), "ec256")


@pytest.fixture(scope="session")
def pki_rsa(tmp_path_factory):
    """RSA-2048 CA and leaves, for the handshake comparison."""
    return make_pki(tmp_path_factory.mktemp("pki-rsa"), "rsa2048")


def write_ct_files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"ct{i:04d}.dcm"
        make_ct_dataset(size).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def small_files(tmp_path_factory) -> list[Path]:
    return write_ct_files(tmp_path_factory.mktemp("small"), SIZES.small_count, SIZES.small_size)


@pytest.fixture(scope="session")
def large_files(tmp_path_factory) -> list[Path]:
    return write_ct_files(tmp_path_factory.mktemp("large"), SIZES.large_count, SIZES.large_size)


def dataset_size(path: Path) -> int:
    """Bytes of a Part 10 file after its preamble and file meta group.

    That is what a C-STORE carries and what the benchmark SCP writes.  The
    group length (0002,0000) UL sits right after the preamble and "DICM".
    """
    with path.open("rb") as f:
        f.seek(128 + 4 + 8)
        group_length = int.from_bytes(f.read(4), "little")
    return path.stat().st_size - (128 + 4 + 12 + group_length)


# ---- pynetdicom on both ends --------------------------------------------------

@pytest.fixture
def scp_factory(tmp_path):
    """SCPs in this process: ``make(ssl_context, max_pdu=..., ...)``."""
    scps: list[StoreSCP] = []

    def make(ssl_context, **kw) -> StoreSCP:
        directory = tmp_path / f"scp{len(scps)}"
        directory.mkdir()
        scps.append(StoreSCP(ssl_context, directory, **kw))
        return scps[-1]

    yield make
    for scp in scps:
        scp.stop()


@pytest.fixture
def remote_scp_factory(tmp_path, pki):
    """SCPs each in a process of its own: ``make(kind, without=None, max_pdu=...)``;
    ``without`` is that process's DCXSEC_WITHOUT (None: this process's)."""
    scps: list[RemoteSCP] = []

    def make(kind: str, without: str | None = None, **kw) -> RemoteSCP:
        directory = tmp_path / f"remote-scp{len(scps)}"
        directory.mkdir()
        scps.append(RemoteSCP(kind, pki_folder(pki), directory, without=without, **kw))
        return scps[-1]

    yield make
    for scp in scps:
        scp.stop()


@pytest.fixture
def remote_scu_factory(pki):
    """Requestors each in a process of its own: ``make(kind, without=None)``."""
    scus: list[RemoteSCU] = []

    def make(kind: str, without: str | None = None) -> RemoteSCU:
        scus.append(RemoteSCU(kind, pki_folder(pki), without=without))
        return scus[-1]

    yield make
    for scu in scus:
        scu.stop()


@pytest.fixture(scope="session")
def report() -> Report:
    return REPORT


# ---- the table ------------------------------------------------------------------

def _command_output(args: list[str]) -> str:
    if not shutil.which(args[0]):
        return "not installed"
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""


def copy_cost_us(size: int, distance: int) -> float:
    """Best time of one memmove of ``size`` bytes whose destination lies
    ``distance`` bytes past the source modulo 4 KiB, in microseconds.

    On AMD Zen 3/4 with glibc 2.36, ``rep movsb`` (which glibc uses for
    copies of 4 KiB and more there) is several times slower for a distance
    of 1-31 bytes (glibc bug 30994).  pynetdicom's ``bytestream += ...``
    copies each PDU once, and where the heap happens to place its two
    buffers decides which side of that line a whole test lands on, for any
    contender.
    """
    buf = ctypes.create_string_buffer(4 * size + 8192)
    src = (ctypes.addressof(buf) + 4095) // 4096 * 4096
    dst = src + (size + 4095) // 4096 * 4096 + distance
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            ctypes.memmove(dst, src, size)
        best = min(best, (time.perf_counter() - start) / 200)
    return best * 1e6


def machine_description() -> str:
    import ssl

    import pydicom
    import pynetdicom

    import dcxsec

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "\n".join([
        f"- cores (nproc): {os.cpu_count()}, CPU: {model}",
        f"- Python {platform.python_version()}, {ssl.OPENSSL_VERSION} (Python's ssl)",
        f"- dcxsec {dcxsec.__version__} on {dcxsec.backend()}",
        f"- pynetdicom {pynetdicom.__version__}, pydicom {pydicom.__version__}",
        f"- openssl CLI: {_command_output(['openssl', 'version'])}",
        f"- DCMTK: {_command_output(['storescu', '--version'])}",
        f"- memmove of one PDU (16,382 bytes), destination 22 / 64 bytes past the source"
        f" modulo 4 KiB: {copy_cost_us(16382, 22):.2f} / {copy_cost_us(16382, 64):.2f} us",
        f"- sizes: {'BENCH_QUICK (smoke run, noisy)' if QUICK else 'full'}: {SIZES}",
    ])


def pytest_configure(config):
    # pytest-benchmark applies these to the lead's rounds only (and profiling
    # adds a round for the others); the contenders are timed alike here.
    for option, flag in (("benchmark_disable_gc", "--benchmark-disable-gc"),
                         ("benchmark_cprofile", "--benchmark-cprofile")):
        if config.getoption(option, default=None):
            raise pytest.UsageError(f"{flag} is refused here: it would apply to dcxsec's "
                                    "rounds only, and the contenders are timed alike")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not REPORT.groups:
        return
    table = REPORT.markdown()
    text = "Ratios measured in this run\n\n" + machine_description() + "\n\n" + table + "\n"
    terminalreporter.write_sep("=", "dcxsec benchmark: ratios of this run")
    terminalreporter.write_line(text)
    out = Path(config.rootpath) / ".benchmarks" / "latest-table.md"
    try:
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)
        out.with_name("latest-rounds.json").write_text(json.dumps(REPORT.json(), indent=1))
        terminalreporter.write_line(f"(also written to {out}, each round in latest-rounds.json)")
    except OSError:
        pass
