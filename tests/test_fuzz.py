"""The mutation fuzzer (tests/fuzzing/), a short bounded run: a relay on
loopback alters one record of a recorded conversation, one byte or one
field, in either direction, between real peers (``openssl s_client`` /
``s_server`` and dcxsec itself, dcxsec in a process of its own), TLS 1.2
and 1.3, mutual TLS; and pynetdicom's SCU and SCP over dcxsec.

Every dcxsec end must survive, close its connection within its deadline
and never deliver altered plaintext.  The mutations are chosen by a fixed
seed, a fixed number per configuration; ``scripts/fuzz.sh`` runs longer.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import config_for, listener, needs_tools
from dcxsec import TLSContext
from dcxsec.errors import HandshakeTimeoutError
from fuzzing import Campaign, Config, summary
from fuzzing.__main__ import line

pytestmark = needs_tools("openssl", install="openssl")

SEED = 2026
CASES = 5  # per configuration: about 2 s each on 2 cores
TIMEOUT = 1.5  # handshake_timeout and socket timeout of the dcxsec ends


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    run = Campaign(tmp_path_factory.mktemp("fuzz"), timeout=TIMEOUT, acse_timeout=2 * TIMEOUT)
    yield run
    run.close()
    for log in run.folder.glob("worker-*.log"):  # the workers' own code raised nothing
        text = log.read_text(errors="replace")
        assert 'worker.py", line' not in text, f"{log.name}:\n{text[-3000:]}"


def test_the_recorded_conversation_is_what_the_mutations_aim_at(campaign):
    """The relay sees whole records each way and names them: the fuzzer
    alters what it says it alters."""
    records = campaign.record(Config("client", "1.2"))
    labels = [(r.direction, r.label) for r in records]
    for expected in [("to_server", "handshake:ClientHello"), ("to_client", "handshake:ServerHello"),
                     ("to_client", "handshake:Certificate"), ("to_server", "handshake:Certificate"),
                     ("to_server", "handshake:Finished (encrypted)"),
                     ("to_server", "application_data"), ("to_client", "application_data")]:
        assert expected in labels, labels


@pytest.mark.parametrize("config", [Config(role, version) for role in ("server", "client", "both")
                                    for version in ("1.2", "1.3")], ids=str)
def test_no_crash_no_hang_no_altered_record(campaign, config):
    verdicts = campaign.fuzz(config, CASES, SEED)
    assert len({v.mutation for v in verdicts}) == CASES
    failures = summary(verdicts)["failures"]
    assert not failures, "\n".join(line(v) for v in failures)
    # The alterations reached the wire and were noticed: not a run of no-ops.
    assert sum(v.applied for v in verdicts) >= len(verdicts) - 1
    assert any(v.outcome != "completed" for v in verdicts)


def test_altered_application_data_is_refused(campaign):
    """Every field and some bytes of the records that carry the payload,
    both ways, against dcxsec at both ends: each altered record is refused
    with an error, none is delivered."""
    config = Config("both", "1.3")
    records = [r for r in campaign.record(config) if r.label == "application_data"]
    assert {r.direction for r in records} == {"to_server", "to_client"}
    verdicts = []
    for mutation in campaign.application_data_mutations(records, SEED, per_record=3):
        found, _ = campaign.run(config, mutation)
        verdicts += found
    failures = summary(verdicts)["failures"]
    assert not failures, "\n".join(line(v) for v in failures)
    receivers = [v for v in verdicts if v.receives(v.mutation)]
    assert receivers and all(v.outcome in ("error", "timeout") for v in receivers), \
        "\n".join(line(v) for v in receivers)


@pytest.mark.parametrize("config", [Config(role, version, "pynetdicom")
                                    for role, version in (("both", "1.2"), ("both", "1.3"),
                                                          ("server", "1.2"), ("server", "1.3"))],
                         ids=str)
def test_pynetdicom_ends_keep_their_deadlines(campaign, config):
    """The server's and the client's handshake records altered on the way
    to pynetdicom's SCU (``ae.associate(..., tls_args=(ctx, None))``) and
    SCP (``ae.start_server(..., ssl_context=ctx)``)."""
    verdicts = campaign.fuzz(config, 3, SEED, only_handshake=True)
    failures = summary(verdicts)["failures"]
    assert not failures, "\n".join(line(v) for v in failures)


# ---- the deadline after a handshake that a read had to finish ---------------
# pynetdicom reads an accepted socket when select() says it is readable.  The
# bytes that woke it may be the handshake's last flight, which the engine's
# handshake thread was about to take: the read then finishes the handshake
# and, on a socket without a timeout, waited for data for ever.  A requestor
# that handshook and went silent kept its connection, and the association's
# two threads, past acse_timeout (Association.kill() waits for the reader).

QUIET_HANDSHAKE_TIMEOUT = 3.0


@pytest.fixture
def quick_server_ctx(pki):
    return TLSContext(config_for(pki.server, trusted=[pki.ca.cert_path],
                                 handshake_timeout=QUIET_HANDSHAKE_TIMEOUT))


def silent_client(client_ctx, address):
    """A requestor that finishes the handshake and then sends nothing."""
    sock = client_ctx.wrap_socket(socket.socket())
    sock.settimeout(10)
    sock.connect(address)
    return sock


def test_a_read_that_finished_the_handshake_waits_no_longer_than_its_deadline(
        quick_server_ctx, client_ctx, caplog):
    server_listener = listener()
    outcome = {}

    def serve():
        raw, _ = server_listener.accept()
        sock = quick_server_ctx.wrap_socket(raw, server_side=True)  # no timeout: pynetdicom's
        started = time.monotonic()
        try:
            outcome["data"] = sock.recv(6)  # as pynetdicom's reader, woken by the handshake
        except OSError as exc:
            outcome["error"] = exc
        outcome["waited"] = time.monotonic() - started
        sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = silent_client(client_ctx, server_listener.getsockname())
    thread.join(15)
    client.close()
    server_listener.close()
    assert isinstance(outcome.get("error"), HandshakeTimeoutError), outcome
    assert "finished the TLS handshake but sent nothing within 3 s" in str(outcome["error"])
    assert outcome["waited"] < QUIET_HANDSHAKE_TIMEOUT + 5  # not the client's 15 s
    assert any("finished the TLS handshake but sent nothing" in r.getMessage()
               for r in caplog.records if r.name == "dcxsec")


class TrickleRelay:
    """Passes the requestor's bytes one at a time, a millisecond apart, so
    that the SCP's reader sees the handshake's bytes readable before the
    handshake thread takes them; notes when the SCP closed."""

    def __init__(self, target):
        self.listener = listener()
        self.address = self.listener.getsockname()
        self.target = target
        self.scp_closed = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target)

        def upstream():
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        return
                    for i in range(len(data)):
                        server.sendall(data[i:i + 1])
                        time.sleep(0.001)
            except OSError:
                return

        threading.Thread(target=upstream, daemon=True).start()
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        self.scp_closed.set()
        client.close()
        server.close()


def test_pynetdicom_scp_ends_a_silent_requestor_after_its_handshake(
        quick_server_ctx, client_ctx, scp_factory, caplog):
    """Through ``ae.start_server(..., ssl_context=ctx)`` with pynetdicom's
    defaults (acse_timeout 30 s): each connection is closed within
    handshake_timeout of its handshake, not after 30 s or never."""
    scp = scp_factory(quick_server_ctx)
    clients = []
    try:
        for _ in range(2):
            relay = TrickleRelay(("127.0.0.1", scp.port))
            clients.append(silent_client(client_ctx, relay.address))
            started = time.monotonic()
            assert relay.scp_closed.wait(QUIET_HANDSHAKE_TIMEOUT + 9), \
                "the SCP kept a silent requestor's connection past its deadline"
            assert time.monotonic() - started < QUIET_HANDSHAKE_TIMEOUT + 9  # far below 30 s
    finally:
        for client in clients:
            client.close()
