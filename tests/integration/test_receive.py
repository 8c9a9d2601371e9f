"""The receiving service against DCMTK: every instance arrives byte-identical, is indexed once, and the
study turns stable with exactly one job.

"Byte-identical" means: the dataset part of the spooled file (everything after its File Meta Information)
equals the dataset part of the file storescu sent. storescu sends a file's dataset unchanged when the
negotiated transfer syntax is the file's own, which our SCP accepts for every generated file (Explicit VR
Little Endian and RLE Lossless), except that it re-encodes undefined-length sequences with explicit lengths,
which is why the generated SR uses defined lengths. The File Meta Information is written by the receiver, as
PS3.10 requires.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pydicom
import pytest
from support.agentproc import dcmtk
from support.dicomgen import dataset_bytes, make_study

pytestmark = pytest.mark.integration


def spooled(agent, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return agent.spool / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def assert_received(agent, study) -> None:
    for path in study.files:
        target = spooled(agent, path)
        assert target.exists(), f"{path.name} not in the spool"
        assert dataset_bytes(target) == dataset_bytes(path), f"{path.name} differs"
        meta = pydicom.dcmread(target, stop_before_pixels=True).file_meta
        sent = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == sent.TransferSyntaxUID
        assert meta.MediaStorageSOPInstanceUID == sent.MediaStorageSOPInstanceUID
    n = len(study.files)
    assert agent.scalar("SELECT count(*) FROM instances") == n
    assert agent.scalar("SELECT count(DISTINCT sop_uid) FROM instances") == n
    assert agent.scalar("SELECT count(*) FROM series") == 3
    assert agent.query("SELECT study_uid FROM studies") == [(study.study_uid,)]
    assert agent.scalar("SELECT count(*) FROM patients") == 1
    # No temporary files are left in the spool.
    assert sorted(p.suffix for p in agent.spool.rglob("*") if p.is_file()) == [".dcm"] * n


def assert_stable_with_one_job(agent, study) -> None:
    assert agent.wait_state(study.study_uid, "stable"), agent.all_logs()[-3000:]
    jobs = agent.query(
        "SELECT j.kind, j.state FROM jobs j JOIN studies s ON s.id = j.study_pk WHERE s.study_uid = :u",
        u=study.study_uid,
    )
    assert jobs == [("process_study", "pending")]


def test_echo_and_one_association(make_agent, tmp_path: Path) -> None:
    agent = make_agent().start()
    study = make_study(tmp_path / "study")
    assert agent.echo().returncode == 0
    result = agent.store(*study.files)
    assert result.returncode == 0, result.stderr
    assert_received(agent, study)
    assert len(agent.events("scp.stored")) == len(study.files)
    assert len([e for e in agent.events("scp.association.accepted") if e["calling_aet"] == "STORESCU"]) == 1
    assert_stable_with_one_job(agent, study)
    stable = agent.events("study.stable")
    assert len(stable) == 1 and stable[0]["forced"] is False
    assert agent.stop() == 0


def test_several_associations_and_a_repeated_study(make_agent, tmp_path: Path) -> None:
    agent = make_agent().start()
    study = make_study(tmp_path / "study", key="multi")
    # One association per series, concurrently.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda files: agent.store(*files), study.series.values()))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    # The whole study again, one association per instance: each copy replaces the earlier one.
    for path in study.files:
        assert agent.store(path).returncode == 0
    assert_received(agent, study)
    assert sum(1 for e in agent.events("scp.stored") if e["replaced"]) == len(study.files)
    assert_stable_with_one_job(agent, study)
    assert agent.stop() == 0


def test_an_instance_for_a_stable_study_reopens_it(make_agent, tmp_path: Path) -> None:
    agent = make_agent().start()
    study = make_study(tmp_path / "study", key="reopen")
    first, *rest = study.files
    assert agent.store(*rest).returncode == 0
    assert agent.wait_state(study.study_uid, "stable")
    assert agent.store(first).returncode == 0
    assert agent.scalar("SELECT state FROM studies") in ("receiving", "stable")
    assert agent.events("study.reopened")
    assert_stable_with_one_job(agent, study)  # the pending job was kept, not duplicated
    assert len(agent.events("study.stable")) == 2
    assert agent.stop() == 0


def test_deflated_transfer_is_stored_as_received(make_agent, tmp_path: Path) -> None:
    agent = make_agent().start()
    study = make_study(tmp_path / "study", key="deflate", ct_instances=1)
    sr = study.files[-1]
    result = agent.store(sr, extra=("--propose-deflated",))
    assert result.returncode == 0, result.stderr
    target = spooled(agent, sr)
    meta = pydicom.dcmread(target, stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    # Stored deflated as it came; inflating gives the sent dataset back.
    import zlib

    assert zlib.decompress(dataset_bytes(target), -15) == dataset_bytes(sr)
    assert pydicom.dcmread(target).SOPInstanceUID == pydicom.dcmread(sr).SOPInstanceUID
    assert dcmtk("dcmdump", "-q", target).returncode == 0
    agent.stop()
