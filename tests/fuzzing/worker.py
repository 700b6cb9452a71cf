"""The dcxsec side of the fuzzer, in a process of its own so that a crash
is seen as one: it serves one connection per command and answers with what
became of it, one JSON line each.

    python worker.py '{"role": "server", "mode": "socket", "cert": ..., "key": ...,
                       "ca": ..., "timeout": 2.0}'

Commands on stdin, one JSON object a line: ``{"version": "1.2" | "1.3",
"port": P}`` (``port``: where a client connects; a server accepts on the
port it printed first).  In ``socket`` mode the conversation is the
fuzzer's: the client sends REQUEST, the server answers RESPONSE (what
``openssl s_server -rev`` answers), the client closes.  Every byte
received is compared with what was sent; a difference is reported as
``altered``.  In ``pynetdicom`` mode the worker is an SCP or SCU
(C-ECHO) over dcxsec, as users run it.
"""
from __future__ import annotations

import faulthandler
import json
import logging
import signal
import socket
import ssl
import sys
import time

import dcxsec
from dcxsec import SecurityConfig, TLSContext

REQUEST = bytes(ord("a") + (i * 7 + i // 26) % 26 for i in range(3000)) + b"\n"
RESPONSE = REQUEST[:-1][::-1] + b"\n"


def contexts(options: dict) -> dict[str, TLSContext]:
    """A context per protocol version, mutual TLS, no session cache (every
    conversation has the same shape)."""
    made = {}
    for name, version in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        made[name] = TLSContext(SecurityConfig(
            certificate=options["cert"], private_key=options["key"],
            trusted_certificates=[options["ca"]], use_system_trust=False,
            minimum_version=version, maximum_version=version, session_cache=False,
            handshake_timeout=options["timeout"]))
    return made


def read_checked(sock, expected: bytes, result: dict) -> bool:
    """Read ``expected`` from ``sock``; False at an early EOF or a difference."""
    got = 0
    while got < len(expected):
        piece = sock.recv(65536)
        if not piece:
            result["outcome"] = "eof"
            return False
        if piece != expected[got:got + len(piece)]:
            result["altered"] = True
            result["outcome"] = "altered"
            return False
        got += len(piece)
    return True


def outcome_of(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else "error"


def serve_socket(listener, ctxs, command, timeout) -> dict:
    raw, _ = listener.accept()
    result = {"started": time.monotonic()}
    sock = ctxs[command["version"]].wrap_socket(raw, server_side=True)
    sock.settimeout(timeout)
    try:
        sock.do_handshake()
        result["handshake"] = time.monotonic()
        if read_checked(sock, REQUEST, result):
            sock.sendall(RESPONSE)
            extra = sock.recv(65536)
            result["outcome"] = "completed" if not extra else "altered"
            result["altered"] = bool(extra)
    except OSError as exc:
        result.update(outcome=outcome_of(exc), error=f"{type(exc).__name__}: {exc}")
    finally:
        sock.close()
        result["closed"] = time.monotonic()
    return result


def connect_socket(ctxs, command, timeout) -> dict:
    sock = ctxs[command["version"]].wrap_socket(socket.socket())
    sock.settimeout(timeout)
    result = {"started": time.monotonic()}
    try:
        sock.connect(("127.0.0.1", command["port"]))
        result["handshake"] = time.monotonic()
        sock.sendall(REQUEST)
        if read_checked(sock, RESPONSE, result):
            result["outcome"] = "completed"
    except OSError as exc:
        result.update(outcome=outcome_of(exc), error=f"{type(exc).__name__}: {exc}")
    finally:
        sock.close()
        result["closed"] = time.monotonic()
    return result


class PynetdicomSCP:
    """An SCP on ``ae.start_server(..., ssl_context=ctx)``, one per version;
    a case's result is when its association's handshake ended, if it did."""

    def __init__(self, ctxs, options):
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification
        self.servers, self.ports = {}, {}
        self.handshakes: list[float] = []
        # The accepting side logs each handshake it finished (DEBUG): its time.
        logger = logging.getLogger("dcxsec")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(_Finished(self.handshakes))
        for version, ctx in ctxs.items():
            ae = AE("FUZZ-SCP")
            ae.add_supported_context(Verification)
            if options.get("acse_timeout"):  # lowered: the fuzzer waits for it after a handshake
                ae.acse_timeout = options["acse_timeout"]
            server = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=ctx)
            self.servers[version], self.ports[version] = server, server.server_address[1]


class _Finished(logging.Handler):
    def __init__(self, times: list[float]):
        super().__init__(logging.DEBUG)
        self.times = times

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.DEBUG and record.msg.startswith("TLS handshake with"):
            self.times.append(time.monotonic())


def associate(ctxs, command, timeout) -> dict:
    """C-ECHO as an SCU: ``ae.associate(..., tls_args=(ctx, None))``."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification
    ae = AE("FUZZ-SCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    result = {"started": time.monotonic()}
    assoc = ae.associate("127.0.0.1", command["port"], ae_title="FUZZ-SCP",
                         tls_args=(ctxs[command["version"]], None))
    sock = getattr(assoc.dul.socket, "socket", None) if assoc.dul.socket else None
    if assoc.is_established:
        result["handshake"] = time.monotonic()
        status = assoc.send_c_echo()
        result["outcome"] = "completed" if status and status.Status == 0 else "error"
        assoc.release()
    else:
        result["outcome"] = "error"
        if sock is not None and getattr(sock, "_connection", None) is not None:
            failure = sock._connection.failure
            result["error"] = f"{type(failure).__name__}: {failure}" if failure else "not established"
    result["closed"] = time.monotonic()
    return result


def main() -> None:
    options = json.loads(sys.argv[1])
    faulthandler.register(signal.SIGUSR1)  # the fuzzer asks for the threads' stacks of a hung end
    logging.basicConfig(stream=sys.stderr)
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    ctxs, timeout = contexts(options), options["timeout"]
    role, mode = options["role"], options["mode"]
    out = sys.stdout
    listener = scp = None
    if role == "server" and mode == "socket":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        ports = {"1.2": listener.getsockname()[1], "1.3": listener.getsockname()[1]}
    elif role == "server":
        scp = PynetdicomSCP(ctxs, options)
        ports = scp.ports
    else:
        ports = {}
    out.write(json.dumps({"ports": ports, "backend": dcxsec.backend()}) + "\n")
    out.flush()
    for line in sys.stdin:
        command = json.loads(line)
        if scp is not None:
            # The SCP serves by itself: report the handshakes its associations finished.
            result = {"handshakes": list(scp.handshakes)}
            scp.handshakes.clear()
        elif role == "server":
            result = serve_socket(listener, ctxs, command, timeout)
        elif mode == "socket":
            result = connect_socket(ctxs, command, timeout)
        else:
            result = associate(ctxs, command, timeout)
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
