"""DICOM files to send: found in files and folders, and the presentation
contexts they need, as stored (a compressed object is offered compressed)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

MAX_CONTEXTS = 128  # an A-ASSOCIATE-RQ carries at most 128 presentation contexts
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: a file-set's index, not an object
META_START = 144  # the preamble, "DICM" and (0002,0000), which says how long the rest of group 2 is
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class DicomFile:
    """A Part 10 file: where it is, what it holds, and how it is encoded."""

    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    size: int
    as_stored: bool = False  # its encoded dataset can go on the wire byte for byte
    damage: str = ""  # why it must not be sent at all (a file cut short)

    @property
    def compressed(self) -> bool:
        return UID(self.transfer_syntax).is_compressed


def walk(paths: Iterable[Path], recursive: bool) -> Iterator[Path]:
    """Files given, and the files of folders given (their subfolders with ``recursive``)."""
    for path in paths:
        if path.is_dir():
            children = sorted(path.rglob("*") if recursive else path.iterdir())
            yield from (child for child in children if child.is_file())
        else:
            yield path


def read_header(path: Path) -> DicomFile:
    """The file's identity, or ValueError saying why it cannot be sent."""
    try:
        with warnings.catch_warnings(record=True) as remarks:  # quirks pydicom reads past
            warnings.simplefilter("always")
            ds = dcmread(path, stop_before_pixels=True,
                         specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (InvalidDicomError, EOFError) as exc:
        raise ValueError(f"not a DICOM Part 10 file ({exc})") from None
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror}") from None
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    sop_class, instance = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
    if not syntax:
        raise ValueError("no transfer syntax in its file meta information")
    if not sop_class or not instance:
        raise ValueError("its dataset has no SOP Class UID or SOP Instance UID")
    if str(sop_class) == MEDIA_STORAGE_DIRECTORY:
        raise ValueError("a DICOMDIR (a file-set's index), not an object to store")
    # Sent as stored only when the file meta names the same object and pydicom
    # read it without a remark (implicit VR where explicit was announced, ...):
    # a quirky file goes decoded and encoded again, in its transfer syntax.
    as_stored = (not remarks and meta.get("MediaStorageSOPClassUID") == sop_class
                 and meta.get("MediaStorageSOPInstanceUID") == instance)
    size = path.stat().st_size
    damage = "" if remarks else truncation(path, meta, UID(syntax), size)
    return DicomFile(path, str(sop_class), str(instance), str(syntax), size, as_stored, damage)


def truncation(path: Path, meta, syntax: UID, size: int) -> str:
    """Why the dataset of a file is cut short, or "" when its last element
    ends where the file does.  Walks the elements' headers, skipping values."""
    group_length = meta.get("FileMetaInformationGroupLength")
    if group_length is None or syntax.is_deflated:
        return ""  # where the dataset starts, or its layout, is unknown without more work
    end = META_START + group_length
    try:
        with open(path, "rb") as fp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp.seek(end)
            for element in data_element_generator(fp, syntax.is_implicit_VR,
                                                  syntax.is_little_endian, defer_size=1024):
                skipped = element.value is None and element.length != UNDEFINED_LENGTH
                end = element.value_tell + element.length if skipped else fp.tell()
    except EOFError:
        return "truncated: the file ends inside an element of undefined length"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if end > size:
        return f"truncated: its last element ends at byte {end:,}, the file at byte {size:,}"
    return ""


def contexts_for(files: Iterable[DicomFile], decompress: bool) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs to propose: each file's as stored, and
    with ``decompress`` an uncompressed one for each compressed file's class."""
    wanted = set()
    for f in files:
        wanted.add((f.sop_class, f.transfer_syntax))
        if decompress and f.compressed:
            wanted.add((f.sop_class, ExplicitVRLittleEndian))
            wanted.add((f.sop_class, ImplicitVRLittleEndian))
    return wanted


def batches(files: list[DicomFile], decompress: bool) -> list[list[DicomFile]]:
    """The files in groups whose contexts fit one association (128 at most)."""
    groups: list[tuple[set, list[DicomFile]]] = []
    for f in sorted(files, key=lambda f: (f.sop_class, f.transfer_syntax)):
        need = contexts_for([f], decompress)
        for contexts, members in groups:
            if len(contexts | need) <= MAX_CONTEXTS:
                contexts |= need
                members.append(f)
                break
        else:
            groups.append((set(need), [f]))
    return [members for _, members in groups]
