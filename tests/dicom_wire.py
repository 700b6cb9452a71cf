"""Hand-made DICOM upper-layer PDUs, for driving a peer byte by byte."""
from __future__ import annotations

import struct

VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _pdu(pdu_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(payload)) + payload


def _ae(title: str) -> bytes:
    return title.encode().ljust(16)


def associate_rq(called: str = "ANY-SCP", calling: str = "WIRE-SCU") -> bytes:
    """A-ASSOCIATE-RQ proposing Verification in Implicit VR Little Endian."""
    presentation = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION)
                         + _item(0x40, IMPLICIT_LE))
    user_info = _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    body = (struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
            + _item(0x10, APPLICATION_CONTEXT) + presentation + user_info)
    return _pdu(0x01, body)


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


def echo_rq(message_id: int = 1) -> bytes:
    """P-DATA-TF carrying a C-ECHO-RQ command on presentation context 1."""
    uid = VERIFICATION + b"\0" if len(VERIFICATION) % 2 else VERIFICATION
    rest = (_element(0, 0x0002, uid) + _element(0, 0x0100, struct.pack("<H", 0x0030))
            + _element(0, 0x0110, struct.pack("<H", message_id))
            + _element(0, 0x0800, struct.pack("<H", 0x0101)))
    command = _element(0, 0x0000, struct.pack("<I", len(rest))) + rest
    pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
    return _pdu(0x04, pdv)


def release_rq() -> bytes:
    return _pdu(0x05, bytes(4))


def read_pdu(sock) -> tuple[int, bytes]:
    """One PDU from a socket: (type, body)."""
    header = _read_exactly(sock, 6)
    pdu_type, _, length = struct.unpack(">BBI", header)
    return pdu_type, _read_exactly(sock, length)


def _read_exactly(sock, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)
