"""dcxsec with _recvbuf and _keepgil on CPython's full API, beside this tree's
limited-API build, for the ablation's ``limited-api`` variant.

The two modules are built from a git revision whose sources still use the
full API (``BENCH_FULL_API_REV``, by default the last one before the port),
with the same setuptools build and flags as setup.py's, into an overlay
folder: ``build/full-api/dcxsec`` holds them, this tree's Python files and
its engine (``_tls``).  A peer process with the overlay first on
``PYTHONPATH`` imports that package in place of the installed one
(peers.py); it reports the modules it loaded, and ``check`` refuses a peer
that loaded the other build.

As a program, it builds the overlay and prints where the modules are:
``python bench/full_api.py``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "build" / "full-api"
# the last revision whose _recvbuf.c and _keepgil.c use the full API
REV = os.environ.get("BENCH_FULL_API_REV", "79b797b")
MODULES = ("_recvbuf", "_keepgil")

_built: Path | None = None


def _compile(sources: Path, out: Path) -> None:
    """The two modules, as setup.py builds them but without py_limited_api, into out/dcxsec/."""
    from setuptools import Distribution, Extension

    dist = Distribution({"name": "dcxsec-full-api", "ext_modules": [
        Extension("dcxsec._recvbuf", [str(sources / "_recvbuf.c")]),
        Extension("dcxsec._keepgil", [str(sources / "_keepgil.c")], include_dirs=[str(ROOT / "csrc")]),
    ]})
    build = dist.get_command_obj("build_ext")
    build.build_lib, build.build_temp, build.force = str(out), str(out / "obj"), True
    build.ensure_finalized()
    build.run()


def overlay() -> Path:
    """The overlay folder for PYTHONPATH, built once per process: this tree's
    package as installed, with the full API's _recvbuf and _keepgil."""
    global _built
    if _built is not None:
        return _built
    shutil.rmtree(OVERLAY, ignore_errors=True)
    sources = OVERLAY / "src"
    sources.mkdir(parents=True)
    for module in MODULES:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{REV}:csrc/python/{module}.c"],
                              check=True, capture_output=True, text=True).stdout
        assert "Py_LIMITED_API" not in text, f"{REV}'s {module}.c is on the limited API"
        (sources / f"{module}.c").write_text(text)
    package = OVERLAY / "dcxsec"
    package.mkdir()
    installed = Path(importlib.util.find_spec("dcxsec").origin).parent
    engine = Path(importlib.util.find_spec("dcxsec._tls").origin)
    for path in [*installed.glob("*.py"), installed / "py.typed", engine]:
        shutil.copy2(path, package / path.name)
    _compile(sources, OVERLAY)
    _built = OVERLAY
    return OVERLAY


def loaded() -> list[str]:
    """Where this process's dcxsec took _recvbuf and _keepgil from."""
    from dcxsec import _keepgil, _recvbuf

    return [_recvbuf.__file__, _keepgil.__file__]


def check(files: list[str], full_api: bool) -> None:
    """Refuses a peer whose modules are not the build its variant names."""
    inside = [Path(f).resolve().is_relative_to(OVERLAY.resolve()) for f in files]
    if inside != [full_api] * len(files):
        meant = f"the full API's build in {OVERLAY}" if full_api else "this tree's build"
        raise RuntimeError(f"a peer meant to run {meant} loaded {files}")


if __name__ == "__main__":
    done = subprocess.run([sys.executable, "-c", "import full_api; print(*full_api.loaded(), sep='\\n')"],
                          cwd=Path(__file__).resolve().parent, env={**os.environ, "PYTHONPATH": str(overlay())},
                          capture_output=True, text=True, check=True)
    print(done.stdout, end="")
