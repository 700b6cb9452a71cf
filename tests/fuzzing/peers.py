"""The processes of a fuzzing run: dcxsec workers (worker.py) that live
through many cases, and ``openssl s_client`` / ``s_server``, one per case.
"""
from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dcxsec import pki

from .worker import REQUEST

WORKER = Path(__file__).with_name("worker.py")
TESTS = WORKER.parent.parent


@dataclass(frozen=True)
class Identities:
    """A test CA and the two ends' certificates, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, folder: Path) -> "Identities":
        ca = pki.new_ca("dcxsec Fuzz CA")
        server = pki.issue(ca, "fuzz-server", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        client = pki.issue(ca, "fuzz-client")
        ca_cert, _ = ca.write(folder, "ca")
        return cls(ca_cert, *server.write(folder, "server"), *client.write(folder, "client"))


class Worker:
    """A dcxsec worker process; ``run`` sends one command and waits for its answer."""

    def __init__(self, role: str, mode: str, ids: Identities, timeout: float, log: Path,
                 env: dict | None = None, acse_timeout: float | None = None):
        cert, key = ((ids.server_cert, ids.server_key) if role == "server"
                     else (ids.client_cert, ids.client_key))
        options = {"role": role, "mode": mode, "cert": str(cert), "key": str(key),
                   "ca": str(ids.ca), "timeout": timeout,
                   "acse_timeout": acse_timeout}
        self.role, self.mode, self.log = role, mode, log
        self.stderr = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(options)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, cwd=TESTS, env=env)
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        hello = self.answers.get(timeout=60)
        if hello is None:
            raise RuntimeError(f"the {role} worker did not start: see {log}")
        self.ports = hello["ports"]
        self.backend = hello["backend"]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.answers.put(json.loads(line))
        self.answers.put(None)  # the process ended

    def send(self, **command) -> None:
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict | None:
        """The next answer; None when the worker died or did not answer in time."""
        try:
            return self.answers.get(timeout=timeout)
        except queue.Empty:
            return None

    def dump_stacks(self) -> None:
        """Every thread's stack into the worker's log (a hung end)."""
        if self.alive():
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def exit_status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with {code}"

    def stop(self) -> None:
        if self.alive():
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


VERSION_FLAG = {"1.2": "-tls1_2", "1.3": "-tls1_3"}


class OpenSSLPeer:
    """``openssl s_server -rev`` (answers REQUEST with RESPONSE) or
    ``openssl s_client`` (sends REQUEST unless told not to, closes once the
    answer is in), mutual TLS in both cases."""

    def __init__(self, kind: str, ids: Identities, version: str, port: int | None = None,
                 send: bool = True):
        common = ["-CAfile", str(ids.ca), "-verify_return_error", VERSION_FLAG[version]]
        if kind == "server":
            self.port = free_port()
            args = ["s_server", "-accept", f"127.0.0.1:{self.port}", "-naccept", "1", "-rev",
                    "-cert", str(ids.server_cert), "-key", str(ids.server_key),
                    "-Verify", "1", *common]
        else:
            args = ["s_client", "-connect", f"127.0.0.1:{port}", "-nocommands",
                    "-cert", str(ids.client_cert), "-key", str(ids.client_key), "-verify", "1",
                    *common]
        self.kind = kind
        self.proc = subprocess.Popen(["openssl", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = bytearray()
        self.listening = threading.Event()
        self.answered = threading.Event()
        threading.Thread(target=self._collect, daemon=True).start()
        if kind == "client" and send:
            try:
                self.proc.stdin.write(REQUEST)
                self.proc.stdin.flush()
            except OSError:
                pass  # s_client already gave up (the relay's alteration): the case says how
        elif kind == "server" and not self.listening.wait(10):
            raise RuntimeError(f"openssl s_server did not start: {bytes(self.output)!r}")

    def _collect(self) -> None:
        tail = REQUEST[-40:-1][::-1]  # the end of the answer, as s_client prints it
        while True:
            try:
                chunk = self.proc.stdout.read1(65536)
            except (OSError, ValueError):  # stopped: the pipe is closed
                return
            if not chunk:
                return
            self.output += chunk
            if b"ACCEPT" in self.output:
                self.listening.set()
            if self.kind == "client" and tail in self.output and not self.answered.is_set():
                self.answered.set()
                try:  # end of input: s_client sends close_notify and exits
                    self.proc.stdin.close()
                except OSError:
                    pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def openssl_version() -> str:
    found = subprocess.run(["openssl", "version"], capture_output=True, text=True, timeout=30)
    return found.stdout.strip()


def wait_until(predicate, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


__all__ = ["Identities", "Worker", "OpenSSLPeer", "openssl_version", "wait_until"]
