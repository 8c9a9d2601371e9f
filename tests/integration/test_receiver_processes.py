"""Several receiver processes on one listening socket (``dicom.receiver_processes``): associations spread,
every instance is indexed once, and the clean-stop marker tells whether every receiver stopped cleanly."""

from __future__ import annotations

import concurrent.futures
import os
import signal
from pathlib import Path

import pytest
from support.agentproc import wait_until
from support.dicomgen import make_study

pytestmark = pytest.mark.integration


def receiver_pids(agent) -> list[int]:
    pid = agent.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def test_associations_spread_over_receiver_processes_and_each_instance_is_indexed_once(
    make_agent, tmp_path: Path
) -> None:
    agent = make_agent(LIVER_AGENT_DICOM__RECEIVER_PROCESSES="3").start()
    assert wait_until(lambda: len(agent.events("scp.listening")) == 3, 10), agent.log_text()
    assert len(receiver_pids(agent)) == 2
    studies = [make_study(tmp_path / f"s{i}", key=f"spread{i}", ct_instances=3) for i in range(12)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda s: agent.store(*s.files), studies))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    n = sum(len(s.files) for s in studies)
    assert agent.scalar("SELECT count(*) FROM instances") == n
    assert agent.scalar("SELECT count(DISTINCT sop_uid) FROM instances") == n
    assert agent.scalar("SELECT count(*) FROM studies") == len(studies)
    handled_by = {e["pid"] for e in agent.events("scp.association.accepted")}
    assert len(handled_by) >= 2, "every association went to one process"
    for s in studies:
        assert agent.wait_state(s.study_uid, "stable"), agent.log_text()[-3000:]
    assert agent.scalar("SELECT count(*) FROM jobs") == len(studies)

    assert agent.stop() == 0
    assert (agent.spool / ".clean-stop").exists()
    assert not [e for e in agent.events() if e.get("level") == "error"]
    agent.start()
    assert not agent.events("spool.reconciled")  # the clean stop needs no walk of the spool
    assert agent.stop() == 0


def test_a_receiver_that_dies_makes_the_next_start_reconcile(make_agent, tmp_path: Path) -> None:
    agent = make_agent(LIVER_AGENT_DICOM__RECEIVER_PROCESSES="2").start()
    assert wait_until(lambda: len(agent.events("scp.listening")) == 2, 10), agent.log_text()
    (child,) = receiver_pids(agent)
    os.kill(child, signal.SIGKILL)
    assert wait_until(lambda: bool(agent.events("scp.receiver.exited")), 10), agent.log_text()
    study = make_study(tmp_path / "after", key="after-kill")
    assert agent.store(*study.files).returncode == 0  # the first process still receives
    assert agent.scalar("SELECT count(*) FROM instances") == len(study.files)
    assert agent.stop() == 0
    assert not (agent.spool / ".clean-stop").exists()
    agent.start()
    assert wait_until(lambda: bool(agent.events("spool.reconciled")), 10)
    assert agent.scalar("SELECT count(*) FROM instances") == len(study.files)
    assert agent.stop() == 0
