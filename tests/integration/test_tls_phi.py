"""DICOM over TLS (mutual, with certificates made by the test) and no patient data in the service log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.agentproc import dcmtk
from support.dicomgen import make_study
from support.pki import make_pki

pytestmark = pytest.mark.integration


def test_storescu_over_mutual_tls(make_agent, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    agent = make_agent(
        LIVER_AGENT_DICOM__TLS__ENABLED="true",
        LIVER_AGENT_DICOM__TLS__CERTIFICATE=str(pki["server.crt"]),
        LIVER_AGENT_DICOM__TLS__PRIVATE_KEY=str(pki["server.key"]),
        LIVER_AGENT_DICOM__TLS__CA_CERTIFICATE=str(pki["ca.crt"]),
    ).start()
    study = make_study(tmp_path / "study", key="tls", ct_instances=2)
    tls = ("+tls", pki["client.key"], pki["client.crt"], "+cf", pki["ca.crt"])
    result = dcmtk(
        "storescu", *tls, "--propose-rle", "-aec", "LIVERAGENT", "127.0.0.1", agent.port, *study.files
    )
    assert result.returncode == 0, result.stderr
    assert agent.scalar("SELECT count(*) FROM instances") == len(study.files)
    # Without a client certificate (mutual TLS), and in plain TCP, the agent refuses.
    anonymous = dcmtk("echoscu", "+tla", "+cf", pki["ca.crt"], "-aec", "LIVERAGENT", "127.0.0.1", agent.port)
    assert anonymous.returncode != 0
    assert agent.echo().returncode != 0
    ok = dcmtk("echoscu", *tls, "-aec", "LIVERAGENT", "127.0.0.1", agent.port)
    assert ok.returncode == 0, ok.stderr
    assert agent.stop() == 0


def test_no_patient_data_in_the_log(make_agent, tmp_path: Path) -> None:
    name, pid, birth = "Quixotebury^Zenobia^Marigold", "PHI7731942", "19440229"
    agent = make_agent().start()
    study = make_study(tmp_path / "study", key="phi", patient_name=name, patient_id=pid, birth_date=birth)
    assert agent.store(*study.files).returncode == 0
    assert agent.wait_state(study.study_uid, "stable")
    # A refused instance too: refusal paths must not leak either.
    from test_refusals_restart import variant

    assert agent.store(variant(study.files[0], tmp_path / "x.dcm", StudyInstanceUID=None)).returncode != 0
    assert agent.stop() == 0
    log = agent.all_logs()
    assert '"event": "scp.stored"' in log and '"event": "study.stable"' in log
    for needle in ("Quixotebury", "Zenobia", "Marigold", pid, birth, study.study_uid):
        assert needle not in log, f"{needle!r} appears in the log"
    # No raw UID of the study: every UID-like token in the log is a SOP class or transfer syntax.
    for uid in re.findall(r"\d+(?:\.\d+){4,}", log):
        assert uid.startswith("1.2.840.10008."), uid
    # Every line is one JSON event with a level.
    assert all(line.startswith("{") and '"event"' in line for line in log.splitlines() if line.strip())
