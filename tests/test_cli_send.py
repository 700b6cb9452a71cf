"""``dcxsec send``, run as an operator runs it, into real SCPs: a pynetdicom
SCP on dcxsec in this process, and DCMTK's storescp +tls."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from conftest import free_port, needs_tools
from test_cli_echo import dcxsec_cli, tls
from test_dcmtk import storescp_factory  # noqa: F401 - a fixture
from test_pynetdicom import dataset_bytes

UNCOMPRESSED = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm"]
COMPRESSED = ["SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm"]  # RLE, JPEG, J2K


class StoreSCP:
    """Every storage SOP class; compressed transfer syntaxes only if asked.
    A C-STORE of ``refuse`` (an SOP Instance UID) is answered 0xA700."""

    def __init__(self, ssl_context, directory: Path, compressed: bool = True,
                 refuse: str | None = None) -> None:
        self.directory, self.refuse = directory, refuse
        self.attempts: dict[str, int] = {}
        ae = AE("STORE-SCP")
        ae.add_supported_context(Verification)
        for context in StoragePresentationContexts:
            if compressed:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
            else:
                ae.add_supported_context(context.abstract_syntax)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      ssl_context=ssl_context,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        self.attempts[uid] = self.attempts.get(uid, 0) + 1
        if uid == self.refuse:
            return 0xA700
        (self.directory / f"{uid}.dcm").write_bytes(event.encoded_dataset())
        return 0x0000

    def datasets(self) -> list[bytes]:
        return sorted(dataset_bytes(p) for p in self.directory.iterdir())


@pytest.fixture
def store_scp(tmp_path, server_ctx):
    scps: list[StoreSCP] = []

    def make(**kw) -> StoreSCP:
        folder = tmp_path / f"received{len(scps)}"
        folder.mkdir()
        scps.append(StoreSCP(kw.pop("ssl_context", server_ctx), folder, **kw))
        return scps[-1]

    yield make
    for scp in scps:
        scp.server.shutdown()


@pytest.fixture
def study(tmp_path, dicom_file) -> Path:
    """A folder with a subfolder: generated CT objects and pydicom's own test
    files, uncompressed and compressed, and a file that is not DICOM."""
    root = tmp_path / "study"
    (root / "series2").mkdir(parents=True)
    for i, size in enumerate((64 * 1024, 512 * 1024, 3 * 1024 * 1024)):
        dicom_file(size, root / f"ct{i}.dcm")
    for name in UNCOMPRESSED + COMPRESSED:
        shutil.copy(get_testdata_file(name), root / "series2" / name)
    (root / "README.txt").write_text("not DICOM")
    return root


def sent_datasets(folder: Path) -> list[bytes]:
    return sorted(dataset_bytes(p) for p in folder.rglob("*.dcm"))


def test_send_a_folder_recursively_arrives_byte_identical(pki, store_scp, study):
    scp = store_scp()
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(study), "-r", "--json",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["stored"] == 10 and result["failed"] == 0 and result["skipped"] == 1
    assert result["skipped_files"][0]["path"].endswith("README.txt")
    assert scp.datasets() == sent_datasets(study)  # compressed ones as stored


def test_send_with_several_associations(pki, store_scp, study):
    scp = store_scp()
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(study), "-r",
                      "--associations", "3", *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    assert "10 of 10 objects stored" in done.stdout
    assert scp.datasets() == sent_datasets(study)


def test_without_a_subfolder_flag_only_the_folder_itself(pki, store_scp, study):
    scp = store_scp()
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(study), "--json",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 3


def test_compressed_refused_as_stored_fails_with_a_hint_and_is_listed(pki, store_scp, study,
                                                                      tmp_path):
    scp = store_scp(compressed=False)
    failed_list = tmp_path / "failed.txt"
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(study / "series2"),
                      "--failed-list", str(failed_list), *tls(pki.client, pki.ca))
    assert done.returncode == 1
    assert "--decompress converts it" in done.stderr, done.stderr
    listed = sorted(Path(line).name for line in failed_list.read_text().splitlines())
    assert listed == sorted(COMPRESSED)
    assert len(scp.datasets()) == len(UNCOMPRESSED)


def test_decompress_converts_what_the_peer_takes_only_uncompressed(pki, store_scp, tmp_path):
    import numpy  # noqa: F401 - pydicom decompresses with it (the test extra installs it)
    scp = store_scp(compressed=False)
    source = tmp_path / "rle.dcm"
    shutil.copy(get_testdata_file("SC_rgb_rle.dcm"), source)
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(source), "--decompress",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    assert len(scp.datasets()) == 1


def test_refused_status_exits_1_and_retry_sends_again(pki, store_scp, dicom_file, tmp_path):
    from pydicom import dcmread

    files = [dicom_file(32 * 1024, tmp_path / f"o{i}.dcm") for i in range(3)]
    refused = str(dcmread(files[1]).SOPInstanceUID)
    scp = store_scp(refuse=refused)
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), *map(str, files), "--retry", "2",
                      "--json", *tls(pki.client, pki.ca))
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["stored"] == 2 and result["failed"] == 1
    assert "0xA700" in result["failures"][0]["reason"]
    assert scp.attempts[refused] == 3  # the first try and two retries


def test_an_untrusted_server_sends_nothing_and_says_why(pki, store_scp, study):
    scp = store_scp()
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(study), "-r",
                      *tls(pki.client, pki.other_ca))
    assert done.returncode == 1
    assert "0 of 10 objects stored" in done.stdout
    assert "is not trusted" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert scp.datasets() == []


@needs_tools("storescp", install="dcmtk")
def test_send_into_dcmtk_storescp_tls(pki, storescp_factory, study):  # noqa: F811
    port, out = storescp_factory(pki.server)  # it takes uncompressed objects only
    uncompressed = [study / "series2" / name for name in UNCOMPRESSED]
    done = dcxsec_cli("send", "127.0.0.1", str(port), str(study), *map(str, uncompressed),
                      "--json", *tls(pki.client, pki.ca), timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 3 + len(UNCOMPRESSED)
    received = [p for p in Path(out).rglob("*") if p.is_file()]
    # storescp drops group length elements as it writes: the generated objects
    # (which have none) must be byte-identical, the others all there.
    generated = sorted(dataset_bytes(p) for p in study.glob("*.dcm"))
    assert set(generated) <= {dataset_bytes(p) for p in received}
    assert {instance_uid(p) for p in received} == {instance_uid(p) for p in
                                                   [*study.glob("*.dcm"), *uncompressed]}


def instance_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_files_go_as_stored_unless_their_meta_or_encoding_disagrees(pki, store_scp, dicom_file,
                                                                    tmp_path):
    """A file goes on the wire as stored; one whose file meta names another
    instance, or whose encoding pydicom remarks on, is decoded and sent as
    its dataset says.  Every one arrives, byte-identical."""
    from pydicom import dcmread

    from dcxsec.dicomfiles import read_header

    folder = tmp_path / "mixed"
    folder.mkdir()
    clean = dicom_file(64 * 1024, folder / "clean.dcm")
    other = dicom_file(64 * 1024, folder / "other.dcm")
    ds = dcmread(other)
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"  # not the dataset's instance
    ds.save_as(other)  # as given: enforce_file_format would set the meta right
    quirky = folder / "rtplan.dcm"  # pydicom remarks on its encoding as it reads it
    shutil.copy(get_testdata_file("rtplan.dcm"), quirky)
    assert [read_header(p).as_stored for p in (clean, other, quirky)] == [True, False, False]
    scp = store_scp()
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(folder), "--json",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 3
    assert set(scp.attempts) == {instance_uid(p) for p in (clean, other, quirky)}
    assert scp.datasets() == sent_datasets(folder)


def test_a_file_cut_short_is_not_sent_and_fails(pki, store_scp, dicom_file, tmp_path):
    """A file whose last element runs past its end (native pixel data, or
    encapsulated fragments without their delimiter) fails without being
    sent; the others go."""
    folder = tmp_path / "cut"
    folder.mkdir()
    whole = dicom_file(64 * 1024, folder / "whole.dcm")
    native = folder / "native.dcm"
    native.write_bytes(dicom_file(64 * 1024, tmp_path / "source.dcm").read_bytes()[:-1000])
    encapsulated = folder / "jpeg.dcm"
    encapsulated.write_bytes(Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).read_bytes()[:-500])
    scp = store_scp()
    done = dcxsec_cli("send", "127.0.0.1", str(scp.port), str(folder), "--json",
                      *tls(pki.client, pki.ca))
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["stored"] == 1 and result["failed"] == 2
    reasons = {Path(f["path"]).name: f["reason"] for f in result["failures"]}
    assert reasons["native.dcm"].startswith("truncated: its last element ends at byte")
    assert reasons["jpeg.dcm"].startswith("truncated: the file ends inside")
    assert set(scp.attempts) == {instance_uid(whole)}
