"""pytest plugin: one test PKI per session, and DICOM files of any size."""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dcxsec import pki as certs


@dataclass(frozen=True)
class Issued:
    """An identity and where it was written."""

    identity: certs.Identity
    cert_path: Path
    key_path: Path

    @property
    def thumbprint(self) -> str:
        return self.identity.thumbprint("sha1")

    @property
    def thumbprint256(self) -> str:
        return self.identity.thumbprint("sha256")


@dataclass(frozen=True)
class TestPKI:
    ca: Issued
    server: Issued
    client: Issued
    server_rsa: Issued
    intermediate: Issued
    leaf_via_intermediate: Issued
    other_ca: Issued
    untrusted: Issued
    expired: Issued
    not_yet_valid: Issued
    self_signed: Issued


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> TestPKI:
    folder = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.timezone.utc)

    def keep(name: str, identity: certs.Identity) -> Issued:
        return Issued(identity, *identity.write(folder, name))

    ca = certs.new_ca("dcxsec Test CA")
    intermediate = certs.new_ca("dcxsec Test Intermediate", issuer=ca)
    other_ca = certs.new_ca("Somebody Else's CA")
    server_names = {"dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"]}
    return TestPKI(
        ca=keep("ca", ca),
        server=keep("server", certs.issue(ca, "dcxsec-scp", **server_names)),
        client=keep("client", certs.issue(ca, "dcxsec-scu")),
        server_rsa=keep("server_rsa", certs.issue(ca, "dcxsec-scp-rsa", key_kind="rsa2048", **server_names)),
        intermediate=keep("intermediate", intermediate),
        leaf_via_intermediate=keep("leaf_via_intermediate",
                                   certs.issue(intermediate, "dcxsec-chained", **server_names)),
        other_ca=keep("other_ca", other_ca),
        untrusted=keep("untrusted", certs.issue(other_ca, "dcxsec-untrusted", **server_names)),
        expired=keep("expired", certs.issue(ca, "dcxsec-expired", not_before=now - dt.timedelta(days=400),
                                          not_after=now - dt.timedelta(days=30), **server_names)),
        not_yet_valid=keep("not_yet_valid", certs.issue(ca, "dcxsec-future",
                                                      not_before=now + dt.timedelta(days=30),
                                                      not_after=now + dt.timedelta(days=400),
                                                      **server_names)),
        self_signed=keep("self_signed", certs.self_signed("dcxsec-pinned", **server_names)),
    )


def make_ct_dataset(size_bytes: int) -> Dataset:
    """A CT Image Storage dataset of about ``size_bytes``, with deterministic pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^TLS", "DCXSEC", "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    columns = 512
    rows = max(1, (size_bytes - 1024) // (2 * columns))
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = hashlib.shake_256(ds.SOPInstanceUID.encode()).digest(rows * columns * 2)
    return ds


@pytest.fixture
def dicom_file(tmp_path):
    """make(size_bytes, path=None) -> Path of a CT file of about that size."""
    counter = iter(range(1 << 30))

    def make(size_bytes: int, path: Path | None = None) -> Path:
        path = path or tmp_path / f"ct{next(counter)}.dcm"
        make_ct_dataset(size_bytes).save_as(path, enforce_file_format=True)
        return path

    return make
