"""How dcxsec is built and shipped: OpenSSL found where it is, py.typed and no
C sources in the wheel, and a library that logs nothing unless its application asks."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import needs_tools

ROOT = Path(__file__).resolve().parent.parent
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="builds against Linux's OpenSSL")


def load_build_script(tmp_path: Path):
    """csrc/build.py as a module (it declares the engine, it does not compile it)."""
    spec = importlib.util.spec_from_file_location("dcx_build_script", tmp_path / "csrc" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sources(tmp_path) -> Path:
    """A copy of csrc/, so that a build's objects land in tmp_path, not in the tree."""
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc", ignore=shutil.ignore_patterns("*.o"))
    return tmp_path


@pytest.fixture
def openssl_dir(tmp_path) -> Path:
    """An OpenSSL installation laid out as Homebrew's: include/openssl and lib/,
    linked to the system's headers and libraries."""
    if not (Path("/usr/include/openssl/ssl.h").exists() and list(LIBDIR.glob("libssl.so*"))):
        pytest.skip("needs the system's OpenSSL headers and libraries (libssl-dev)")
    root = tmp_path / "openssl"
    (root / "include").mkdir(parents=True)
    (root / "include" / "openssl").symlink_to("/usr/include/openssl")
    (root / "lib").mkdir()
    for library in [*LIBDIR.glob("libssl.so*"), *LIBDIR.glob("libcrypto.so*")]:
        (root / "lib" / library.name).symlink_to(library)
    return root


def build_engine(folder: Path, env: dict[str, str]) -> str:
    """Compile the engine with csrc/build.py in ``folder``; the compiler's commands."""
    done = subprocess.run([sys.executable, "csrc/build.py"], cwd=folder, capture_output=True,
                          text=True, timeout=300, env={**_base_env(), **env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("OPENSSL_DIR", "PKG_CONFIG_PATH",
                                                            "PKG_CONFIG_LIBDIR")}


def engine_backend(folder: Path) -> tuple[str, str]:
    """(dcx_backend(), the engine's shared libraries) of the engine built in ``folder``."""
    (built,) = (folder / "dcxsec").glob("_tls*.so")
    probe = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('_tls', sys.argv[1]);"
             "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
             "print(m.ffi.string(m.lib.dcx_backend()).decode())")
    done = subprocess.run([sys.executable, "-c", probe, str(built)], capture_output=True, text=True,
                          timeout=60, env=_base_env())
    assert done.returncode == 0, done.stderr
    linked = subprocess.run(["ldd", str(built)], capture_output=True, text=True, timeout=60).stdout
    return done.stdout.strip(), linked


@needs_tools("gcc", "ldd", install="gcc libc-bin")
def test_engine_builds_against_openssl_dir(sources, openssl_dir):
    """OPENSSL_DIR, as for Homebrew's OpenSSL: its headers, its libraries, and at run time too."""
    log = build_engine(sources, {"OPENSSL_DIR": str(openssl_dir)})
    assert f"-I{openssl_dir}/include" in log and f"-L{openssl_dir}/lib" in log
    backend, linked = engine_backend(sources)
    assert backend.startswith("OpenSSL 3")
    assert f"{openssl_dir}/lib/libssl.so" in linked  # the rpath keeps it to OPENSSL_DIR's


@needs_tools("gcc", "pkg-config", install="gcc pkg-config")
def test_engine_builds_with_what_pkg_config_says(sources, openssl_dir, tmp_path):
    pc = tmp_path / "pc"
    pc.mkdir()
    (pc / "openssl.pc").write_text(
        f"prefix={openssl_dir}\nName: OpenSSL\nDescription: test\nVersion: 3\n"
        f"Libs: -L${{prefix}}/lib -lssl -lcrypto\nCflags: -I${{prefix}}/include -DDCX_FROM_PKG_CONFIG=1\n")
    log = build_engine(sources, {"PKG_CONFIG_LIBDIR": str(pc)})
    assert f"-I{openssl_dir}/include" in log and f"-L{openssl_dir}/lib" in log
    assert "-DDCX_FROM_PKG_CONFIG=1" in log
    assert engine_backend(sources)[0].startswith("OpenSSL 3")


@needs_tools("pkg-config", install="pkg-config")
def test_without_openssl_dir_or_pkg_config_the_compiler_finds_it(sources, tmp_path, monkeypatch):
    """Neither there: no extra folders, as the build always did on Linux."""
    monkeypatch.delenv("OPENSSL_DIR", raising=False)
    build = load_build_script(sources)
    arguments = build.build_arguments({"PKG_CONFIG_LIBDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert arguments["include_dirs"] == [build.os.path.relpath(sources / "csrc")]
    assert "library_dirs" not in arguments and arguments["libraries"] == ["ssl", "crypto", "pthread"]
    assert build.build_arguments({"PATH": str(tmp_path)})["include_dirs"] == arguments["include_dirs"]


def test_openssl_dir_without_openssl_says_so(sources, tmp_path):
    build = load_build_script(sources)
    with pytest.raises(SystemExit, match=f"OPENSSL_DIR={tmp_path}: no .*openssl/ssl.h"):
        build.build_arguments({"OPENSSL_DIR": str(tmp_path)})
    (tmp_path / "include" / "openssl").mkdir(parents=True)
    (tmp_path / "include" / "openssl" / "ssl.h").write_text("")
    with pytest.raises(SystemExit, match="no libssl in"):
        build.build_arguments({"OPENSSL_DIR": str(tmp_path)})


def test_windows_build_is_schannel_and_asks_for_no_openssl(sources, tmp_path):
    """The build script as on Windows: SChannel's sources and libraries; OPENSSL_DIR is
    not looked at (it points nowhere here)."""
    script = ("import sys, json, importlib.util; sys.platform = 'win32';"
              "spec = importlib.util.spec_from_file_location('b', 'csrc/build.py');"
              "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
              "print(json.dumps(m.build_arguments()))")
    done = subprocess.run([sys.executable, "-c", script], cwd=sources, capture_output=True, text=True,
                          timeout=60, env={**_base_env(), "OPENSSL_DIR": str(tmp_path / "nowhere")})
    assert done.returncode == 0, done.stderr
    assert '"libraries": ["secur32", "crypt32", "ws2_32", "ncrypt"]' in done.stdout
    assert "csrc/schannel.c" in done.stdout and "openssl" not in done.stdout
    assert "-std=c11" not in done.stdout and "nowhere" not in done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a clean copy of the tree: a build/ left by an
    earlier build would put its stale files in the wheel."""
    tree = tmp_path_factory.mktemp("tree") / "dcxsec"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".benchmarks", "*.so", "*.o", "run"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "-q",
                           "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("dcxsec-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_ships_py_typed(wheel):
    """PEP 561: type checkers trust dcxsec's hints only when the wheel says so."""
    assert (ROOT / "dcxsec" / "py.typed").is_file()
    assert "dcxsec/py.typed" in wheel.namelist()


def test_wheel_ships_no_c_sources(wheel):
    """The C lives in csrc/ and is compiled into the extension modules, which
    the wheel carries; no source file goes beside them."""
    names = wheel.namelist()
    assert not [name for name in names if name.endswith((".c", ".h"))]
    for module in ("_tls", "_keepgil", "_recvbuf"):
        assert any(name.startswith(f"dcxsec/{module}.") and name.endswith((".so", ".pyd"))
                   for name in names), module


def test_wheel_is_abi3_from_cpython_3_11(wheel):
    """The two CPython modules are on the limited API, as cffi's engine is: the
    wheel serves every CPython from 3.11 (setup.py), one per platform."""
    if sys.version_info < (3, 11):
        pytest.skip("3.9 and 3.10 build for their own version (no Py_buffer in their limited API)")
    if sys.platform == "win32":
        pytest.skip("abi3 modules on Windows are plain .pyd names (tests/test_windows_wheel.py)")
    assert "-cp311-abi3-" in Path(wheel.filename).name, wheel.filename
    modules = sorted(n for n in wheel.namelist() if n.startswith("dcxsec/_") and n.endswith(".so"))
    assert modules == ["dcxsec/_keepgil.abi3.so", "dcxsec/_recvbuf.abi3.so", "dcxsec/_tls.abi3.so"], modules


def test_library_logs_nothing_unless_the_application_configures_logging():
    """Without the NullHandler, logging's last resort would print dcxsec's warnings to stderr."""
    script = ("import logging, dcxsec; logging.getLogger('dcxsec').warning('dcxsec speaks');"
              "logging.getLogger('dcxsec.tlssocket').error('so does a child')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    shown = subprocess.run([sys.executable, "-c", "import logging; logging.basicConfig();" + script],
                           capture_output=True, text=True, timeout=60)
    assert "dcxsec speaks" in shown.stderr  # an application that configures logging sees it
