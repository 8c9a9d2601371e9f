"""HTTP API and pages through FastAPI's test client on a migrated SQLite database with real assessments."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support.worklist import add_result, add_study, gist_timeline, migrated_sessions, stable_crc_timeline

from agent.alerts.store import raise_operational
from agent.config import APITokenSettings, WebSettings, WebUserSettings
from agent.web.app import Readiness, create_app
from agent.web.auth import hash_secret, verify_secret

READ = "read-token-0123456789abcdef"
ACK = "ack-token-0123456789abcdef"
ROUTING = {"log": frozenset({"critical", "warning", "info"})}


def web_settings() -> WebSettings:
    return WebSettings(
        tokens=[
            APITokenSettings(name="dashboard", hash=hash_secret(READ, "sha256"), scopes=["read"]),
            APITokenSettings(
                name="ris", hash=hash_secret(ACK, iterations=1000), scopes=["read", "acknowledge"]
            ),
        ],
        users=[WebUserSettings(username="rad1", password_hash=hash_secret("correct horse", iterations=1000))],
        session_secret="test-session-secret",
    )


@pytest.fixture
def data(tmp_path: Path):
    sessions = migrated_sessions(tmp_path / "agent.db")
    stable = add_study(sessions, "1.2.826.0.2.1", patient_id="PID-A", patient_name="Able^Anna",
                       accession="ACC-A", study_date="20240601")  # fmt: skip
    add_result(sessions, stable, stable_crc_timeline(), ROUTING)
    crit = add_study(sessions, "1.2.826.0.2.2", patient_id="PID-B", patient_name="Baker^Bob",
                     accession="ACC-B", study_date="20240506")  # fmt: skip
    add_result(sessions, crit, gist_timeline(), ROUTING)
    add_study(sessions, "1.2.826.0.2.3", patient_id="PID-C", accession="ACC-C", state="receiving")
    with sessions.begin() as s:
        raise_operational(s, "PACS_UNREACHABLE", "PACS did not answer for 15 min", subject="peer:pacs",
                          routing=ROUTING)  # fmt: skip
    yield sessions
    sessions.kw["bind"].dispose()


@pytest.fixture
def client(data) -> TestClient:
    ready = Readiness({"scheduler": lambda: True, "dicom": lambda: True})
    return TestClient(create_app(web_settings(), data, ready))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_hashes_verify_and_reject() -> None:
    for method in ("sha256", "pbkdf2_sha256"):
        h = hash_secret("tok", method)
        assert verify_secret("tok", h) and not verify_secret("tok2", h)
    assert not verify_secret("tok", "md5$abc") and not verify_secret("tok", "pbkdf2_sha256$x$y$z")


def test_health_and_readiness(client: TestClient, data) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": True, "scheduler": True, "dicom": True}
    down = TestClient(create_app(web_settings(), data, Readiness({"dicom": lambda: False})))
    r = down.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["dicom"] is False


def test_metrics_parse_and_report_database_state(client: TestClient) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    studies = {s.labels["state"]: s.value for s in families["liver_agent_studies"].samples}
    assert studies["done"] == 2 and studies["receiving"] == 1
    alerts = {(s.labels["code"], s.labels["severity"], s.labels["state"]): s.value
              for s in families["liver_agent_alerts"].samples}  # fmt: skip
    assert alerts[("DISC_RECIST_PD_CHOI_PR", "critical", "open")] == 1
    assert alerts[("PACS_UNREACHABLE", "critical", "open")] == 1
    depth = {s.labels["queue"]: s.value for s in families["liver_agent_outbox_pending"].samples}
    assert depth["alerts"] == 3 and depth["dicom"] == 0
    assert "liver_agent_instances_received" in families
    assert "liver_agent_pipeline_duration_seconds" in families


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/alerts"),
        ("post", "/api/alerts/1/acknowledge"),
        ("get", "/api/studies/1.2.826.0.2.2/response"),
    ],
)
def test_api_refuses_without_or_with_a_bad_token(client: TestClient, method: str, path: str) -> None:
    assert getattr(client, method)(path).status_code == 401
    assert getattr(client, method)(path, headers=bearer("wrong-token")).status_code == 401
    assert getattr(client, method)(path, headers={"Authorization": f"Basic {READ}"}).status_code == 401


def test_alerts_list_filters_and_orders_critical_first(client: TestClient) -> None:
    r = client.get("/api/alerts", headers=bearer(READ))
    assert r.status_code == 200
    alerts = r.json()["alerts"]
    assert [a["severity"] for a in alerts] == sorted(
        (a["severity"] for a in alerts), key=["critical", "warning", "info"].index
    )
    codes = {a["code"] for a in alerts}
    assert {"DISC_RECIST_PD_CHOI_PR", "PACS_UNREACHABLE", "ANC_ATTENUATION_DROP_SIZE_STABLE"} <= codes
    disc = next(a for a in alerts if a["code"] == "DISC_RECIST_PD_CHOI_PR")
    assert disc["study_uid"] == "1.2.826.0.2.2" and disc["patient"] == {"id": "PID-B", "issuer": ""}
    assert "Choi" in disc["citation"]

    crit = client.get("/api/alerts?severity=critical", headers=bearer(READ)).json()["alerts"]
    assert {a["severity"] for a in crit} == {"critical"} and len(crit) == 2
    both = client.get("/api/alerts?severity=critical&severity=warning", headers=bearer(READ)).json()
    assert both["count"] == 3
    one = client.get("/api/alerts?study_uid=1.2.826.0.2.1", headers=bearer(READ)).json()["alerts"]
    assert [a["code"] for a in one] == ["ANC_ATTENUATION_DROP_SIZE_STABLE"]
    assert client.get("/api/alerts?since=2999-01-01", headers=bearer(READ)).json()["count"] == 0
    assert client.get("/api/alerts?until=2000-01-01", headers=bearer(READ)).json()["count"] == 0
    assert client.get("/api/alerts?state=acknowledged", headers=bearer(READ)).json()["count"] == 0
    assert client.get("/api/alerts?severity=fatal", headers=bearer(READ)).status_code == 422


def test_acknowledge_needs_the_acknowledge_scope(client: TestClient) -> None:
    alerts = client.get("/api/alerts?severity=critical", headers=bearer(READ)).json()["alerts"]
    target = next(a for a in alerts if a["code"] == "DISC_RECIST_PD_CHOI_PR")
    path = f"/api/alerts/{target['id']}/acknowledge"
    r = client.post(path, headers=bearer(READ))
    assert r.status_code == 403
    r = client.post(path, headers=bearer(ACK))
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["acknowledged_by"]) == ("acknowledged", "token:ris")
    assert client.get("/api/alerts?state=acknowledged", headers=bearer(READ)).json()["count"] == 1
    assert client.post("/api/alerts/99999/acknowledge", headers=bearer(ACK)).status_code == 404


def test_study_response_json_and_csv(client: TestClient) -> None:
    r = client.get("/api/studies/1.2.826.0.2.2/response", headers=bearer(READ))
    assert r.status_code == 200
    body = r.json()
    assert body["assessment"]["recist"]["timepoint_responses"] == [None, "SD", "PD"]
    assert body["assessment"]["choi"]["timepoint_responses"] == [None, "PR", "PR"]
    assert body["timepoint"] == 2 and body["version"] == 1 and body["accession_number"] == "ACC-B"
    assert [a["code"] for a in body["alerts"]] == ["DISC_RECIST_PD_CHOI_PR"]

    r = client.get("/api/studies/1.2.826.0.2.2/response?format=csv", headers=bearer(READ))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    recist = [row for row in rows if row["criterion"] == "RECIST 1.1"]
    assert [row["response"] for row in recist] == ["", "SD", "PD"]
    assert [row["date"] for row in recist] == ["2024-01-08", "2024-03-04", "2024-05-06"]
    assert recist[0]["target_sum_mm"] == "80" and recist[2]["target_sum_mm"] == "98"
    assert {row["criterion"] for row in rows} == {"RECIST 1.1", "Choi"}

    assert client.get("/api/studies/1.2.826.0.2.3/response", headers=bearer(READ)).status_code == 404
    assert client.get("/api/studies/9.9.9/response", headers=bearer(READ)).status_code == 404
    xml = client.get("/api/studies/1.2.826.0.2.2/response?format=xml", headers=bearer(READ))
    assert xml.status_code == 422


def test_openapi_describes_the_api_with_bearer_security(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/alerts", "/api/alerts/{alert_id}/acknowledge", "/api/studies/{study_uid}/response",
            "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])  # fmt: skip
    assert "/worklist" not in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# ------------------------------------------------------------------------------------------------------
# Pages


def login(client: TestClient, password: str = "correct horse") -> int:
    r = client.post("/login", data={"username": "rad1", "password": password, "next": "/worklist"},
                    follow_redirects=False)  # fmt: skip
    return r.status_code


def test_pages_need_login_and_patient_data_appears_only_after(client: TestClient) -> None:
    r = client.get("/worklist", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert "PID-B" not in client.get("/login").text
    assert client.get("/studies/1.2.826.0.2.2", follow_redirects=False).status_code == 303
    assert login(client, "wrong") == 401
    assert login(client) == 303
    page = client.get("/worklist").text
    assert "PID-B" in page and "BAKER, Bob" in page
    # Critical first, although the stable study is newer.
    assert page.index("ACC-B") < page.index("ACC-A")
    assert "ACC-C" not in page  # no result yet
    filtered = client.get("/worklist?severity=critical").text
    assert "ACC-B" in filtered and "ACC-A" not in filtered
    searched = client.get("/worklist?q=able").text
    assert "ACC-A" in searched and "ACC-B" not in searched
    study = client.get("/studies/1.2.826.0.2.2").text
    for expected in ("DISC_RECIST_PD_CHOI_PR", "Choi H et al", "<svg", "PD +20%", "T1", "T2", "RECIST 1.1"):
        assert expected in study
    # every result explains itself: reference with label and date, sums, Choi density per lesion
    for expected in ('id="why-recist"', "Compared with baseline 80 mm at BL (2024-01-08)", "Mean density",
                     "T1 80 -&gt; 40 HU", "Sum 98 mm"):  # fmt: skip
        assert expected in study, expected
    assert "<th>Baseline<br>" in study and "<th>TP 2<br>" in study  # columns from the chosen baseline
    assert client.get("/studies/9.9.9").status_code == 404
    assert client.post("/logout", follow_redirects=False).status_code == 303


def test_page_acknowledge_needs_session_and_csrf(client: TestClient) -> None:
    alerts = client.get("/api/alerts?severity=critical", headers=bearer(READ)).json()["alerts"]
    alert_id = next(a["id"] for a in alerts if a["code"] == "DISC_RECIST_PD_CHOI_PR")
    assert client.post(f"/worklist/alerts/{alert_id}/acknowledge").status_code == 401
    login(client)
    assert client.post(f"/worklist/alerts/{alert_id}/acknowledge",
                       headers={"X-CSRF-Token": "forged"}).status_code == 403  # fmt: skip
    page = client.get("/studies/1.2.826.0.2.2").text
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    r = client.post(f"/worklist/alerts/{alert_id}/acknowledge", headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "rad1"


def test_open_redirect_is_refused(client: TestClient) -> None:
    form = {"username": "rad1", "password": "correct horse", "next": "//evil.example"}
    r = client.post("/login", data=form, follow_redirects=False)
    assert r.headers["location"] == "/worklist"
