"""Cross-builds dcxsec's Windows wheel (win_amd64) on Linux with mingw-w64.

scripts/build-wheels.sh fetches what this needs into a cache folder first:
CPython's headers (``include/``, with PC/pyconfig.h.in as pyconfig.h) and the
embeddable Windows runtime (``runtime/``), whose DLLs the modules link
against.  The engine's C comes from the same csrc/build.py as on Linux, in
cffi API mode, told the target by DCXSEC_TARGET.

Every module is on the limited API (Py_LIMITED_API in its source, 3.11 for
_recvbuf) and links python3.dll, the stable ABI's DLL: the wheel is tagged
cp311-abi3 and serves every CPython from 3.11, though built with the
runtime's (3.13) headers.

The modules link the Universal C Runtime (ucrtbase.dll), as CPython does:
mingw-w64's default is msvcrt.dll, so gcc's specs are rewritten to take
libucrt.a instead (``ucrt_specs``), and ``check_imports`` refuses a module
that still imports msvcrt.dll.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CC = "x86_64-w64-mingw32-gcc"
OBJDUMP = "x86_64-w64-mingw32-objdump"
PLATFORM = "win_amd64"
# the oldest CPython the modules' limited API serves (_recvbuf's Py_LIMITED_API)
TAG = "cp311-abi3"


def run(cmd: list[str], **kw) -> None:
    """Runs ``cmd``, echoing it; a failure ends the build with its output."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def ucrt_specs(work: Path) -> Path:
    """A gcc specs file that links ucrtbase.dll in place of msvcrt.dll."""
    specs = subprocess.run([CC, "-dumpspecs"], check=True, capture_output=True, text=True).stdout
    path = work / "ucrt.specs"
    path.write_text(re.sub(r"-lmsvcrt\b", "-lucrt", specs))
    return path


def engine_build(work: Path) -> dict:
    """The engine's C, emitted by csrc/build.py for Windows, and its set_source() keywords."""
    os.environ["DCXSEC_TARGET"] = PLATFORM
    spec = importlib.util.spec_from_file_location("dcx_build_script", ROOT / "csrc" / "build.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.ffibuilder.emit_c_code(str(work / "_tls.c"))
    return script.build_arguments()


def compile_module(out: Path, sources: list[Path], includes: list[Path], libraries: list[str],
                   runtime: Path, specs: Path) -> None:
    """One extension module (.pyd), linked straight against the runtime's DLLs,
    stripped.  Messages cut to their buffer's size are meant: no truncation warnings."""
    run([CC, f"-specs={specs}", "-D_UCRT", "-O2", "-Wall", "-Wno-format-truncation", "-shared",
         "-static-libgcc", "-s",
         "-o", str(out), *map(str, sources), *(f"-I{d}" for d in includes),
         f"-L{runtime}", *(f"-l{lib}" for lib in libraries)], cwd=ROOT)


def check_imports(module: Path) -> None:
    """Refuses a module that links a C runtime other than CPython's (the UCRT),
    or one CPython version's DLL (python313.dll) where abi3 needs python3.dll."""
    dump = subprocess.run([OBJDUMP, "-p", str(module)], check=True, capture_output=True, text=True).stdout
    dlls = sorted(set(re.findall(r"DLL Name: (\S+)", dump)))
    print(f"  {module.name} imports {', '.join(dlls)}", flush=True)
    if any(dll.lower().startswith("msvcr") for dll in dlls):
        raise SystemExit(f"{module.name} links msvcrt; it must use the UCRT as CPython does")
    if any(re.fullmatch(r"python3\d+\.dll", dll.lower()) for dll in dlls):
        raise SystemExit(f"{module.name} links one CPython version's DLL; abi3 links python3.dll")


def build_modules(cache: Path, package: Path) -> None:
    """_tls (cffi), _recvbuf and _keepgil, all on the limited API, into ``package``."""
    work = cache / "obj"
    work.mkdir(parents=True, exist_ok=True)
    runtime, includes = cache / "runtime", [cache / "include", ROOT / "csrc"]
    specs = ucrt_specs(work)
    engine = engine_build(work)
    modules = [
        # each source defines Py_LIMITED_API (cffi's generated C for _tls):
        # python3.dll serves them, and a plain name is abi3's on Windows
        ("_tls.pyd", [work / "_tls.c", *map(Path, engine["sources"])], engine["libraries"] + ["python3"]),
        ("_recvbuf.pyd", [ROOT / "csrc/python/_recvbuf.c"], ["python3"]),
        ("_keepgil.pyd", [ROOT / "csrc/python/_keepgil.c"], ["python3", "ws2_32"]),
    ]
    for name, sources, libraries in modules:
        compile_module(package / name, sources, includes, libraries, runtime, specs)
        check_imports(package / name)


def metadata(stage: Path) -> str:
    """The .dist-info from setuptools' metadata hook (compiles nothing), into ``stage``."""
    env = {k: v for k, v in os.environ.items() if k != "DCXSEC_TARGET"}
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(stage)], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def make_wheel(cache: Path, dist: Path) -> Path:
    """Stages the package and its metadata, then packs the wheel into ``dist``."""
    stage = cache / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    package = stage / "dcxsec"
    package.mkdir(parents=True)
    for source in sorted((ROOT / "dcxsec").glob("*.py")) + [ROOT / "dcxsec" / "py.typed"]:
        shutil.copy2(source, package / source.name)
    build_modules(cache, package)
    info = stage / metadata(stage)
    for leftover in stage.glob("*.egg-info"):  # the hook's working copy, not part of a wheel
        shutil.rmtree(leftover)
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: dcxsec scripts/winwheel.py\n"
                                f"Root-Is-Purelib: false\nTag: {TAG}-{PLATFORM}\n")
    dist.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "wheel", "pack", str(stage), "-d", str(dist)])
    version = re.search(r"^Version: (\S+)", (info / "METADATA").read_text(), re.M).group(1)
    return dist / f"dcxsec-{version}-{TAG}-{PLATFORM}.whl"


def check_wheel(wheel: Path) -> None:
    """Refuses a wheel carrying C sources or anything built for Linux."""
    names = zipfile.ZipFile(wheel).namelist()
    wrong = [n for n in names if n.endswith((".c", ".h", ".so", ".o")) or "linux" in n]
    if wrong:
        raise SystemExit(f"{wheel.name} carries files it must not: {', '.join(wrong)}")
    print(f"{wheel} ({wheel.stat().st_size} bytes, {len(names)} files)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="holds include/ and runtime/")
    parser.add_argument("--dist", type=Path, required=True)
    args = parser.parse_args()
    check_wheel(make_wheel(args.cache.resolve(), args.dist.resolve()))


if __name__ == "__main__":
    main()
