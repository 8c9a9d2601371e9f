"""Raw peers for tests: a file's bytes sent unchanged with pynetdicom, and the agent's processes measured.

DCMTK refuses to send a broken file, and pynetdicom would decode and re-encode a dataset; ``send_raw`` sends
the bytes after the File Meta Information exactly as they are in the file, in the file's transfer syntax.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom

from support.agentproc import REPO

SEND_RAW = """
import sys
from pynetdicom import AE, _config
_config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are, without decoding them
ae = AE(ae_title="RAWSCU")
ae.add_requested_context(sys.argv[3], sys.argv[4])
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="LIVERAGENT")
assert assoc.is_established
status = assoc.send_c_store(sys.argv[2])
assoc.release()
print(f"0x{status.Status:04X}")
"""


def send_raw(port: int, path: Path, sop_class: str | None = None, transfer_syntax: str | None = None) -> str:
    """Send ``path`` with pynetdicom as the peer; returns the C-STORE status as ``0xNNNN``."""
    if sop_class is None or transfer_syntax is None:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sop_class = sop_class or ds.file_meta.MediaStorageSOPClassUID
        transfer_syntax = transfer_syntax or ds.file_meta.TransferSyntaxUID
    proc = subprocess.run(
        [sys.executable, "-c", SEND_RAW, str(port), str(path), str(sop_class), str(transfer_syntax)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (the serve process and its receiver processes)."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in map(int, children):
        out += process_tree(child)
    return out


def status_field(pid: int, name: str) -> int:
    """A numeric field of /proc/PID/status (kB for memory fields); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
