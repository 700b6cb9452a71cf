"""A fuzzing campaign: record each configuration's conversation once,
choose mutations from it with a seed, run every case, judge each dcxsec
end, and sum the verdicts up.

A configuration is dcxsec's role against a peer at one protocol version:
dcxsec as server against ``openssl s_client``, dcxsec as client against
``openssl s_server``, and dcxsec against itself (both ends judged); in
``pynetdicom`` mode the dcxsec ends are pynetdicom's SCP and SCU.

Each dcxsec end of a case is judged:

- ``crash``: its process died;
- ``hang``: it had not closed its connection when the fuzzer gave up;
- ``late``: it closed after its deadline: ``handshake_timeout`` from the
  TCP connection while its handshake had not finished, else the socket's
  timeout from the later of the handshake's end and the last byte it got
  before it last sent (a peer's answer to its closing alert does not count);
- ``altered``: it delivered plaintext that was not what the peer sent;
- ``not_refused``: an altered application-data record came its way and
  its conversation still ended as if nothing had happened;
- otherwise its own outcome: ``completed``, ``error``, ``timeout`` or ``eof``.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .peers import Identities, OpenSSLPeer, Worker
from .records import Mutation, Record, candidates, choose, is_handshake, label_records
from .relay import Relay
from .worker import REQUEST, RESPONSE

FAILURES = ("crash", "hang", "late", "altered", "not_refused")
GRACE = 1.5  # seconds beyond a deadline before a close counts as late (a loaded machine)


@dataclass(frozen=True)
class Config:
    role: str  # dcxsec's role: "server", "client", or "both" (dcxsec against itself)
    version: str  # "1.2" or "1.3"
    mode: str = "socket"  # or "pynetdicom"

    def __str__(self) -> str:
        peer = {"server": "dcxsec server / openssl s_client", "client":
                "dcxsec client / openssl s_server", "both": "dcxsec server / dcxsec client"}
        return f"{peer[self.role]}, TLS {self.version}" + (
            ", pynetdicom" if self.mode == "pynetdicom" else "")

    @property
    def dcxsec_ends(self) -> tuple[str, ...]:
        return {"server": ("server",), "client": ("client",), "both": ("server", "client")}[self.role]


@dataclass
class Verdict:
    config: Config
    mutation: Mutation | None
    end: str  # the dcxsec end judged: "server" or "client"
    outcome: str
    elapsed: float | None = None  # time to close, against the deadline that applied
    limit: float | None = None
    error: str = ""
    applied: bool = True  # the altered record reached the wire (the conversation got that far)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILURES

    def receives(self, mutation: Mutation | None) -> bool:
        """Whether the altered record was on its way to this end."""
        return mutation is not None and mutation.direction == (
            "to_server" if self.end == "server" else "to_client")


@dataclass
class Campaign:
    """Workers, identities and timeouts shared by the cases of one run."""

    folder: Path
    timeout: float = 2.0  # handshake_timeout and socket timeout of the dcxsec ends
    cap: float = 0.0  # how long a case may run before its ends count as hung
    acse_timeout: float | None = None  # the pynetdicom SCP's; None: pynetdicom's own (30 s)
    verdicts: list[Verdict] = field(default_factory=list)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ids = Identities.make(self.folder)
        self.cap = self.cap or max(20.0, 4 * self.timeout)
        self.workers: dict[tuple[str, str], Worker] = {}

    def worker(self, role: str, mode: str) -> Worker:
        key = (role, mode)
        w = self.workers.get(key)
        if w is None or not w.alive():
            if w is not None:
                w.stop()
                self.restarts += 1
            w = self.workers[key] = Worker(role, mode, self.ids, self.timeout,
                                           self.folder / f"worker-{role}-{mode}.log",
                                           acse_timeout=self.acse_timeout)
        return w

    def close(self) -> None:
        for w in self.workers.values():
            w.stop()

    # ---- one case ------------------------------------------------------

    def run(self, config: Config, mutation: Mutation | None) -> tuple[list[Verdict], Relay]:
        """One conversation through the relay with ``mutation`` applied."""
        v, mode = config.version, config.mode
        peer: OpenSSLPeer | None = None
        answers: dict[str, dict | None] = {}
        if config.role == "client":
            peer = OpenSSLPeer("server", self.ids, v)
            relay = Relay(("127.0.0.1", peer.port), mutation)
        else:
            server = self.worker("server", mode)
            if mode == "socket":
                server.send(version=v)
            relay = Relay(("127.0.0.1", server.ports[v]), mutation)
        if config.role == "server":
            # Against a pynetdicom SCP, s_client only handshakes: it speaks no DICOM.
            peer = OpenSSLPeer("client", self.ids, v, relay.address[1], send=mode == "socket")
        else:
            self.worker("client", mode).send(version=v, port=relay.address[1])
        try:
            if config.role != "client" and mode == "socket":
                answers["server"] = self._answer("server", mode)
            if config.role != "server":
                answers["client"] = self._answer("client", mode)
            for end in config.dcxsec_ends:
                if relay.wait_closed(end, self.cap) is None:
                    self._hung(end, mode, config, mutation)
            if mode == "pynetdicom":
                answers["server"] = self._scp_report(relay)
            verdicts = [self.judge(config, mutation, end, answers.get(end), relay)
                        for end in config.dcxsec_ends]
            for verdict in verdicts:
                verdict.applied = mutation is None or relay.mutated_at is not None
            return verdicts, relay
        finally:
            if peer is not None:
                peer.stop()
            relay.stop()

    def _hung(self, end: str, mode: str, config: Config, mutation: Mutation | None) -> None:
        """Its threads' stacks into its log, and a fresh worker for the next case."""
        w = self.workers[(end, mode)]
        with open(w.log, "a") as log:
            log.write(f"\n=== {end} end hung: {config}; "
                      f"{mutation.describe() if mutation else 'no alteration'}\n")
        w.dump_stacks()
        if w.alive():
            w.proc.kill()

    def _answer(self, end: str, mode: str) -> dict | None:
        w = self.workers[(end, mode)]
        answer = w.answer(self.cap)
        if answer is None and w.alive():
            w.dump_stacks()
            w.proc.kill()  # hung for good: a fresh worker serves the next case
            w.stop()
            answer = {"hung": True}
        elif answer is None:
            answer = {"crashed": w.exit_status()}
        return answer

    def _scp_report(self, relay: Relay) -> dict:
        w = self.workers[("server", "pynetdicom")]
        if not w.alive():
            return {"crashed": w.exit_status()}
        w.send(report=True)
        answer = w.answer(10) or {}
        started = relay.started.get("server", 0)
        done = [t for t in answer.get("handshakes", []) if t >= started]
        return {"handshake": done[0]} if done else {}

    def judge(self, config: Config, mutation: Mutation | None, end: str, answer: dict | None,
              relay: Relay) -> Verdict:
        """The verdict on one dcxsec end of a case (see the module's docstring)."""
        verdict = Verdict(config, mutation, end, "hang")
        answer = answer or {}
        if "crashed" in answer:
            verdict.outcome, verdict.error = "crash", answer["crashed"]
            return verdict
        verdict.error = answer.get("error", "")
        closed = relay.closed.get(end)
        started = relay.started.get(end)
        if answer.get("hung") or closed is None or started is None:
            verdict.elapsed = time.monotonic() - started if started else None
            return verdict
        handshake = answer.get("handshake")
        if handshake is None:
            verdict.elapsed, verdict.limit = closed - started, self.timeout
        else:
            since = max(handshake, relay.last_input(end) or handshake)
            # After the handshake an SCP waits for the A-ASSOCIATE-RQ as long as pynetdicom says.
            limit = (self.acse_timeout or 30.0) if config.mode == "pynetdicom" and end == "server" \
                else self.timeout
            verdict.elapsed, verdict.limit = max(0.0, closed - since), limit
        outcome = answer.get("outcome", "error" if handshake is None else "completed")
        toward_us = verdict.receives(mutation)
        if answer.get("altered"):
            outcome = "altered"
        elif verdict.elapsed > verdict.limit + GRACE:
            outcome = "late"
        elif (toward_us and mutation.label == "application_data" and mutation.kind != "drop"
              and outcome == "completed"):
            outcome = "not_refused"
        verdict.outcome = outcome
        return verdict

    # ---- a configuration -------------------------------------------------

    def record(self, config: Config) -> list[Record]:
        """The conversation of ``config`` without alteration, labelled; it must complete."""
        verdicts, relay = self.run(config, None)
        if config.mode == "pynetdicom" and config.role == "server":
            # s_client speaks no DICOM: the handshake is all there is to alter.
            labels = {(r.direction, r.index): r.label for r in self.record(Config("server", config.version))}
            return [Record(r.direction, r.index, r.header, r.body,
                           labels.get((r.direction, r.index), "application_data (DICOM)"))
                    for r in relay.records if is_handshake(labels.get((r.direction, r.index), ""))]
        bad = [v for v in verdicts if v.outcome != "completed"]
        if bad:
            raise RuntimeError(f"{config}: the unaltered conversation did not complete: "
                               f"{bad[0].outcome} {bad[0].error}")
        records = list(relay.records)
        if config.mode == "pynetdicom":
            # The same handshake as dcxsec against itself on sockets: its labels.
            labels = {(r.direction, r.index): r.label
                      for r in self.record(Config("both", config.version)) if is_handshake(r.label)}
            for r in records:
                r.label = labels.get((r.direction, r.index), "application_data (DICOM)")
            return records
        for direction in ("to_server", "to_client"):
            label_records([r for r in records if r.direction == direction],
                          {len(REQUEST), len(RESPONSE)})
        return records

    def fuzz(self, config: Config, count: int, seed: int, only_handshake: bool = False,
             progress=None) -> list[Verdict]:
        """``count`` cases of ``config``, mutations chosen by ``seed``."""
        records = self.record(config)
        rng = random.Random(f"{seed}/{config}")
        out = []
        for mutation in choose(records, count, rng, only_handshake):
            verdicts, _ = self.run(config, mutation)
            out += verdicts
            if progress:
                for v in verdicts:
                    progress(v)
        self.verdicts += out
        return out


    @staticmethod
    def application_data_mutations(records: list[Record], seed: int,
                                   per_record: int = 3) -> list[Mutation]:
        """Every header field of each record and ``per_record`` of its body
        bytes: alterations, not losses (no drops)."""
        rng = random.Random(seed)
        out = []
        for rec in records:
            found = [m for m in candidates(rec, rng) if m.kind != "drop"]
            fields = [m for m in found if m.kind != "byte"]
            body = [m for m in found if m.kind == "byte"]
            out += fields + rng.sample(body, min(per_record, len(body)))
        return out


def summary(verdicts: list[Verdict]) -> dict:
    """Counts per outcome, failures, and the worst time to close."""
    timed = [v for v in verdicts if v.elapsed is not None]
    worst = max(timed, key=lambda v: v.elapsed - (v.limit or 0), default=None)
    return {
        "cases": len({(v.config, v.mutation) for v in verdicts}),
        "ends": len(verdicts),
        "outcomes": Counter(v.outcome for v in verdicts),
        "failures": [v for v in verdicts if v.failed],
        "worst": worst,
    }
