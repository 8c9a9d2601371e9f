"""Factories for alert, web and worklist tests: a migrated SQLite database, studies, and stored results
computed by the real clinical core from timeline JSON (a criteria/vectors.json case or a built timeline)."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from agent.alerts.store import Routing, record_assessment
from agent.db import make_engine, session_factory, upgrade
from agent.db.models import OutputVersion, Patient, Study
from agent.response.parse import assessment_to_dict, timeline_from_dict
from agent.response.table import assess_timeline

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "data" / "criteria" / "vectors.json"


def migrated_sessions(path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return session_factory(engine)


def vector_case(case_id: str) -> dict[str, Any]:
    cases = json.loads(VECTORS.read_text())["cases"]
    return copy.deepcopy(next(c for c in cases if c["id"] == case_id))


def gist_timeline(hu_follow_up: float = 40, growth_mm: float = 12) -> dict[str, Any]:
    """GIST on imatinib, two liver targets: RECIST PD (growth) with Choi PR (density halves) at the end."""

    def lesion(lid: str, size: float, hu: float) -> dict[str, Any]:
        return {"id": lid, "organ": "liver", "kind": "target", "is_node": False, "long_axis_mm": size,
                "short_axis_mm": None, "mean_hu": hu}  # fmt: skip

    def tp(date: str, lesions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"date": date, "modality": "CT", "phase": "portal_venous", "slice_thickness_mm": 2.5,
                "contrast": True, "lesions": lesions}  # fmt: skip

    return {
        "context": {
            "treatment_start": "2024-01-15",
            "primary": "GIST",
            "therapy": ["imatinib"],
            "criteria": ["RECIST1.1", "Choi"],
        },
        "timepoints": [
            tp("2024-01-08", [lesion("T1", 50, 80), lesion("T2", 30, 70)]),
            tp("2024-03-04", [lesion("T1", 48, 60), lesion("T2", 29, 60)]),
            tp("2024-05-06", [lesion("T1", 50 + growth_mm, hu_follow_up), lesion("T2", 36, hu_follow_up)]),
        ],
    }


def stable_crc_timeline() -> dict[str, Any]:
    """CRC on FOLFOX: stable disease under RECIST only (no critical alert)."""
    tl = gist_timeline()
    tl["context"] = {
        "treatment_start": "2024-01-15",
        "primary": "CRC",
        "therapy": ["FOLFOX"],
        "criteria": ["RECIST1.1"],
    }
    for tp in tl["timepoints"][1:]:
        for les in tp["lesions"]:
            les["long_axis_mm"] = {"T1": 49, "T2": 30}[les["id"]]
    return tl


def add_study(
    sessions: sessionmaker[Session],
    study_uid: str,
    *,
    patient_id: str = "PID-0001",
    patient_name: str = "Doe^Jane",
    accession: str = "ACC0001",
    study_date: str = "20240506",
    description: str = "CT ABDOMEN",
    state: str = "done",
) -> int:
    now = datetime.now(UTC)
    with sessions.begin() as s:
        patient = s.query(Patient).filter_by(patient_id=patient_id, issuer="").one_or_none()
        if patient is None:
            patient = Patient(patient_id=patient_id, issuer="", name=patient_name, birth_date="19600101")
            s.add(patient)
            s.flush()
        study = Study(
            study_uid=study_uid, patient_pk=patient.id, study_date=study_date, study_time="101500",
            accession_number=accession, description=description, state=state, first_received_at=now,
            last_received_at=now, receiving_since=now, updated_at=now,
        )  # fmt: skip
        s.add(study)
        s.flush()
        return study.id


def add_result(
    sessions: sessionmaker[Session],
    study_pk: int,
    timeline: dict[str, Any],
    routing: Routing,
    *,
    version: int = 1,
) -> dict[str, Any]:
    """Assess ``timeline`` with the clinical core, store it as the study's current output, record alerts."""
    assessment = assessment_to_dict(assess_timeline(timeline_from_dict(timeline)))
    detail = {"assessment": assessment, "timeline": timeline}
    digest = hashlib.sha256(json.dumps([version, detail], sort_keys=True).encode()).hexdigest()
    with sessions.begin() as s:
        for old in s.query(OutputVersion).filter_by(study_pk=study_pk):
            old.current = False
        s.add(
            OutputVersion(
                study_pk=study_pk, version=version, kind="final", digest=digest, current=True,
                series_uid=f"2.25.{study_pk}{version}1", sr_sop_uid=f"2.25.{study_pk}{version}2",
                summary_sop_uid=None, detail=json.dumps(detail),
            )
        )  # fmt: skip
        s.flush()
        record_assessment(s, study_pk, assessment, routing=routing, result_version=version)
    return assessment
