"""The head of a DICOM file (PS3.10 7.1) for a dataset received as bytes:
the preamble, "DICM" and the File Meta Information group, the same bytes
pynetdicom's ``Event.encoded_dataset()`` writes, without building them
through pydicom for every object (a tenth of a storage SCP's Python time)."""
from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

PREAMBLE = b"\x00" * 128 + b"DICM"
_SHORT = struct.Struct("<HH2sH")  # explicit VR little endian, 2-byte length
_LONG = struct.Struct("<HH2sHI")  # explicit VR little endian, OB/UN/...: 4-byte length
MAX_UID = 64


def _short(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return _SHORT.pack(0x0002, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    encoded = str(value).encode("ascii")
    if not encoded or len(encoded) > MAX_UID:
        raise ValueError(f"{value!r} is not a UID")
    return encoded


_VERSION = _LONG.pack(0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"  # File Meta Information Version
_IMPLEMENTATION = (_short(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID), b"\x00")
                   + _short(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "))


def file_head(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and file meta group for an object of ``sop_class``
    and ``sop_instance`` encoded in ``transfer_syntax``; ValueError for a UID
    that cannot be one (not ASCII, empty or too long)."""
    body = b"".join((
        _VERSION,
        _short(0x0002, b"UI", _uid(sop_class), b"\x00"),
        _short(0x0003, b"UI", _uid(sop_instance), b"\x00"),
        _short(0x0010, b"UI", _uid(transfer_syntax), b"\x00"),
        _IMPLEMENTATION,
    ))
    group_length = _SHORT.pack(0x0002, 0x0000, b"UL", 4) + struct.pack("<I", len(body))
    return PREAMBLE + group_length + body
