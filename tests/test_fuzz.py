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

import pytest

from conftest import needs_tools
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
