"""OHIF v3 measurement SRs through a PACS, and a provisional pairing confirmed in the browser.

Orthanc holds each patient's baseline (the CT slices and the SR the OHIF writer made, tests/data/ohif); it
routes the follow-up CT and SR to a real ``liver-agent serve`` (DIMSE, C-MOVE), which finds and retrieves
the baseline SR, assesses and stores its SR and PDF in Orthanc.

- Patient OHIF-A: labels, no shared Tracking UID: the lesions pair by label, nothing provisional (RECIST SD).
- Patient OHIF-B: no labels: the pairing is proposed (size rank) and the result provisional. In Debian's
  Chromium (Playwright, ``/usr/bin/chromium``), the radiologist opens the study page, pairs the 33 mm lesion
  with L1 and marks the 52.5 mm lesion new, and confirms: the agent assesses again (RECIST PD) and a new SR,
  listing the provisional one as its predecessor, reaches Orthanc. Screenshots are kept in the test's
  temporary directory (``screenshots/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.agentproc import free_port
from support.ohif import ohif_sr, referenced_images
from support.orthanc import Orthanc, wait_until

from agent.web.auth import hash_secret
from tests.integration.orthanc.test_pipeline_orthanc import our_srs, route, start_agent, text_values

pytestmark = [pytest.mark.orthanc, pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
A_FOLLOW_UP = "1.2.826.0.1.3680043.10.1455.14.1.2"
B_FOLLOW_UP = "1.2.826.0.1.3680043.10.1455.14.2.2"


def files(directory: Path, name: str) -> list[Path]:
    """The OHIF SR ``name`` and the CT slices it references, as files."""
    out = [ohif_sr(name)]
    for image in referenced_images(ohif_sr(name)):
        path = directory / f"{image.SOPInstanceUID}.dcm"
        image.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def current_detail(agent: Any, study_uid: str) -> dict[str, Any] | None:
    rows = agent.query(
        "SELECT o.detail FROM output_versions o JOIN studies s ON s.id = o.study_pk "
        "WHERE s.study_uid = :u AND o.current",
        u=study_uid,
    )
    return json.loads(rows[0][0]) if rows else None


def test_ohif_labels_pair_and_a_provisional_pairing_is_confirmed_in_the_browser(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed: run scripts/install-system-deps.sh")
    playwright = pytest.importorskip("playwright.sync_api")
    web_port = free_port()
    users = [{"username": "rad1", "password_hash": hash_secret("correct horse", iterations=1000)}]
    agent = start_agent(
        make_agent,
        orthanc,
        LIVER_AGENT_WEB__ENABLED="true",
        LIVER_AGENT_WEB__PORT=str(web_port),
        LIVER_AGENT_WEB__USERS=json.dumps(users),
        LIVER_AGENT_WEB__SESSION_SECRET="pairing-browser-secret",
    )
    for baseline in ("ohif3_labels_baseline.dcm", "ohif3_nolabels_baseline.dcm"):
        for path in files(tmp_path, baseline):
            orthanc.upload(path)
    route(orthanc, *files(tmp_path, "ohif3_labels_followup.dcm"))
    route(orthanc, *files(tmp_path, "ohif3_nolabels_followup.dcm"))
    for study in (A_FOLLOW_UP, B_FOLLOW_UP):
        assert wait_until(lambda s=study: len(our_srs(orthanc, s)) == 1, 60), agent.log_text()[-3000:]

    # OHIF-A: paired by label.
    detail = current_detail(agent, A_FOLLOW_UP)
    assert detail is not None and detail["timeline"]["provisional"] is False
    assert detail["assessment"]["recist"]["target_sums_mm"] == [67.5, 50.25]
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "SD"]
    assert not any("provisional" in t for t in text_values(our_srs(orthanc, A_FOLLOW_UP)[0]))

    # OHIF-B: proposed by size rank, provisional in the SR that reached Orthanc.
    detail = current_detail(agent, B_FOLLOW_UP)
    assert detail is not None and detail["timeline"]["provisional"] is True
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "SD"]
    (first,) = our_srs(orthanc, B_FOLLOW_UP)
    assert sum("provisional" in t for t in text_values(first)) == 2

    shots = tmp_path / "screenshots"
    shots.mkdir()
    base = f"http://127.0.0.1:{web_port}"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/studies/{B_FOLLOW_UP}")
            page.fill("#username", "rad1")
            page.fill("#password", "correct horse")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/studies/{B_FOLLOW_UP}")
            panel = page.locator("#pairings")
            assert panel.get_attribute("data-provisional") == "true"
            assert "provisional" in panel.inner_text().lower()
            page.screenshot(path=str(shots / "01-provisional.png"), full_page=True)
            rows = page.locator("[data-pairing]")
            assert rows.count() == 2
            for k in range(2):
                row = rows.nth(k)
                diameter = row.locator("td").nth(1).inner_text()
                # Re-pair both: the 33 mm lesion is L1, the 52.5 mm lesion is new.
                row.locator("select").select_option("L1" if diameter.startswith("33") else "new")
            page.screenshot(path=str(shots / "02-re-paired.png"), full_page=True)
            page.click("#confirm-pairing")
            page.wait_for_selector("#pairings[data-submitted=true]")
            assert "Confirmed" in page.locator("#pairing-state").inner_text()

            assert wait_until(lambda: len(our_srs(orthanc, B_FOLLOW_UP)) == 2, 60), agent.log_text()[-3000:]
            page.reload()
            page.screenshot(path=str(shots / "03-confirmed.png"), full_page=True)
            assert page.locator("#pairings").get_attribute("data-provisional") == "false"
        finally:
            browser.close()
    detail = current_detail(agent, B_FOLLOW_UP)
    assert detail is not None and detail["timeline"]["provisional"] is False
    assert sorted(
        (p["diameter_mm"], p["paired_with"], p["status"]) for p in detail["timeline"]["pairings"]
    ) == [
        (33, "L1", "confirmed"),
        (52.5, None, "confirmed"),
    ]
    # L2 not measured and an unequivocal new lesion: PD.
    assert detail["assessment"]["recist"]["timepoint_responses"] == [None, "PD"]
    second = next(ds for ds in our_srs(orthanc, B_FOLLOW_UP) if ds.SOPInstanceUID != first.SOPInstanceUID)
    assert not any("provisional" in t for t in text_values(second))
    predecessors = [
        ref.ReferencedSOPInstanceUID
        for study in second.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]
    assert first.SOPInstanceUID in predecessors
    assert {p.name for p in shots.iterdir()} == {"01-provisional.png", "02-re-paired.png", "03-confirmed.png"}
