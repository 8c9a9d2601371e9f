"""The worklist's split by site and the study page's tumour marker curve (docs/criteria.md §13), on a
migrated SQLite database with a real assessment: liver targets grow while the lung target shrinks and the
CEA falls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from support.worklist import add_result, add_study, migrated_sessions

from agent.config import WebSettings, WebUserSettings
from agent.web.app import Readiness, create_app
from agent.web.auth import hash_secret

ROUTING = {"log": frozenset({"critical", "warning", "info"})}


def _lesion(lid: str, organ: str, size: float) -> dict[str, Any]:
    return {"id": lid, "organ": organ, "kind": "target", "long_axis_mm": size}


def timeline() -> dict[str, Any]:
    sizes = [(40, 30, 30), (32, 24, 24), (48, 36, 16)]
    dates = ["2024-01-10", "2024-03-20", "2024-05-29"]
    return {
        "context": {"treatment_start": "2024-01-15", "primary": "CRC", "therapy": ["FOLFOX"]},
        "timepoints": [
            {
                "date": day,
                "modality": "CT",
                "lesions": [_lesion("L1", "liver", a), _lesion("L2", "liver", b), _lesion("P1", "lung", c)],
            }
            for day, (a, b, c) in zip(dates, sizes, strict=True)
        ],
        "pet": [
            {"date": "2024-01-11", "lesions": [{"id": "L1", "sul_peak": 10}]},
            {"date": "2024-05-20", "lesions": [{"id": "L1", "sul_peak": 5}]},
        ],
        "markers": [
            {"marker": "CEA", "date": day, "value": v, "unit": "ng/mL", "upper_limit": 5}
            for day, v in (("2024-01-12", 40), ("2024-03-18", 25), ("2024-05-27", 14))
        ],
    }


def test_worklist_and_study_page_show_sites_and_markers(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    study = add_study(sessions, "1.2.826.0.2.9", patient_id="PID-S", accession="ACC-S", study_date="20240529")
    assessment = add_result(sessions, study, timeline(), ROUTING)
    assert {a["code"] for a in assessment["alerts"]} >= {
        "SITE_DISCORDANT_PROGRESSION",
        "MARKER_FALLING_RECIST_PD",
    }
    settings = WebSettings(
        users=[WebUserSettings(username="rad1", password_hash=hash_secret("correct horse", iterations=1000))],
        session_secret="test-session-secret",
    )
    client = TestClient(create_app(settings, sessions, Readiness({})))
    data = {"username": "rad1", "password": "correct horse", "next": "/worklist"}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 303
    page = client.get("/worklist").text
    assert "<th>By site</th>" in page
    assert "Liver +50.0 % PD · Extrahepatic -46.7 % PR" in page
    study_page = client.get("/studies/1.2.826.0.2.9").text
    assert 'id="sites"' in study_page
    assert "Liver targets 84 mm: +20.0 % vs baseline 70 mm, +50.0 % vs nadir 56 mm (FU1); PD." in study_page
    assert '<svg class="markers"' in study_page and "CEA (ng/mL)" in study_page and "ULN 5" in study_page
    assert "CEA: response (CEA response: 14 ng/mL" in study_page
    assert 'id="pet"' in study_page and "PET 2024-05-20: PMR by PERCIST 1.0" in study_page
    assert "METABOLIC_RESPONSE_RECIST_PD" in {a["code"] for a in assessment["alerts"]}
    sessions.kw["bind"].dispose()
