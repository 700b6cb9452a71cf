"""The main job: a mutually authenticated DICOM TLS C-STORE on this machine.

A throwaway CA issues one certificate to an SCP and one to an SCU; the SCP
(pynetdicom on dcxsec, TRUST_CHAIN, client certificate required) receives
CT-sized objects from the SCU (the same), and every file is checked.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from dcxsec import SecurityConfig, TLSContext, VerificationMethod, backend, pki


def _ct_object(size: int, index: int):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "DEMO^TLS", "DCXSEC-DEMO", "CT"
    ds.InstanceNumber = index + 1
    side = int((size // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = hashlib.shake_256(ds.SOPInstanceUID.encode()).digest(side * side * 2)
    return ds


def run(count: int = 20, size: int = 512 * 1024, port: int = 0) -> int:
    """Send ``count`` objects of about ``size`` bytes; returns 0 when all arrived intact."""
    with tempfile.TemporaryDirectory(prefix="dcxsec-demo-") as tmp:
        folder = Path(tmp)
        ca = pki.new_ca("dcxsec demo CA")
        trust = [ca.cert_pem()]
        identities = {}
        for role in ("scp", "scu"):
            cert, key = pki.issue(ca, f"DEMO-{role.upper()}").write(folder, role)
            identities[role] = TLSContext(SecurityConfig(
                certificate=cert, private_key=key, trusted_certificates=trust,
                verification_method=VerificationMethod.TRUST_CHAIN))
        received: dict[str, str] = {}
        peers: list[str] = []

        def on_store(event):
            peers.append(event.assoc.dul.socket.socket.peer_thumbprint)
            received[event.request.AffectedSOPInstanceUID] = hashlib.sha256(
                event.dataset.PixelData).hexdigest()
            return 0x0000

        scp_ae = AE("DEMO-SCP")
        scp_ae.add_supported_context(CTImageStorage)
        server = scp_ae.start_server(("127.0.0.1", port), block=False,
                                     ssl_context=identities["scp"],
                                     evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            datasets = [_ct_object(size, i) for i in range(count)]
            scu_ae = AE("DEMO-SCU")
            scu_ae.add_requested_context(CTImageStorage)
            started = time.perf_counter()
            assoc = scu_ae.associate("127.0.0.1", server.server_address[1], ae_title="DEMO-SCP",
                                     tls_args=(identities["scu"], None))
            if not assoc.is_established:
                print("association failed")
                return 1
            sock = assoc.dul.socket.socket
            print(f"engine: {backend()}")
            print(f"association: {sock.version()} {sock.cipher()[0]}, SCP certificate "
                  f"{sock.peer_thumbprint}")
            statuses = [assoc.send_c_store(ds).Status for ds in datasets]
            assoc.release()
            elapsed = time.perf_counter() - started
        finally:
            server.shutdown()
        sent = {ds.SOPInstanceUID: hashlib.sha256(ds.PixelData).hexdigest() for ds in datasets}
        ok = statuses == [0] * count and received == sent
        megabytes = sum(len(ds.PixelData) for ds in datasets) / 1e6
        print(f"C-STORE: {count} objects, {megabytes:.1f} MB in {elapsed:.2f} s "
              f"({megabytes / elapsed:.1f} MB/s), mutual TLS with TRUST_CHAIN")
        print(f"SCU certificate seen by the SCP: {peers[0] if peers else None}")
        print("all objects arrived intact" if ok else "MISMATCH: objects lost or altered")
        return 0 if ok else 1
