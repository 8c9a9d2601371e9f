"""The service's worker and ``liver-agent sr assess`` give the same response SR for the same inputs.

Both call ``agent.pipeline.assemble``. For each case the worker runs on a spool holding the patient's CT
images and measurement SRs (indexed by the spool reconciliation, no PACS), and the command runs on the same
SR files with ``--images`` for the CT headers. The two SRs must be equal byte for byte once the UIDs we
generate and the creation date/time are blanked (the writer's clock is fixed here, so they match anyway).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select
from support.worklist import migrated_sessions

from agent import cli
from agent.config import Settings
from agent.db.models import OutputVersion, Study
from agent.dicom.reconcile import reconcile
from agent.dicom.spool import Spool
from agent.pipeline.stability import mark_stable
from agent.pipeline.worker import Deps, Worker
from agent.sr import write
from tests.unit.sr.srgen import LesionSpec, ct_image, uid, write_study_sr

ROOT = Settings().uids.org_root
CLOCK = datetime(2025, 6, 1, 8, 30, 0)
TIMES = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime"}


@dataclass
class Case:
    patient: str
    # (name, date, lesions or None for a study with images only)
    studies: list[tuple[str, date, list[LesionSpec] | None]]
    worker_rules: list[dict[str, Any]] = field(default_factory=list)
    command_options: list[str] = field(default_factory=list)


def L(ident: str, long_mm: float, hu: float | None = None, **kw: Any) -> LesionSpec:
    return LesionSpec(ident, uid(ident), long_mm=long_mm, mean_hu=hu, **kw)


CASES = {
    "two_studies_recist": Case(
        "SAME1",
        [
            ("bl", date(2024, 1, 10), [L("liver seg 7", 40), L("liver seg 4", 30)]),
            ("fu", date(2024, 3, 20), [L("liver seg 7", 25), L("liver seg 4", 20)]),
        ],
    ),
    "three_studies_gist_recist_and_choi": Case(
        "SAME2",
        [
            ("bl", date(2023, 11, 2), [L("seg 2", 52, 60), L("seg 6", 31, 55)]),
            ("fu1", date(2024, 1, 15), [L("seg 2", 50, 35), L("seg 6", 30, 30)]),
            ("fu2", date(2024, 4, 1), [L("seg 2", 64, 38), L("seg 6", 33, 31)]),
        ],
        worker_rules=[{"match": {"patient_id": "^SAME2$"}, "primary": "GIST", "therapy": ["imatinib"]}],
        command_options=["--primary", "GIST", "--therapy", "imatinib", "--criteria", "RECIST1.1,Choi"],
    ),
    "new_lesion_at_follow_up": Case(
        "SAME3",
        [
            ("bl", date(2024, 2, 1), [L("liver seg 8", 35)]),
            ("fu", date(2024, 5, 2), [L("liver seg 8", 36), L("liver seg 3", 14)]),
        ],
    ),
    "pre_read_of_a_follow_up_without_its_sr": Case(
        "SAME4",
        [
            ("bl", date(2024, 1, 5), [L("liver seg 5", 44), L("liver seg 6", 21)]),
            ("fu1", date(2024, 3, 5), [L("liver seg 5", 30), L("liver seg 6", 15)]),
            ("fu2", date(2024, 5, 5), None),
        ],
    ),
}


def blank(ds: Dataset) -> bytes:
    """The SR's bytes with our generated UIDs and the creation date/time blanked."""

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.keyword in TIMES:
                elem.value = ""
            elif elem.VR == "UI" and isinstance(elem.value, str) and elem.value.startswith(ROOT):
                elem.value = "1.2.3"

    walk(ds)
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_inputs(case: Case, directory: Path, spool: Spool) -> tuple[list[Path], list[Path], str]:
    """CT image and SR per study (in ``directory`` and in the spool); returns SR paths, CT paths, the newest
    study's UID."""
    srs, cts = [], []
    for name, day, lesions in case.studies:
        study = f"{case.patient}-{name}"
        ct = ct_image(case.patient, study, day)
        ct.BodyPartExamined = "ABDOMEN"
        ct_path = directory / f"{study}-ct.dcm"
        ct.save_as(ct_path, enforce_file_format=True)
        cts.append(ct_path)
        files = [(ct_path, ct)]
        if lesions is not None:
            sr_path, sr = write_study_sr(
                directory,
                f"{study}-sr",
                patient_id=case.patient,
                study=study,
                study_date=day,
                lesions=lesions,
            )
            srs.append(sr_path)
            files.append((sr_path, sr))
        for path, ds in files:
            target = spool.root / spool.relative_path(
                str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return srs, cts, uid(f"{case.patient}-{case.studies[-1][0]}")


def worker_sr(case: Case, tmp_path: Path, spool: Spool, study_uid: str) -> Dataset:
    sessions = migrated_sessions(tmp_path / "agent.db")
    settings = Settings(
        storage={"spool_dir": str(spool.root), "min_free_mb": 0},
        pipeline={"results_dir": str(tmp_path / "results"), "assess": {"rules": case.worker_rules}},
    )
    engine = sessions.kw["bind"]
    reconcile(spool, engine)
    mark_stable(sessions, 0, 0, now=datetime.now(UTC))
    worker = Worker(Deps(settings, sessions))
    while worker.run_one():
        pass
    with sessions() as s:
        study = s.scalars(select(Study).where(Study.study_uid == study_uid)).one()
        assert study.state == "done"
        row = s.scalars(
            select(OutputVersion).where(OutputVersion.study_pk == study.id, OutputVersion.current.is_(True))
        ).one()
        sr_path = next(p for p in Path(tmp_path / "results").rglob("*.dcm") if p.stem == row.sr_sop_uid)
    return pydicom.dcmread(sr_path)


def command_sr(case: Case, srs: list[Path], cts: list[Path], out: Path, pre_read: bool) -> Dataset:
    argv = ["sr", "assess", *map(str, srs), "--out", str(out), "--images", *map(str, cts)]
    argv += case.command_options + (["--pre-read"] if pre_read else [])
    assert cli.main(argv) == 0
    return pydicom.dcmread(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_worker_and_sr_assess_write_the_same_sr(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write, "clock", lambda: CLOCK)
    case = CASES[name]
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    srs, cts, current_uid = make_inputs(case, tmp_path, spool)
    pre_read = case.studies[-1][2] is None
    from_worker = worker_sr(case, tmp_path, spool, current_uid)
    # The command's pre-read: the newest study's own SR is read for its study facts, its measurements left
    # out; the worker's: that study has images only. The report written is the same.
    if pre_read:
        day = case.studies[-1][1]
        extra, _ = write_study_sr(
            tmp_path,
            "newest-sr",
            patient_id=case.patient,
            study=f"{case.patient}-{case.studies[-1][0]}",
            study_date=day,
            lesions=[L("liver seg 5", 1)],
        )
        srs = [*srs, extra]
    from_command = command_sr(case, srs, cts, tmp_path / "command.dcm", pre_read)
    assert str(from_worker.StudyInstanceUID) == str(from_command.StudyInstanceUID) == current_uid
    assert blank(from_worker) == blank(from_command)
    # Not vacuous: the reports hold the case's time points and lesions.
    assert len(from_worker.ContentSequence) > 3
