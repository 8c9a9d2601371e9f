"""Bad input gets a clear failure status and the service keeps answering; a restart loses no study."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from support.agentproc import wait_until
from support.dicomgen import make_study, save
from support.rawpeer import send_raw

pytestmark = pytest.mark.integration


def variant(src: Path, out: Path, **changes) -> Path:
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return save(ds, out)


def test_unlisted_calling_ae_is_rejected(make_agent) -> None:
    agent = make_agent(LIVER_AGENT_DICOM__ACCEPTED_CALLING_AETS='["STORESCU"]').start()
    refused = agent.echo(calling="INTRUDER")
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stderr + refused.stdout or "rejected" in refused.stderr.lower()
    assert agent.echo(calling="STORESCU").returncode == 0
    assert wait_until(lambda: agent.events("scp.association.rejected"), 5)
    assert agent.events("scp.association.rejected")[0]["calling_aet"] == "INTRUDER"
    assert agent.stop() == 0


def test_wrong_called_ae_title_is_rejected(make_agent) -> None:
    from support.agentproc import dcmtk

    agent = make_agent().start()
    result = dcmtk("echoscu", "-aec", "SOMEONEELSE", "127.0.0.1", agent.port)
    assert result.returncode != 0
    assert agent.echo().returncode == 0
    agent.stop()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_bad_instances_get_failure_statuses_and_nothing_is_stored(make_agent, tmp_path: Path) -> None:
    agent = make_agent().start()
    study = make_study(tmp_path / "study", key="bad", ct_instances=1)
    good = study.files[0]
    bad = tmp_path / "bad"
    cases = {
        "no_patient_id": (variant(good, bad / "a.dcm", PatientID=None), 0xA9),
        "no_study_uid": (variant(good, bad / "b.dcm", StudyInstanceUID=None), 0xA9),
        "path_like_study_uid": (variant(good, bad / "c.dcm", StudyInstanceUID="1.2/../../../../tmp/x"), 0xC0),
        "path_like_sop_uid": (variant(good, bad / "d.dcm", SOPInstanceUID="../../../x"), 0xC0),
        "leading_zero_series_uid": (variant(good, bad / "e.dcm", SeriesInstanceUID="1.2.03"), 0xC0),
    }
    for name, (path, high_byte) in cases.items():
        result = agent.store(path)
        # storescu exits with the high byte of a failure status.
        assert result.returncode == high_byte, f"{name}: {result.returncode} {result.stderr}"
    data = good.read_bytes()
    truncated = bad / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 1001])  # cut inside the pixel data
    assert send_raw(agent.port, truncated) == "0xC000"
    assert agent.echo().returncode == 0, "the service still answers after the refusals"
    assert agent.store(good).returncode == 0
    assert agent.scalar("SELECT count(*) FROM instances") == 1
    assert [p for p in agent.spool.rglob("*") if p.is_file()] == [
        agent.spool
        / study.study_uid
        / next(iter(study.series))
        / f"{pydicom.dcmread(good).SOPInstanceUID}.dcm"
    ]
    assert not (tmp_path / "x").exists()
    reasons = [e["reason"] for e in agent.events("scp.store.refused")]
    assert len(reasons) == 6 and any(r.startswith("unparseable") for r in reasons)
    assert agent.stop() == 0


def test_spool_under_its_floor_answers_out_of_resources(make_agent, tmp_path: Path) -> None:
    agent = make_agent(LIVER_AGENT_STORAGE__MIN_FREE_MB=str(1 << 40)).start()
    study = make_study(tmp_path / "study", key="full", ct_instances=1)
    result = agent.store(study.files[0])
    assert result.returncode == 0xA7
    assert agent.events("scp.store.refused")[0]["status"] == "0xA700"
    assert agent.echo().returncode == 0
    assert agent.scalar("SELECT count(*) FROM instances") == 0
    agent.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_restart_with_a_study_still_receiving(make_agent, tmp_path: Path, sig: int) -> None:
    # A long quiet time: the study cannot turn stable before the service goes down.
    agent = make_agent(LIVER_AGENT_STABILITY__STABLE_AFTER_S="4").start()
    study = make_study(tmp_path / "study", key=f"restart{sig}")
    series = list(study.series.values())
    assert agent.store(*series[0]).returncode == 0
    assert agent.scalar("SELECT state FROM studies") == "receiving"
    code = agent.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    agent.start()
    assert agent.store(*series[1], *series[2]).returncode == 0
    assert agent.wait_state(study.study_uid, "stable", timeout=30)
    assert agent.scalar("SELECT count(*) FROM instances") == len(study.files)
    # Down and up again once stable: the job is not enqueued a second time.
    assert agent.stop() == 0
    agent.start()
    time.sleep(1.0)
    assert agent.query("SELECT kind, state FROM jobs") == [("process_study", "pending")]
    assert agent.stop() == 0


def test_study_quiet_while_the_service_was_down_turns_stable_after_restart(
    make_agent, tmp_path: Path
) -> None:
    agent = make_agent(LIVER_AGENT_STABILITY__STABLE_AFTER_S="2").start()
    study = make_study(tmp_path / "study", key="downtime", ct_instances=1)
    assert agent.store(*study.files).returncode == 0
    agent.stop(signal.SIGKILL)
    time.sleep(2.5)
    agent.start()
    assert agent.wait_state(study.study_uid, "stable", timeout=10)
    assert agent.scalar("SELECT count(*) FROM jobs") == 1
    agent.stop()


def test_sigterm_lets_an_in_flight_association_finish(make_agent, tmp_path: Path) -> None:
    agent = make_agent().start()
    study = make_study(tmp_path / "study", key="inflight", ct_instances=40, ct_size=128)
    env_files = [str(p) for p in study.files]
    proc = subprocess.Popen(
        ["storescu", "--propose-rle", "-aec", "LIVERAGENT", "127.0.0.1", str(agent.port), *env_files],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_until(lambda: len(agent.events("scp.stored")) >= 3, 20)
    assert agent.stop(signal.SIGTERM) == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert agent.scalar("SELECT count(*) FROM instances") == len(study.files)
    # The listener no longer accepts once stopped.
    assert agent.echo().returncode != 0
