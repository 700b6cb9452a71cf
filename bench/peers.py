"""pynetdicom on both ends: the benchmark's SCP and SCU, in this process or
each in a process of its own, as a modality and a PACS are deployed.

As a program, it is one of those processes, driven by one JSON line per
command on stdin and answering one JSON line on stdout:

    python peers.py scp KIND PKI_FOLDER DIRECTORY MAX_PDU MAX_ASSOCIATIONS
        first {"port": N} once listening; then "received" ->
        {"files": n, "sizes": [...], "protocol": "..."}, "clear" -> {},
        "quit" ends it.
    python peers.py scu KIND PKI_FOLDER
        first {}; then {"op": "associations", "port": P, "count": N} ->
        {"resumed": k}, {"op": "store", "port": P, "files": [...],
        "max_pdu": M} -> {}; "quit" ends it.

KIND is a contender of contenders.py.  The environment, DCXSEC_WITHOUT
included (dcxsec/_without.py), is the process's own, so each ablation
variant runs with its switches on both ends.  The variant without
"limited-api" has full_api.py's overlay first on PYTHONPATH instead: its
dcxsec has _recvbuf and _keepgil on the full API.  The first answer names the
files of those two modules, checked against the variant.
"""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import full_api  # noqa: E402
from contenders import LIMITED_API, pki_in, pynetdicom_contender  # noqa: E402
from dcxsec.requestor import steady  # noqa: E402


# ---- the SCP and the SCU ---------------------------------------------------------

class StoreSCP:
    """A pynetdicom Verification and CT Storage SCP that writes what it receives."""

    def __init__(self, ssl_context, directory: Path, max_pdu: int = 16382,
                 max_associations: int = 10) -> None:
        self.directory = directory
        self.dataset_sizes: list[int] = []  # bytes of each dataset as it arrived
        self.protocol = ""  # TLS version and suite of the last association, if any
        self.ae = AE("BENCH-SCP")
        self.ae.maximum_pdu_size = max_pdu
        self.ae.maximum_associations = max_associations
        self.ae.network_timeout = self.ae.dimse_timeout = self.ae.acse_timeout = 60
        self.ae.add_supported_context(Verification)
        self.ae.add_supported_context(CTImageStorage)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: 0x0000),
                    (evt.EVT_ESTABLISHED, self._on_established)]
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False,
                                           ssl_context=ssl_context, evt_handlers=handlers)
        self.port = self.server.server_address[1]

    def _on_store(self, event) -> int:
        path = self.directory / f"{event.request.AffectedSOPInstanceUID}.dcm"
        with path.open("wb") as f:
            f.write(event.encoded_dataset())  # a Part 10 file, as an archive keeps it
        self.dataset_sizes.append(event.request.DataSet.seek(0, io.SEEK_END))
        return 0x0000

    def _on_established(self, event) -> None:
        cipher = getattr(event.assoc.dul.socket.socket, "cipher", lambda: None)()
        if cipher:
            self.protocol = f"{cipher[1]} {cipher[0]}"

    def clear(self) -> None:
        self.dataset_sizes.clear()
        for path in self.directory.iterdir():
            path.unlink()

    def received(self) -> tuple[int, list[int]]:
        """(files on disk, sorted sizes of the datasets received)."""
        return len(list(self.directory.iterdir())), sorted(self.dataset_sizes)

    def stop(self) -> None:
        self.server.shutdown()


def requestor(max_pdu: int = 16382) -> AE:
    """A pynetdicom SCU proposing Verification and CT Image Storage as stored."""
    ae = AE("BENCH-SCU")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # nothing is transcoded
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.connection_timeout = 10
    return ae


def echo_association(ae: AE, port: int, tls_args) -> bool:
    """Associate, C-ECHO, release; whether the TLS session was resumed."""
    assoc = ae.associate("127.0.0.1", port, tls_args=tls_args)
    assert assoc.is_established
    resumed = bool(getattr(assoc.dul.socket.socket, "session_reused", False))
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    return resumed


def store_all(tls_args, port: int, files, max_pdu: int) -> None:
    """Every file by path in one association (steady: see bench/README.md)."""
    assoc = steady(requestor(max_pdu).associate("127.0.0.1", port, tls_args=tls_args))
    assert assoc.is_established
    try:
        for path in files:
            assert assoc.send_c_store(path).Status == 0x0000
    finally:
        assoc.release()


# ---- the same, each in a process of its own --------------------------------------

def peer_env(without: str | None) -> dict[str, str]:
    """The environment of a peer process: DCXSEC_WITHOUT as given (None: as
    here), but "limited-api" puts the full API's build first on PYTHONPATH."""
    env = dict(os.environ)
    if without is not None:
        names = [name for name in without.split(",") if name]
        if LIMITED_API in names:
            names.remove(LIMITED_API)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(full_api.overlay()), *filter(None, [env.get("PYTHONPATH")])])
        env["DCXSEC_WITHOUT"] = ",".join(names)
    return env


class Peer:
    """A peers.py (or ``script``) process, driven over its stdin and stdout."""

    def __init__(self, args: list[str], without: str | None, script: str = "peers.py") -> None:
        self._log = tempfile.TemporaryFile("w+")  # its stderr, shown if it fails
        self.name = f"{script} {' '.join(args[:2])}, DCXSEC_WITHOUT={without!r}"
        self.proc = subprocess.Popen([sys.executable, str(HERE / script), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=peer_env(without))
        self.first = self._answer()
        if "modules" in self.first:
            full_api.check(self.first["modules"], LIMITED_API in (without or "").split(","))

    def _answer(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        answer = json.loads(line) if line else None
        if answer is None or "error" in answer:
            self._log.seek(0)
            raise RuntimeError(f"peers.py {self.name} failed: "
                               f"{answer['error'] if answer else 'it ended'}\n{self._log.read()[-4000:]}")
        return answer

    def call(self, command: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('"quit"\n')
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class RemoteSCP(Peer):
    """StoreSCP in a process of its own, with StoreSCP's face."""

    def __init__(self, kind: str, pki_folder: Path, directory: Path, max_pdu: int = 16382,
                 max_associations: int = 10, without: str | None = None) -> None:
        self.directory = directory
        super().__init__(["scp", kind, str(pki_folder), str(directory), str(max_pdu),
                          str(max_associations)], without)
        self.port = self.first["port"]

    def received(self) -> tuple[int, list[int]]:
        answer = self.call("received")
        return answer["files"], answer["sizes"]

    @property
    def dataset_sizes(self) -> list[int]:
        return self.received()[1]

    @property
    def protocol(self) -> str:
        return self.call("received")["protocol"]

    def clear(self) -> None:
        self.call("clear")


class RemoteSCU(Peer):
    """A requestor in a process of its own."""

    def __init__(self, kind: str, pki_folder: Path, without: str | None = None) -> None:
        super().__init__(["scu", kind, str(pki_folder)], without)

    def associations(self, port: int, count: int) -> int:
        """``count`` associations (associate, C-ECHO, release); how many resumed."""
        return self.call({"op": "associations", "port": port, "count": count})["resumed"]

    def store(self, port: int, files: list[Path], max_pdu: int) -> None:
        self.call({"op": "store", "port": port, "files": [str(p) for p in files],
                   "max_pdu": max_pdu})


# ---- as a program ------------------------------------------------------------------

def _say(answer: dict[str, Any]) -> None:
    print(json.dumps(answer), flush=True)


def _serve(handle) -> None:
    for line in sys.stdin:
        command = json.loads(line) if line.strip() else "quit"
        if command == "quit":
            return
        try:
            answer = handle(command)
        except Exception:  # noqa: BLE001 - the driver raises it
            answer = {"error": traceback.format_exc()}
        _say(answer)


def scp_main(kind: str, folder: str, directory: str, max_pdu: str, max_associations: str) -> None:
    contender = pynetdicom_contender(kind, pki_in(Path(folder)))
    scp = StoreSCP(contender.server_context, Path(directory), int(max_pdu), int(max_associations))
    _say({"port": scp.port, "modules": full_api.loaded()})

    def handle(command: str) -> dict[str, Any]:
        if command == "received":
            files, sizes = scp.received()
            return {"files": files, "sizes": sizes, "protocol": scp.protocol}
        if command == "clear":
            scp.clear()
            return {}
        raise ValueError(f"unknown command {command!r}")

    try:
        _serve(handle)
    finally:
        scp.stop()


def scu_main(kind: str, folder: str) -> None:
    contender = pynetdicom_contender(kind, pki_in(Path(folder)))
    echo_ae = requestor()
    _say({"modules": full_api.loaded()})

    def handle(command: dict[str, Any]) -> dict[str, Any]:
        if command["op"] == "associations":
            return {"resumed": sum(echo_association(echo_ae, command["port"], contender.tls_args)
                                   for _ in range(command["count"]))}
        if command["op"] == "store":
            store_all(contender.tls_args, command["port"], command["files"], command["max_pdu"])
            return {}
        raise ValueError(f"unknown command {command!r}")

    _serve(handle)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)  # pynetdicom's aborts and timeouts, to stderr
    role, *arguments = sys.argv[1:]
    {"scp": scp_main, "scu": scu_main}[role](*arguments)
