#!/usr/bin/env bash
# Sets up dcxsec and runs the main job as an operator would, with the command
# line alone, in throwaway certificate stores: a test CA, a PACS and a
# modality identity, `dcxsec receive` in the background, `dcxsec echo`, then
# `dcxsec send` of a folder of real DICOM files (pydicom's test files and
# generated CT objects), and a check that every file arrived byte-identical.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PATH="$PWD/.venv/bin:$PATH"
PY=.venv/bin/python

WORK=$(mktemp -d)
RECEIVER=""
cleanup() {
    [ -n "$RECEIVER" ] && kill "$RECEIVER" 2>/dev/null && wait "$RECEIVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=${DEMO_PORT:-$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
thumbprint() {  # the SHA-1 thumbprint of the certificate with this subject in My
    dcxsec cert list My --json --store current-user |
        $PY -c 'import json, sys; print(next(c["thumbprint_sha1"] for c in json.load(sys.stdin)["certificates"] if c["subject"] == sys.argv[1]))' "$1"
}

echo "== the PACS's store: a test CA, and the PACS's identity issued by it"
export DCXSEC_CURRENT_USER_STORE="$WORK/pacs-store"
dcxsec cert new "Demo Hospital CA" --ca --store current-user
CA=$(thumbprint "CN=Demo Hospital CA")
dcxsec cert new PACS --issuer "$CA" --dns localhost --ip 127.0.0.1 --store current-user
PACS=$(thumbprint "CN=PACS")
echo "== the modality's identity, issued by the same CA and carried over as PKCS#12"
dcxsec cert new CT01 --issuer "$CA" --store current-user
CT01=$(thumbprint "CN=CT01")
dcxsec cert export "$CT01" "$WORK/ct01.p12" --key --password demo --store current-user
dcxsec cert export "$CA" "$WORK/ca.pem" --store current-user
dcxsec cert remove "$CT01" --store current-user
export DCXSEC_CURRENT_USER_STORE="$WORK/ct01-store"
dcxsec cert import "$WORK/ct01.p12" --password demo --store current-user
dcxsec cert trust "$WORK/ca.pem" --store current-user
dcxsec cert list --store current-user

echo "== the PACS receives on port $PORT"
DCXSEC_CURRENT_USER_STORE="$WORK/pacs-store" dcxsec receive "$PORT" --out "$WORK/archive" \
    --aet PACS --identity "$PACS" --store current-user &
RECEIVER=$!
for _ in $(seq 50); do  # until it answers
    DCXSEC_CURRENT_USER_STORE="$WORK/ct01-store" dcxsec echo 127.0.0.1 "$PORT" --aec PACS \
        --store current-user --json >/dev/null 2>&1 && break
    sleep 0.2
done

echo "== a folder of real DICOM files: pydicom's test files and generated CT objects"
$PY - "$WORK/study" "${DEMO_COUNT:-20}" <<'EOF'
import shutil, sys
from pathlib import Path
from pydicom import dcmread
from pydicom.data import get_testdata_file
sys.path.insert(0, "tests")
from pki_fixtures import make_ct_dataset

study, count = Path(sys.argv[1]), int(sys.argv[2])
(study / "series1").mkdir(parents=True)
(study / "series2").mkdir()
seen = set()
for name in ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm",
             "waveform_ecg.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm"]:
    uid = dcmread(get_testdata_file(name), stop_before_pixels=True).SOPInstanceUID
    if uid not in seen:  # one file per object: the archive keeps one per SOP Instance UID
        seen.add(uid)
        shutil.copy(get_testdata_file(name), study / "series1" / name)
for i in range(count):
    make_ct_dataset(512 * 1024).save_as(study / "series2" / f"ct{i:03d}.dcm", enforce_file_format=True)
print(f"{len(seen) + count} files in {study}")
EOF

echo "== the modality checks the PACS, then sends the folder"
dcxsec echo 127.0.0.1 "$PORT" --aec PACS --store current-user
dcxsec send 127.0.0.1 "$PORT" "$WORK/study" -r --aec PACS --aet CT01 --associations 2 \
    --store current-user

echo "== every file arrived byte-identical"
kill -TERM "$RECEIVER"
wait "$RECEIVER"
RECEIVER=""
$PY - "$WORK/study" "$WORK/archive" <<'EOF'
import struct, sys
from pathlib import Path

def dataset(path):
    data = path.read_bytes()
    (group_length,) = struct.unpack_from("<I", data, 140)
    return data[144 + group_length:]

sent = sorted(dataset(p) for p in Path(sys.argv[1]).rglob("*.dcm"))
received = sorted(dataset(p) for p in Path(sys.argv[2]).rglob("*.dcm"))
if sent != received:
    sys.exit(f"MISMATCH: {len(sent)} sent, {len(received)} received, "
             f"{len(set(sent) ^ set(received))} differ")
print(f"all {len(sent)} objects arrived intact")
EOF
