"""The manylinux wheel, installed into a fresh virtualenv, passes the tests.

dist/'s manylinux wheel (scripts/build-wheels.sh; rebuilt when a source is
newer) goes into a new virtualenv with pip, beside nothing of this tree: no
compiler or OpenSSL headers are needed, and the engine loads the libssl and
libcrypto that auditwheel put into the wheel.  This suite is then copied to
a temporary folder and run there by the virtualenv's pytest, so that
``import dcxsec`` can only find the installed package; only the tests of the
source tree itself stay out (its packaging, the wheels, the C conformance
build under Wine).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import needs_tools

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
# the tests of the source tree, not of the package
OF_THE_TREE = {"test_linux_wheel.py", "test_windows_wheel.py", "test_packaging.py",
               "test_schannel_wine.py"}
TEST_TOOLS = ["pytest>=7", "pytest-timeout>=2", "numpy"]

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the manylinux wheel is for Linux"),
    needs_tools("storescp", "storescu", "echoscu", install="dcmtk"),
]


def manylinux_wheel() -> Path:
    """dist/'s manylinux wheel (cp311-abi3: any CPython from 3.11, this one among them),
    built first when missing or older than a source."""
    pattern = "dcxsec-*-cp311-abi3-manylinux*_x86_64.whl"
    sources = [*ROOT.glob("csrc/**/*.[ch]"), *ROOT.glob("dcxsec/*.py"), ROOT / "csrc/build.py",
               ROOT / "setup.py", ROOT / "pyproject.toml"]
    wheels = sorted(DIST.glob(pattern))
    if not wheels or wheels[-1].stat().st_mtime < max(p.stat().st_mtime for p in sources):
        done = subprocess.run(["bash", str(ROOT / "scripts/build-wheels.sh")], cwd=ROOT,
                              env={**os.environ, "WHICH": "linux"}, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        wheels = sorted(DIST.glob(pattern))
    return wheels[-1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel (and its dependencies) installed by pip."""
    wheel = manylinux_wheel()
    home = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    done = subprocess.run([str(home / "bin/python"), "-m", "pip", "install", "-q", str(wheel), *TEST_TOOLS],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return home


def venv_run(venv: Path, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The virtualenv's python, with this interpreter's scripts folder off PATH
    (pynetdicom's own storescp there has no TLS) and nothing of this tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    scripts = os.path.realpath(sysconfig.get_path("scripts"))
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                  if os.path.realpath(d) != scripts)
    return subprocess.run([str(venv / "bin/python"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_engine_loads_the_openssl_the_wheel_carries(venv, tmp_path):
    code = ("import dcxsec, dcxsec._tls, sysconfig; print(dcxsec.__file__); print(dcxsec._tls.__file__);"
            "print(sysconfig.get_path('purelib')); print(dcxsec.backend())")
    done = venv_run(venv, ["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    module, engine, purelib, backend = done.stdout.splitlines()
    assert Path(module).is_relative_to(purelib) and Path(purelib).is_relative_to(venv), (module, purelib)
    assert backend.startswith("OpenSSL"), backend
    # Python's own ssl module may load the system's OpenSSL too: the engine's are its own
    linked = subprocess.run(["ldd", engine], capture_output=True, text=True, check=True).stdout
    openssl = [line.split() for line in linked.splitlines() if "libssl" in line or "libcrypto" in line]
    assert len(openssl) == 2, linked
    assert all(Path(os.path.normpath(words[2])).parent == Path(purelib) / "dcxsec.libs" for words in openssl), linked


def test_the_wheel_is_abi3_in_every_module():
    """One wheel for every CPython from 3.11: the engine, _recvbuf and _keepgil
    are all on the limited API, and named so (``.abi3.so``)."""
    names = zipfile.ZipFile(manylinux_wheel()).namelist()
    modules = sorted(n for n in names if n.startswith("dcxsec/") and n.endswith(".so"))
    assert modules == ["dcxsec/_keepgil.abi3.so", "dcxsec/_recvbuf.abi3.so", "dcxsec/_tls.abi3.so"], modules


def test_the_suite_passes_against_the_installed_wheel(venv, tmp_path):
    tests = tmp_path / "tests"
    shutil.copytree(ROOT / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    suite = sorted(p.name for p in tests.glob("test_*.py") if p.name not in OF_THE_TREE)
    (tests / "test_installed_here.py").write_text(
        "import sysconfig\nfrom pathlib import Path\nimport dcxsec\n\n\n"
        "def test_dcxsec_is_the_installed_one():\n"
        "    assert Path(dcxsec.__file__).is_relative_to(sysconfig.get_path('purelib')), dcxsec.__file__\n")
    done = venv_run(venv, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=300",
                           "-W", "ignore::pytest.PytestConfigWarning",
                           "--rootdir", str(tmp_path),
                           *(str(tests / name) for name in [*suite, "test_installed_here.py"])],
                  tmp_path, timeout=1800)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print("installed wheel:", summary)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary, summary
