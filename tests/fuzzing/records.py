"""TLS records as the relay sees them, what each one carries, and the
mutations of one byte or one field that the fuzzer applies to them.

Nothing here decrypts: a record is labelled from its header, from the
handshake messages of a plaintext handshake record, and from the length of
the conversation's payload, which is chosen so that no handshake message
has it.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

CCS, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
HANDSHAKE_NAMES = {
    0: "HelloRequest", 1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket",
    8: "EncryptedExtensions", 11: "Certificate", 12: "ServerKeyExchange",
    13: "CertificateRequest", 14: "ServerHelloDone", 15: "CertificateVerify",
    16: "ClientKeyExchange", 20: "Finished", 24: "KeyUpdate",
}
# Sealing overhead of one record: TLS 1.3 (type byte + tag), TLS 1.2 GCM
# (explicit nonce + tag), TLS 1.2 ChaCha20-Poly1305 (tag).
SEAL_OVERHEADS = (17, 24, 16)
DIRECTIONS = ("to_server", "to_client")


@dataclass
class Record:
    """One record of the conversation, as it crossed the relay."""

    direction: str
    index: int  # its place among the records going the same way
    header: bytes
    body: bytes
    label: str = ""

    @property
    def content_type(self) -> int:
        return self.header[0]

    @property
    def wire(self) -> bytes:
        return self.header + self.body


def split_records(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Whole records at the front of ``buffer`` (removed from it)."""
    out = []
    while len(buffer) >= 5:
        length = struct.unpack(">H", buffer[3:5])[0]
        if len(buffer) < 5 + length:
            break
        out.append((bytes(buffer[:5]), bytes(buffer[5:5 + length])))
        del buffer[:5 + length]
    return out


def handshake_messages(body: bytes) -> list[tuple[int, int]]:
    """(type, offset) of each handshake message in a plaintext record."""
    found, offset = [], 0
    while offset + 4 <= len(body):
        kind = body[offset]
        length = int.from_bytes(body[offset + 1:offset + 4], "big")
        found.append((kind, offset))
        offset += 4 + length
    return found


def label_records(records: list[Record], payload_lengths: set[int]) -> None:
    """Name what each record of one direction carries, in order."""
    sealed_payload = {n + extra for n in payload_lengths for extra in SEAL_OVERHEADS}
    encrypted, in_data = False, False
    for rec in records:
        kind, size = rec.content_type, len(rec.body)
        if kind == CCS:
            encrypted, rec.label = True, "ChangeCipherSpec"
        elif kind == ALERT:
            rec.label = "alert"
        elif kind == HANDSHAKE and encrypted:
            rec.label = "handshake:Finished (encrypted)"
        elif kind == HANDSHAKE:
            names = [HANDSHAKE_NAMES.get(t, f"type{t}") for t, _ in handshake_messages(rec.body)]
            rec.label = "handshake:" + "+".join(names)
        elif kind == APPLICATION_DATA and size in sealed_payload:
            in_data, rec.label = True, "application_data"
        elif kind == APPLICATION_DATA:
            # TLS 1.3 seals its handshake in application_data records; after the
            # payload these are the closing alerts.
            rec.label = "closing (encrypted)" if in_data else "handshake (encrypted)"
        else:
            rec.label = f"type{kind}"


@dataclass(frozen=True)
class Mutation:
    """One alteration of one record: ``kind`` at ``offset`` with ``value``.

    Kinds: ``type`` (the record's content type := value), ``version`` (the
    record version's byte ``offset`` ^= value), ``length`` (the length field
    := value), ``hs_type`` / ``hs_length`` (the first handshake message's
    type := value, length := value), ``byte`` (the body's byte ``offset`` ^=
    value), ``drop`` (the record never arrives).
    """

    direction: str
    index: int
    kind: str
    offset: int = 0
    value: int = 0
    label: str = ""

    def describe(self) -> str:
        where = f"{self.direction} record {self.index} ({self.label})"
        if self.kind == "drop":
            return f"{where}: dropped"
        if self.kind == "byte":
            return f"{where}: body byte {self.offset} ^= 0x{self.value:02x}"
        if self.kind == "version":
            return f"{where}: version byte {self.offset} ^= 0x{self.value:02x}"
        return f"{where}: {self.kind} := {self.value}"

    def apply(self, header: bytes, body: bytes) -> bytes:
        """The record as the receiver gets it (b"" when dropped)."""
        head, data = bytearray(header), bytearray(body)
        if self.kind == "drop":
            return b""
        if self.kind == "type":
            head[0] = self.value
        elif self.kind == "version":
            head[self.offset] ^= self.value
        elif self.kind == "length":
            head[3:5] = struct.pack(">H", self.value)
        elif self.kind == "hs_type":
            data[0] = self.value
        elif self.kind == "hs_length":
            data[1:4] = self.value.to_bytes(3, "big")
        elif self.kind == "byte":  # a record may be a byte shorter than the recorded one
            data[min(self.offset, len(data) - 1)] ^= self.value
        return bytes(head + data)


def candidates(rec: Record, rng: random.Random) -> list[Mutation]:
    """Mutations of one record, every field, a few body bytes chosen by ``rng``."""
    size = len(rec.body)

    def m(kind: str, offset: int = 0, value: int = 0) -> Mutation:
        return Mutation(rec.direction, rec.index, kind, offset, value, rec.label)

    out = [m("drop")]
    out += [m("type", value=v) for v in (CCS, ALERT, HANDSHAKE, APPLICATION_DATA, 0, 0xFF)
            if v != rec.content_type]
    out += [m("version", 1, 0x01), m("version", 2, 0x01), m("version", 2, 0x04)]
    out += [m("length", value=v) for v in {size + 1, max(size - 1, 0), 0, 16384 + 2049, 0xFFFF}
            if v != size]
    if rec.content_type == HANDSHAKE and not rec.label.endswith("(encrypted)") and size >= 4:
        out += [m("hs_type", value=v) for v in (0, 2, 11, 20, 0xFF) if v != rec.body[0]]
        declared = int.from_bytes(rec.body[1:4], "big")
        out += [m("hs_length", value=v) for v in {declared + 1, max(declared - 1, 0), 0xFFFFFF}
                if v != declared]
    if size:
        # As fractions of the size, so a record a byte longer or shorter than
        # the recorded one (an ECDSA signature) leaves the choice the same.
        offsets = [0, size - 1, size // 2, *(int(rng.random() * size) for _ in range(6))]
        out += [m("byte", offset=o, value=rng.choice((0x01, 0x80, 0xFF))) for o in offsets]
    return out


@dataclass
class Plan:
    """The mutations chosen for one configuration, from its recorded conversation."""

    records: list[Record]
    mutations: list[Mutation] = field(default_factory=list)


def choose(records: list[Record], count: int, rng: random.Random,
           only_handshake: bool = False) -> list[Mutation]:
    """``count`` mutations spread over both directions and over the records:
    each pick takes a direction in turn, then a record, then one of its mutations."""
    by_direction = {d: [r for r in records if r.direction == d and r.body
                        and (not only_handshake or is_handshake(r.label))]
                    for d in DIRECTIONS}
    chosen: list[Mutation] = []
    seen = set()
    for attempt in range(count * 20):
        if len(chosen) == count:
            break
        pool = by_direction[DIRECTIONS[attempt % 2]] or by_direction[DIRECTIONS[1 - attempt % 2]]
        if not pool:
            break
        pick = rng.choice(candidates(rng.choice(pool), rng))
        if pick not in seen:
            seen.add(pick)
            chosen.append(pick)
    return chosen


def is_handshake(label: str) -> bool:
    return label.startswith(("handshake", "ChangeCipherSpec"))
