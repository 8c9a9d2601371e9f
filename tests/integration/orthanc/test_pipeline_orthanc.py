"""End to end against Orthanc: the PACS routes a follow-up liver study to our agent, our results come back.

Orthanc holds the patient's earlier studies (CT + measurement SR written with highdicom); the test makes
Orthanc send the follow-up CT to the agent (``POST /modalities/agent/store``, as an auto-routing rule would)
and later the radiologist's follow-up SR. The agent (a real ``liver-agent serve`` subprocess) finds the
priors, retrieves them, assesses and stores its SR and PDF summary in Orthanc, over either kind of peer:
DIMSE (C-FIND, C-MOVE or C-GET, C-STORE) or DICOMweb (QIDO-RS, WADO-RS, STOW-RS through Orthanc's DICOMweb
plugin; Orthanc then also routes the studies to the agent by STOW-RS, with a bearer token). The scenarios that
involve the peer run once per transport (``TRANSPORTS``) and print their timings.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from support.agentproc import free_port
from support.orthanc import AGENT_AET, Orthanc, wait_until

from agent.log import uid_hash
from agent.sr.read import read_sr
from tests.unit.sr.srgen import LesionSpec, ct_image, uid, write_study_sr

pytestmark = [pytest.mark.orthanc, pytest.mark.integration]

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
OUR_MANUFACTURER = "liver-agent"


# How the agent reaches the PACS: DIMSE with C-MOVE or C-GET retrieval, or DICOMweb.
TRANSPORTS = ["move", "get", "dicomweb"]


def peer_settings(orthanc: Orthanc, method: str) -> dict[str, Any]:
    """The agent's ``peers.<name>`` entry for ``orthanc``, reached over ``method`` (one of TRANSPORTS)."""
    if method == "dicomweb":
        return {"type": "dicomweb", "url": orthanc.dicomweb_url, "connect_timeout_s": 5, "read_timeout_s": 20}
    return {
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "retrieve_method": method,
        "acse_timeout_s": 5,
        "dimse_timeout_s": 20,
        "network_timeout_s": 20,
    }


def report_timing(scenario: str, method: str, **seconds: float) -> None:
    figures = " ".join(f"{k}={v:.2f}s" for k, v in seconds.items())
    print(f"\n[timing] {scenario} over {method}: {figures}", file=sys.stderr)


# The bearer token with the store scope Orthanc uses to send studies to the agent by STOW-RS.
STOW_TOKEN = "orthanc-router-token-0123456789"


def agent_env(orthanc: Orthanc, workdir: Path, method: str = "move", **extra: str) -> dict[str, str]:
    peers = {"pacs": peer_settings(orthanc, method)}
    env = {
        "LIVER_AGENT_PEERS": json.dumps(peers),
        "LIVER_AGENT_PIPELINE__ENABLED": "true",
        "LIVER_AGENT_STABILITY__STABLE_AFTER_S": "0.6",
        "LIVER_AGENT_STABILITY__CHECK_INTERVAL_S": "0.2",
        "LIVER_AGENT_PIPELINE__POLL_INTERVAL_S": "0.2",
        "LIVER_AGENT_PIPELINE__RETRY_AFTER_S": "0.5",
        "LIVER_AGENT_PIPELINE__LEASE_S": "4",
        "LIVER_AGENT_PIPELINE__RESULTS_DIR": str(workdir / "results"),
        "LIVER_AGENT_OUTBOX__INTERVAL_S": "0.2",
        "LIVER_AGENT_OUTBOX__BACKOFF_INITIAL_S": "0.5",
        "LIVER_AGENT_OUTBOX__BACKOFF_MAX_S": "1",
    }
    if method == "dicomweb":  # the PACS routes to the agent by STOW-RS too
        digest = hashlib.sha256(STOW_TOKEN.encode()).hexdigest()
        env["LIVER_AGENT_WEB__ENABLED"] = "true"
        env["LIVER_AGENT_WEB__PORT"] = str(free_port())
        env["LIVER_AGENT_WEB__TOKENS"] = json.dumps(
            [{"name": "orthanc", "hash": f"sha256${digest}", "scopes": ["store"]}]
        )
    env.update(extra)
    return env


def connect(orthanc: Orthanc, agent: Any) -> None:
    """Orthanc learns where the agent is: its DICOM listener, and its STOW-RS endpoint when it has one."""
    orthanc.register_agent(agent.port)
    if agent.env_overrides.get("LIVER_AGENT_WEB__ENABLED") == "true":
        url = f"http://127.0.0.1:{agent.env_overrides['LIVER_AGENT_WEB__PORT']}/dicomweb"
        orthanc.register_agent_dicomweb(url, STOW_TOKEN)


def start_agent(make_agent: Any, orthanc: Orthanc, method: str = "move", **extra: str) -> Any:
    agent = make_agent()
    agent.env_overrides.update(agent_env(orthanc, agent.workdir, method, **extra))
    agent.start()
    connect(orthanc, agent)
    return agent


def save_ct(
    directory: Path, patient_id: str, study: str, day: date, description: str, body_part: str
) -> Path:
    ds = ct_image(patient_id, study, day)
    ds.StudyDescription = description
    ds.BodyPartExamined = body_part
    path = directory / f"{study}-ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def patient_study(
    directory: Path,
    patient_id: str,
    name: str,
    day: date,
    lesions: list[LesionSpec] | None,
    description: str = "CT ABDOMEN LIVER FOLLOW-UP",
    body_part: str = "ABDOMEN",
) -> tuple[Path, Path | None, str]:
    """A study: one CT image and (when lesions are given) a measurement SR; returns paths and Study UID."""
    study = f"{patient_id}-{name}"
    ct = save_ct(directory, patient_id, study, day, description, body_part)
    sr = None
    if lesions is not None:
        sr, _ = write_study_sr(
            directory, study, patient_id=patient_id, study=study, study_date=day, lesions=lesions
        )
    return ct, sr, uid(study)


def lesions(long_mm: tuple[float, float], hu: tuple[float, float] | None = None) -> list[LesionSpec]:
    return [
        LesionSpec("liver seg 7", uid("L1"), long_mm=long_mm[0], mean_hu=hu[0] if hu else None),
        LesionSpec("liver seg 4", uid("L2"), long_mm=long_mm[1], mean_hu=hu[1] if hu else None),
    ]


def ours(orthanc: Orthanc, study_uid: str) -> list[dict[str, Any]]:
    return [i for i in orthanc.study_instances(study_uid) if i.get("Manufacturer") == OUR_MANUFACTURER]


def our_srs(orthanc: Orthanc, study_uid: str) -> list[Dataset]:
    out = []
    for inst in ours(orthanc, study_uid):
        if inst.get("SOPClassUID") == COMPREHENSIVE_SR:
            import io

            out.append(pydicom.dcmread(io.BytesIO(orthanc.instance_file(inst["ID"]))))
    return out


def text_values(ds: Dataset) -> list[str]:
    found: list[str] = []

    def walk(items: Any) -> None:
        for item in items:
            if "TextValue" in item:
                found.append(str(item.TextValue))
            if "ConceptCodeSequence" in item:
                found.append(str(item.ConceptCodeSequence[0].CodeMeaning))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return found


def route(orthanc: Orthanc, *paths: Path, via: str = "move") -> None:
    """Upload to Orthanc, then make Orthanc send them to the agent (an auto-routing rule): by C-STORE, or by
    STOW-RS when ``via`` is dicomweb."""
    ids = [orthanc.upload(p)["ID"] for p in paths]
    if via == "dicomweb":
        orthanc.stow_to("agent", ids)
    else:
        orthanc.send_to("agent", ids)


def operational_alerts(agent: Any) -> list[tuple[str, str, str]]:
    """(code, subject, state) of the operational alerts in the agent's alerts store."""
    return agent.query("SELECT code, subject, state FROM alerts WHERE source = 'operational' ORDER BY id")


def is_pre_read(ds: Dataset) -> bool:
    """The report kind our SR states in its qualitative evaluations (pre-read or response)."""
    from agent.sr import codes

    return codes.PRE_READ.meaning in text_values(ds)


# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", TRANSPORTS)
def test_follow_up_pre_read_then_final_response(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path, method: str
):
    pid = f"E2E{method.upper()}"
    base_ct, base_sr, base_uid = patient_study(tmp_path, pid, "bl", date(2024, 1, 10), lesions((40, 30)))
    fu_ct, fu_sr, fu_uid = patient_study(tmp_path, pid, "fu", date(2024, 3, 20), lesions((25, 20)))
    assert base_sr is not None and fu_sr is not None
    orthanc.upload(base_ct)
    orthanc.upload(base_sr)
    agent = start_agent(make_agent, orthanc, method)

    t0 = time.perf_counter()
    route(orthanc, fu_ct, via=method)
    assert wait_until(lambda: len(our_srs(orthanc, fu_uid)) >= 1, 30, 0.05), agent.all_logs()[-3000:]
    pre_read_s = time.perf_counter() - t0
    pre = our_srs(orthanc, fu_uid)
    assert len(pre) == 1 and is_pre_read(pre[0])
    # The prior SR was retrieved (C-MOVE to our AE, C-GET or WADO-RS) and is now in our index.
    assert (
        agent.scalar(
            "SELECT count(*) FROM instances WHERE sop_uid = :u",
            u=str(pydicom.dcmread(base_sr).SOPInstanceUID),
        )
        == 1
    )
    pre_texts = " | ".join(text_values(pre[0]))
    assert "70" in pre_texts  # the baseline target sum (40 + 30 mm) and its thresholds

    t0 = time.perf_counter()
    route(orthanc, fu_sr, via=method)
    assert wait_until(lambda: len(our_srs(orthanc, fu_uid)) >= 2, 30, 0.05), agent.all_logs()[-3000:]
    final_s = time.perf_counter() - t0
    srs = our_srs(orthanc, fu_uid)
    final = next(ds for ds in srs if not is_pre_read(ds))
    pre_uid = str(pre[0].SOPInstanceUID)
    preds = [
        ref.ReferencedSOPInstanceUID
        for study in final.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]
    assert preds == [pre_uid]
    texts = " | ".join(text_values(final))
    assert "Partial Response" in texts or "PR" in texts
    # Our own reader reads our SR: two lesions at the follow-up with the baseline's Tracking UIDs.
    path = tmp_path / "final.dcm"
    final.save_as(path)
    report = read_sr(path)
    lesion_uids = {g.tracking_uid for g in report.groups}
    assert {uid("L1"), uid("L2")} <= lesion_uids
    # One PDF summary per SR version; nothing duplicated.
    kinds = [i["SOPClassUID"] for i in ours(orthanc, fu_uid)]
    assert kinds.count(COMPREHENSIVE_SR) == 2 and kinds.count(PDF) == 2
    assert agent.scalar("SELECT state FROM studies WHERE study_uid = :u", u=fu_uid) == "done"
    assert operational_alerts(agent) == []
    # The retrieved prior is evidence only: its study was never reopened nor processed, so no job, no
    # result version and nothing of ours in the PACS for the old study.
    time.sleep(1.5)  # beyond the stability quiet time, a few stability ticks and worker polls
    assert agent.scalar("SELECT state FROM studies WHERE study_uid = :u", u=base_uid) == "prior"
    assert agent.query(
        "SELECT DISTINCT i.origin FROM instances i JOIN series se ON se.id = i.series_pk"
        " JOIN studies st ON st.id = se.study_pk WHERE st.study_uid = :u",
        u=base_uid,
    ) == [("retrieved",)]
    for table in ("jobs", "output_versions", "outbox"):
        assert (
            agent.scalar(
                f"SELECT count(*) FROM {table} t JOIN studies st ON st.id = t.study_pk"
                " WHERE st.study_uid = :u",
                u=base_uid,
            )
            == 0
        ), table
    assert ours(orthanc, base_uid) == []
    assert {e.get("study") for e in agent.events("study.stable")} == {uid_hash(fu_uid)}
    if method == "dicomweb":  # Orthanc routed the CT, then the SR, to the agent by STOW-RS
        assert [e["stored"] for e in agent.events("stow.received")] == [1, 1]
    runs = [e for e in agent.events("pipeline.finished") if e.get("state") == "done"]
    report_timing(
        "pre-read then final",
        method,
        routed_to_pre_read_in_pacs=pre_read_s,
        routed_to_final_in_pacs=final_s,
        find=sum(e.get("find_ms", 0) for e in runs) / 1000,
        retrieve=sum(e.get("retrieve_ms", 0) for e in runs) / 1000,
        deliver_sr_and_pdf=max(e.get("ms", 0) for e in agent.events("outbox.delivered")) / 1000,
    )
    agent.stop()


def test_gist_recist_pd_choi_pr_discordance(orthanc: Orthanc, make_agent: Any, tmp_path: Path):
    pid = "E2EGIST"
    desc = "CT ABDOMEN GIST FOLLOW-UP"
    base_ct, base_sr, base_uid = patient_study(
        tmp_path, pid, "bl", date(2024, 1, 10), lesions((40, 30), (60, 60)), desc
    )
    fu_ct, fu_sr, fu_uid = patient_study(
        tmp_path, pid, "fu", date(2024, 3, 20), lesions((50, 36), (40, 38)), desc
    )
    assert base_sr is not None and fu_sr is not None
    orthanc.upload(base_sr)
    agent = start_agent(make_agent, orthanc)
    # The baseline CT was routed to us when it was acquired: its header tells the contrast (Choi density).
    route(orthanc, base_ct)
    assert wait_until(lambda: len(our_srs(orthanc, base_uid)) >= 1, 30), agent.all_logs()[-3000:]
    route(orthanc, fu_ct, fu_sr)
    assert wait_until(lambda: any(not is_pre_read(d) for d in our_srs(orthanc, fu_uid)), 30), (
        agent.all_logs()[-3000:]
    )
    final = next(ds for ds in our_srs(orthanc, fu_uid) if not is_pre_read(ds))
    texts = " | ".join(text_values(final))
    assert "DISC_RECIST_PD_CHOI_PR" in texts
    assert "Progressive Disease" in texts or "PD" in texts
    detail = json.loads(agent.scalar("SELECT detail FROM output_versions WHERE current = 1 ORDER BY id DESC"))
    assert detail["context"]["primary"] == "GIST" and detail["criteria"] == ["RECIST1.1", "Choi"]
    agent.stop()


def test_no_priors_gives_baseline_only_result_without_alerts(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path
):
    ct, sr, study_uid = patient_study(tmp_path, "E2ENEW", "bl", date(2024, 5, 2), lesions((22, 15)))
    assert sr is not None
    agent = start_agent(make_agent, orthanc)
    route(orthanc, ct)
    assert agent.wait_state(study_uid, "done", 30), agent.all_logs()[-3000:]
    assert ours(orthanc, study_uid) == []  # nothing to say before any measurement
    route(orthanc, sr)
    assert wait_until(lambda: len(our_srs(orthanc, study_uid)) == 1, 30), agent.all_logs()[-3000:]
    (final,) = our_srs(orthanc, study_uid)
    assert not is_pre_read(final)
    assert operational_alerts(agent) == []
    assert not [
        e for e in agent.events() if e.get("level") in ("error", "warning") and "outbox" in e.get("event", "")
    ]
    agent.stop()


def test_non_liver_study_is_ignored(orthanc: Orthanc, make_agent: Any, tmp_path: Path):
    ct, _, study_uid = patient_study(tmp_path, "E2EHEAD", "head", date(2024, 5, 2), None, "CT HEAD", "HEAD")
    agent = start_agent(make_agent, orthanc)
    route(orthanc, ct)
    assert agent.wait_state(study_uid, "ignored", 30), agent.all_logs()[-3000:]
    assert agent.scalar("SELECT count(*) FROM outbox") == 0
    assert ours(orthanc, study_uid) == []
    agent.stop()


@pytest.mark.parametrize("method", ["move", "dicomweb"])
def test_pacs_outage_results_wait_and_arrive_once(
    orthanc: Orthanc, own_orthanc: Orthanc, make_agent: Any, tmp_path: Path, method: str
):
    """The archive our results go to is down while we deliver; they wait, then arrive exactly once.

    The archive stays silent longer than ``alerts.pacs_unreachable_after_s``: PACS_UNREACHABLE is raised in
    the alerts store (what the sinks and /api/alerts see) and resolved when the archive answers again.
    """
    archive = own_orthanc
    pid = f"E2EOUT{method.upper()}"
    base_ct, base_sr, _ = patient_study(tmp_path, pid, "bl", date(2024, 1, 10), lesions((40, 30)))
    fu_ct, fu_sr, fu_uid = patient_study(tmp_path, pid, "fu", date(2024, 3, 20), lesions((25, 20)))
    assert base_sr is not None and fu_sr is not None
    for p in (base_ct, base_sr):
        orthanc.upload(p)
    agent = make_agent()
    env = agent_env(orthanc, agent.workdir, method)
    peers = json.loads(env["LIVER_AGENT_PEERS"])
    peers["pacs"]["store"] = False
    peers["archive"] = {**peer_settings(archive, method), "query_retrieve": False, "store": True}
    env["LIVER_AGENT_PEERS"] = json.dumps(peers)
    env["LIVER_AGENT_ALERTS__PACS_UNREACHABLE_AFTER_S"] = "1"
    agent.env_overrides.update(env)
    agent.start()
    connect(orthanc, agent)
    archive.stop()
    route(orthanc, fu_ct, fu_sr, via=method)
    assert wait_until(
        lambda: (
            (agent.scalar("SELECT count(*) FROM outbox WHERE state = 'pending' AND attempts >= 2") or 0) == 2
        ),
        40,
    ), agent.all_logs()[-3000:]
    assert agent.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'") == 0
    assert wait_until(
        lambda: operational_alerts(agent) == [("PACS_UNREACHABLE", "peer:archive", "open")], 20
    ), operational_alerts(agent)
    archive.start()
    t0 = time.perf_counter()
    assert wait_until(lambda: agent.scalar("SELECT count(*) FROM outbox WHERE state != 'delivered'") == 0, 30)
    report_timing("outage", method, archive_back_to_delivered=time.perf_counter() - t0)
    assert operational_alerts(agent) == [("PACS_UNREACHABLE", "peer:archive", "resolved")]
    time.sleep(1.5)  # further delivery rounds must not send anything again
    instances = ours(archive, fu_uid)
    uids = [i["SOPInstanceUID"] for i in instances]
    assert len(uids) == len(set(uids)) == agent.scalar("SELECT count(*) FROM outbox") == 2
    assert agent.scalar("SELECT max(attempts) FROM outbox") >= 3
    agent.stop()


def test_agent_killed_mid_pipeline_completes_once_after_restart(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path
):
    pid = "E2EKILL"
    base_ct, base_sr, _ = patient_study(tmp_path, pid, "bl", date(2024, 1, 10), lesions((40, 30)))
    fu_ct, fu_sr, fu_uid = patient_study(tmp_path, pid, "fu", date(2024, 3, 20), lesions((25, 20)))
    assert base_sr is not None and fu_sr is not None
    for p in (base_ct, base_sr):
        orthanc.upload(p)
    # The worker is slowed by a PACS that answers late: kill the agent while the job is claimed.
    agent = start_agent(make_agent, orthanc, LIVER_AGENT_PIPELINE__ENABLED="true")
    route(orthanc, fu_ct, fu_sr)
    assert wait_until(
        lambda: agent.scalar("SELECT count(*) FROM jobs WHERE state = 'running'") == 1, 30, 0.02
    )
    agent.stop(signal.SIGKILL)
    agent.start()
    assert wait_until(lambda: len(our_srs(orthanc, fu_uid)) >= 1, 40), agent.all_logs()[-3000:]
    assert wait_until(lambda: agent.scalar("SELECT count(*) FROM outbox WHERE state != 'delivered'") == 0, 30)
    srs = our_srs(orthanc, fu_uid)
    assert len(srs) == 1 and not is_pre_read(srs[0])
    assert agent.scalar("SELECT count(*) FROM output_versions") == 1
    assert agent.scalar("SELECT state FROM studies WHERE study_uid = :u", u=fu_uid) == "done"
    agent.stop()


def test_reprocess_gives_one_current_result_and_no_duplicate(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path
):
    import subprocess
    import sys

    pid = "E2EREP"
    base_ct, base_sr, _ = patient_study(tmp_path, pid, "bl", date(2024, 1, 10), lesions((40, 30)))
    fu_ct, fu_sr, fu_uid = patient_study(tmp_path, pid, "fu", date(2024, 3, 20), lesions((25, 20)))
    assert base_sr is not None and fu_sr is not None
    for p in (base_ct, base_sr):
        orthanc.upload(p)
    agent = start_agent(make_agent, orthanc)
    route(orthanc, fu_ct, fu_sr)
    assert wait_until(lambda: len(our_srs(orthanc, fu_uid)) == 1, 30), agent.all_logs()[-3000:]
    assert wait_until(lambda: agent.scalar("SELECT count(*) FROM outbox WHERE state != 'delivered'") == 0, 30)
    before = agent.scalar("SELECT count(*) FROM outbox")
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "reprocess", fu_uid],
        env=agent.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: agent.scalar("SELECT count(*) FROM jobs WHERE state = 'done'") >= 2, 30)
    assert agent.wait_state(fu_uid, "done", 30)
    assert agent.scalar("SELECT count(*) FROM outbox") == before
    assert agent.scalar("SELECT count(*) FROM output_versions WHERE current = 1") == 1
    assert len(our_srs(orthanc, fu_uid)) == 1
    status = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status"],
        env=agent.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "done" in status.stdout and "outbox" in status.stdout
    agent.stop()


def test_agent_ae_is_what_orthanc_knows(orthanc: Orthanc, make_agent: Any):
    agent = start_agent(make_agent, orthanc)
    assert orthanc.post("/modalities/agent/echo", {}) is not None
    assert AGENT_AET == "LIVERAGENT"
    agent.stop()
