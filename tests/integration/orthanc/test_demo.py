"""``make demo`` end to end: scripts/demo.py starts Orthanc and the agent, loads its synthetic GIST patient,
C-MOVEs the latest study to the agent and sees the response SR and PDF summary arrive in the PACS; then it
stops both processes. What the agent concluded is read from its database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support.orthanc import ORTHANC

pytestmark = [pytest.mark.orthanc, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[3]


def test_the_demo_routes_the_latest_study_and_gets_a_result(tmp_path: Path) -> None:
    assert Path(ORTHANC).exists(), "Orthanc is not installed: run scripts/install-system-deps.sh"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--check", "--workdir", str(tmp_path / "demo")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "check passed" in done.stdout and "stopped liver-agent and Orthanc" in done.stdout
    assert (tmp_path / "demo" / "summary.pdf").read_bytes().startswith(b"%PDF")
    db = sqlite3.connect(tmp_path / "demo" / "agent" / "agent.db")
    (detail,) = db.execute("SELECT detail FROM output_versions WHERE current").fetchone()
    result = json.loads(detail)
    assessment = result["assessment"]
    log = (tmp_path / "demo" / "agent" / "agent.log").read_text(errors="replace")
    events = [line[:300] for line in log.splitlines() if '"scp.' not in line]
    why = json.dumps(
        {"warnings": result["warnings"], "inputs": result["inputs"], "log": events[-40:]}, indent=1
    )
    # Baseline 73 mm, first follow-up 90 mm (+23 %): progression by size, while the density fell by half.
    assert assessment["recist"]["timepoint_responses"] == [None, "PD", "PD"], why
    # GIST on imatinib: Choi too, from the priors' images found on the PACS; density -54 %: partial response.
    assert assessment["choi"]["timepoint_responses"] == [None, "PR", "PR"], why
    codes = {row[0] for row in db.execute("SELECT code FROM alerts")}
    assert {"DISC_RECIST_PD_CHOI_PR", "POST_PD_TIMEPOINT"} <= codes, codes
