"""Debian's Chromium, driven headless by Playwright, against the HTTP service served by uvicorn on 127.0.0.1:
log in, read the worklist (the critical alert first), open the study page, acknowledge the alert.

Screenshots go to the test's temporary directory. Never downloads a browser: ``/usr/bin/chromium`` only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.agentproc import free_port
from support.worklist import add_result, add_study, gist_timeline, migrated_sessions, stable_crc_timeline

from agent.config import WebSettings, WebUserSettings
from agent.web.app import Readiness, create_app
from agent.web.auth import hash_secret
from agent.web.server import WebServer

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROUTING = {"log": frozenset({"critical", "warning", "info"})}


@pytest.fixture
def server(tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed: run scripts/install-system-deps.sh")
    playwright = pytest.importorskip("playwright.sync_api")
    sessions = migrated_sessions(tmp_path / "agent.db")
    newer = add_study(sessions, "1.2.826.0.9.1", patient_id="PID-1001", patient_name="Able^Anna",
                      accession="ACC1001", study_date="20240610", description="CT ABDOMEN PV")  # fmt: skip
    add_result(sessions, newer, stable_crc_timeline(), ROUTING)
    crit = add_study(
        sessions, "1.2.826.0.9.2", patient_id="PID-1002", patient_name="Baker^Bob", accession="ACC1002",
        study_date="20240506", description="CT LIVER FOLLOW-UP",
    )  # fmt: skip
    add_result(sessions, crit, gist_timeline(), ROUTING)
    port = free_port()
    settings = WebSettings(
        users=[WebUserSettings(username="rad1", password_hash=hash_secret("correct horse", iterations=1000))],
        session_secret="browser-test-secret",
    )
    web = WebServer(create_app(settings, sessions, Readiness()), "127.0.0.1", port)
    web.start()
    yield f"http://127.0.0.1:{port}", playwright
    web.stop()
    sessions.kw["bind"].dispose()


def test_radiologist_sees_critical_first_and_acknowledges(server, tmp_path: Path) -> None:
    base, pw = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/worklist")
            assert "/login" in page.url
            assert "PID-1002" not in page.content()
            page.screenshot(path=str(shots / "01-login.png"))
            page.fill("#username", "rad1")
            page.fill("#password", "correct horse")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/worklist")
            rows = page.locator("#worklist tbody tr")
            assert rows.count() == 2
            first = rows.nth(0)
            assert first.get_attribute("data-study") == "1.2.826.0.9.2"
            assert "critical" in first.inner_text() and "PID-1002" in first.inner_text()
            page.screenshot(path=str(shots / "02-worklist.png"), full_page=True)

            first.locator("a.study-link").click()
            page.wait_for_url(f"{base}/studies/1.2.826.0.9.2")
            card = page.locator("[data-alert-card][data-code=DISC_RECIST_PD_CHOI_PR]")
            assert card.get_attribute("data-state") == "open"
            assert "Choi" in card.inner_text()
            assert page.locator("svg.spider polyline").count() == 2
            assert page.locator("#lesions tbody tr").count() == 2
            page.screenshot(path=str(shots / "03-study.png"), full_page=True)

            card.locator("button.ack").click()
            selector = "[data-code=DISC_RECIST_PD_CHOI_PR]"
            page.wait_for_function(f"document.querySelector('{selector}').dataset.state === 'acknowledged'")
            assert "Acknowledged by rad1" in card.inner_text()
            page.screenshot(path=str(shots / "04-acknowledged.png"), full_page=True)

            page.reload()
            assert "Acknowledged by rad1" in page.locator("[data-code=DISC_RECIST_PD_CHOI_PR]").inner_text()
            page.goto(f"{base}/worklist")
            assert "critical" not in page.locator("#worklist tbody tr").nth(0).inner_text()
        finally:
            browser.close()
    for name in ("01-login", "02-worklist", "03-study", "04-acknowledged"):
        assert (shots / f"{name}.png").stat().st_size > 5000
