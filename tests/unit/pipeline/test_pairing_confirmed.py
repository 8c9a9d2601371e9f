"""A provisional pairing confirmed by the radiologist: OHIF v3 SRs without labels through the worker on a
real index (migrated SQLite), the decision posted to the HTTP API (``confirm`` scope) and to the study page
(session + CSRF), the study assessed again: a new output version superseding the previous SR, built on the
confirmed pairing.

The browser and Orthanc side of the same flow: tests/e2e/test_pairing_browser.py.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.ohif import ohif_sr as spool_source
from support.ohif import run_pipeline, spool_ohif_patient
from support.worklist import migrated_sessions

from agent.config import APITokenSettings, Settings, WebSettings
from agent.db.models import LesionPairing, OutputVersion
from agent.dicom.spool import Spool
from agent.web.app import Readiness, create_app
from agent.web.auth import hash_secret

FOLLOW_UP = "1.2.826.0.1.3680043.10.1455.14.2.2"
SECOND_FOLLOW_UP = "1.2.826.0.1.3680043.10.1455.14.2.3"
CONFIRM = "confirm-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        storage={"spool_dir": str(tmp_path / "spool"), "min_free_mb": 0},
        pipeline={"results_dir": str(tmp_path / "out")},
    )


def web() -> WebSettings:
    return WebSettings(
        tokens=[
            APITokenSettings(name="ris", hash=hash_secret(CONFIRM, "sha256"), scopes=["read", "confirm"]),
            APITokenSettings(name="dashboard", hash=hash_secret(READ, "sha256"), scopes=["read"]),
        ],
        session_secret="test-session-secret",
    )


def test_the_api_confirms_a_pairing_and_a_new_version_supersedes_the_provisional_one(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool_ohif_patient(
        spool,
        tmp_path,
        ("ohif3_nolabels_followup.dcm",),
        ("ohif3_nolabels_baseline.dcm", "ohif3_nolabels_followup.dcm"),
    )
    sessions = migrated_sessions(tmp_path / "agent.db")
    settings = settings_for(tmp_path)
    state, detail = run_pipeline(sessions, settings, spool)[FOLLOW_UP]
    assert state == "done" and detail is not None
    timeline = detail["timeline"]
    assert timeline["provisional"] is True
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "SD"]
    by_size = {p["diameter_mm"]: p for p in timeline["pairings"]}
    assert (by_size[52.5]["paired_with"], by_size[33]["paired_with"]) == ("L1", "L2")

    client = TestClient(create_app(web(), sessions, Readiness({})))
    decisions = [
        {  # the 52.5 mm lesion is not L1: a new lesion
            "sr_sop_uid": by_size[52.5]["source"]["sop_instance_uid"],
            "tracking_uid": by_size[52.5]["source"]["tracking_uid"],
            "decision": "new",
        },
        {  # the 33 mm lesion is L2, as proposed
            "sr_sop_uid": by_size[33]["source"]["sop_instance_uid"],
            "tracking_uid": by_size[33]["source"]["tracking_uid"],
            "decision": "same",
            "paired_with": "L2",
        },
    ]
    url = f"/api/studies/{FOLLOW_UP}/pairings"
    assert client.post(url, json={"decisions": decisions}).status_code == 401
    denied = client.post(url, json={"decisions": decisions}, headers={"Authorization": f"Bearer {READ}"})
    assert denied.status_code == 403
    bad = [{**decisions[1], "decision": "maybe"}]
    assert (
        client.post(url, json={"decisions": bad}, headers={"Authorization": f"Bearer {CONFIRM}"}).status_code
        == 422
    )
    r = client.post(url, json={"decisions": decisions}, headers={"Authorization": f"Bearer {CONFIRM}"})
    assert r.status_code == 202 and r.json()["job"] >= 1
    with sessions() as s:
        rows = s.scalars(select(LesionPairing)).all()
        assert sorted((p.decision, p.paired_with, p.decided_by) for p in rows) == [
            ("new", None, "token:ris"),
            ("same", "L2", "token:ris"),
        ]
        assert all(p.decided_at is not None for p in rows)

    state, detail = run_pipeline(sessions, settings, spool)[FOLLOW_UP]
    assert state == "done" and detail is not None
    timeline = detail["timeline"]
    assert timeline["provisional"] is False
    assert sorted(p["status"] for p in timeline["pairings"]) == ["confirmed", "confirmed"]
    # L1 not measured and an unequivocal new lesion: progression.
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "PD"]
    with sessions() as s:
        versions = s.scalars(select(OutputVersion).order_by(OutputVersion.version)).all()
        follow_up = [v for v in versions if v.study_pk == versions[-1].study_pk]
        assert [(v.version, v.current) for v in follow_up] == [(1, False), (2, True)]
        first, second = follow_up
    sr = pydicom.dcmread(detail["objects"][0])
    assert sr.SOPInstanceUID == second.sr_sop_uid
    predecessors = [
        ref.ReferencedSOPInstanceUID
        for study in sr.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]
    assert first.sr_sop_uid in predecessors
    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    assert not any("provisional" in t for t in texts)


def test_an_earlier_lesion_not_measured_is_marked_absent_or_not_assessed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # The follow-up measures one lesion only: its SR is the nolabels follow-up without its first group.
    follow_up = pydicom.dcmread(spool_source("ohif3_nolabels_followup.dcm"))
    measurements = next(
        c for c in follow_up.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "126010"
    )
    del measurements.ContentSequence[0]  # the 33 mm lesion: L2 is not measured at the follow-up
    spool_ohif_patient(
        spool,
        tmp_path,
        ("ohif3_nolabels_followup.dcm",),
        ("ohif3_nolabels_baseline.dcm", "ohif3_nolabels_followup.dcm"),
    )
    held = Spool(spool).relative_path(
        FOLLOW_UP, str(follow_up.SeriesInstanceUID), str(follow_up.SOPInstanceUID)
    )
    follow_up.save_as(spool / held)  # in place of the original
    sessions = migrated_sessions(tmp_path / "agent.db")
    settings = settings_for(tmp_path)
    state, detail = run_pipeline(sessions, settings, spool)[FOLLOW_UP]
    assert state == "done" and detail is not None
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "NE"]  # L2 not assessed
    client = TestClient(create_app(web(), sessions, Readiness({})))
    headers = {"Authorization": f"Bearer {CONFIRM}"}
    url = f"/api/studies/{FOLLOW_UP}/pairings"
    assert client.post(url, json={"decisions": [{"decision": "absent"}]}, headers=headers).status_code == 422
    r = client.post(url, json={"decisions": [{"decision": "absent", "lesion_id": "L2"}]}, headers=headers)
    assert r.status_code == 202
    state, detail = run_pipeline(sessions, settings, spool)[FOLLOW_UP]
    assert detail is not None
    (l2,) = [les for les in detail["timeline"]["timepoints"][1]["lesions"] if les["id"] == "L2"]
    assert l2["status"] == "disappeared"
    assert any(p["status"] == "absent" and p["paired_with"] == "L2" for p in detail["timeline"]["pairings"])
    # L1 52.5 mm (proposed) and L2 gone: 52.5 mm vs 80 mm at baseline, -34 %: PR (provisional on L1).
    assert detail["assessment"]["recist"]["target_sums_mm"] == [80, 52.5]
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "PR"]
    r = client.post(
        url, json={"decisions": [{"decision": "not_assessed", "lesion_id": "L2"}]}, headers=headers
    )
    assert r.status_code == 202
    state, detail = run_pipeline(sessions, settings, spool)[FOLLOW_UP]
    assert detail is not None
    (l2,) = [les for les in detail["timeline"]["timepoints"][1]["lesions"] if les["id"] == "L2"]
    assert l2["status"] == "not_assessed"
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "NE"]


def test_a_later_study_reuses_the_confirmed_identities(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool_ohif_patient(
        spool,
        tmp_path,
        ("ohif3_nolabels_followup.dcm",),
        ("ohif3_nolabels_baseline.dcm", "ohif3_nolabels_followup.dcm"),
    )
    sessions = migrated_sessions(tmp_path / "agent.db")
    settings = settings_for(tmp_path)
    _, detail = run_pipeline(sessions, settings, spool)[FOLLOW_UP]
    assert detail is not None
    by_size = {p["diameter_mm"]: p["source"] for p in detail["timeline"]["pairings"]}
    # The radiologist pairs the other way round: 52.5 mm is L2, 33 mm is L1.
    decisions = [
        {
            "sr_sop_uid": src["sop_instance_uid"],
            "tracking_uid": src["tracking_uid"],
            "decision": "same",
            "paired_with": lid,
        }
        for src, lid in ((by_size[52.5], "L2"), (by_size[33], "L1"))
    ]
    client = TestClient(create_app(web(), sessions, Readiness({})))
    r = client.post(
        f"/api/studies/{FOLLOW_UP}/pairings",
        json={"decisions": decisions},
        headers={"Authorization": f"Bearer {CONFIRM}"},
    )
    assert r.status_code == 202, r.text
    # A third study arrives later, again without labels.
    spool_ohif_patient(spool, tmp_path, ("ohif3_nolabels_followup2.dcm",), ("ohif3_nolabels_followup2.dcm",))
    out = run_pipeline(sessions, settings, spool)
    _, detail = out[SECOND_FOLLOW_UP]
    assert detail is not None
    timeline = detail["timeline"]
    earlier = sorted(
        (p["diameter_mm"], p["paired_with"], p["status"]) for p in timeline["pairings"] if p["timepoint"] == 1
    )
    assert earlier == [(33, "L1", "confirmed"), (52.5, "L2", "confirmed")]
    # The newest study's own pairing is proposed on the confirmed chain (sizes after the confirmation).
    newest = sorted(
        (p["diameter_mm"], p["paired_with"], p["status"]) for p in timeline["pairings"] if p["timepoint"] == 2
    )
    assert newest == [(36, "L1", "proposed"), (40.5, "L2", "proposed")]
    assert detail["assessment"]["recist"]["target_sums_mm"] == [80, 85.5, 76.5]
