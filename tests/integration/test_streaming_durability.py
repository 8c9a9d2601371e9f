"""Streaming and durability of the listener: a 200 MB instance with flat memory; index rebuilt after a crash.

The agent buffers at most ``SPILL_BYTES`` of an instance; beyond that the fragments go to a file in the
spool's ``.incoming/`` as they arrive and the file is renamed into place once complete, indexed and fsynced.
Its peak resident set (VmHWM) may not grow by more than a small fraction of the instance size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameGrayscaleWordSecondaryCaptureImageStorage
from support.dicomgen import dataset_bytes, save, uid

pytestmark = pytest.mark.integration

FRAMES = 400  # 400 frames of 512x512x16 bits: 200 MiB of pixel data
GROWTH_LIMIT_MB = 25


def vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def large_instance(path: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid("large", "sop")
    ds.StudyInstanceUID = uid("large", "study")
    ds.SeriesInstanceUID = uid("large", "series")
    ds.PatientID = "PIDLARGE"
    ds.PatientName = "Large^Instance"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = FRAMES
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    frame = bytes(range(256)) * (512 * 512 * 2 // 256)
    ds.PixelData = frame * FRAMES
    return save(ds, path, ExplicitVRLittleEndian)


def test_a_200_mb_instance_is_streamed_with_flat_memory(make_agent, tmp_path: Path) -> None:
    agent = make_agent().start()
    source = large_instance(tmp_path / "large.dcm")
    assert agent.echo().returncode == 0
    assert agent.proc is not None
    before = vmhwm_mb(agent.proc.pid)
    result = agent.store(source, extra=("--max-pdu", "131072"))
    assert result.returncode == 0, result.stderr
    growth = vmhwm_mb(agent.proc.pid) - before
    stored = agent.spool / uid("large", "study") / uid("large", "series") / f"{uid('large', 'sop')}.dcm"
    assert hashlib.sha256(dataset_bytes(stored)).digest() == hashlib.sha256(dataset_bytes(source)).digest()
    assert agent.scalar("SELECT count(*) FROM instances") == 1
    assert agent.scalar("SELECT size FROM instances") == stored.stat().st_size
    assert list((agent.spool / ".incoming").iterdir()) == []
    assert growth < GROWTH_LIMIT_MB, f"peak RSS grew by {growth:.1f} MB for a 200 MB instance"
    assert agent.stop() == 0


def test_rows_lost_with_the_last_commits_are_indexed_again_at_start(make_agent, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text
    from support.dicomgen import make_study

    agent = make_agent().start()
    study = make_study(tmp_path / "study", key="reindex", ct_instances=3)
    assert agent.store(*study.files).returncode == 0
    assert agent.stop() == 0
    marker = agent.spool / ".clean-stop"
    assert marker.exists()
    rows = sorted(agent.query("SELECT sop_uid, path FROM instances"))
    # What a power loss may do to the last synchronous=NORMAL commits, and to the clean-stop marker.
    engine = create_engine(f"sqlite:///{agent.db_path}")
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM instances WHERE id IN (SELECT id FROM instances ORDER BY id DESC LIMIT 2)")
        )
    engine.dispose()
    marker.unlink()
    agent.start()
    assert sorted(agent.query("SELECT sop_uid, path FROM instances")) == rows
    assert agent.events("spool.reconciled")[-1]["indexed"] == 2
    assert agent.stop() == 0
    agent.start()  # a clean stop: no walk, nothing changes
    assert len(agent.events("spool.reconciled")) == 1
    assert sorted(agent.query("SELECT sop_uid, path FROM instances")) == rows
    assert agent.stop() == 0
