"""Several nodes on one database: a study's job runs on the node holding its files while that node is alive,
on another once it is silent; any node delivers an object another node wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from support.agentproc import free_port
from support.dicom_peer import DicomPeer
from support.worklist import migrated_sessions

from agent.config import OutboxSettings, PeerSettings
from agent.db.models import Job, Node, OutboxItem, Study
from agent.pipeline import jobs, nodes, outbox
from agent.pipeline.health import AlertPolicy
from agent.pipeline.outbox import OutboundObject
from tests.unit.pipeline.test_classify_criteria import indexed_liver_study
from tests.unit.sr.srgen import ct_image

NOW = datetime.now(UTC)


def claim_as(sessions, name: str, now: datetime):  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        return jobs.claim_lease(s, (jobs.PROCESS_STUDY,), 60, now=now, node=(name, 30))


def test_the_node_holding_the_files_adopts_the_study_and_only_it_runs_the_job_while_alive(
    tmp_path: Path,
) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    spool = tmp_path / "spool"
    study_pk, _ = indexed_liver_study(sessions, spool)
    with sessions.begin() as s:
        s.get(Study, study_pk).stable_at = NOW  # type: ignore[union-attr]
    # Node B's spool does not hold the files: it adopts nothing; A's does.
    assert nodes.adopt(sessions, "B", tmp_path / "elsewhere", 30, NOW) == 0
    assert nodes.adopt(sessions, "A", spool, 30, NOW) == 1
    nodes.heartbeat(sessions, "A", NOW)
    with sessions() as s:
        assert s.get(Study, study_pk).node == "A"  # type: ignore[union-attr]
    assert claim_as(sessions, "B", NOW + timedelta(seconds=5)) is None  # A is alive: the job waits for A
    # A falls silent: after node.dead_after_s, B takes the job (and would fetch the files from the PACS).
    claimed = claim_as(sessions, "B", NOW + timedelta(seconds=31))
    assert claimed is not None and claimed[0].study_pk == study_pk
    nodes.take_over(sessions, study_pk, "B")
    with sessions() as s:
        assert s.get(Study, study_pk).node == "B"  # type: ignore[union-attr]
        assert s.get(Node, "A").seen_at == NOW  # type: ignore[union-attr]


def test_an_unadopted_study_waits_for_its_holder_then_any_node_runs_it(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    study_pk, _ = indexed_liver_study(sessions, tmp_path / "spool")
    with sessions.begin() as s:
        s.get(Study, study_pk).stable_at = NOW  # type: ignore[union-attr]
    assert claim_as(sessions, "B", NOW + timedelta(seconds=10)) is None
    assert claim_as(sessions, "B", NOW + timedelta(seconds=31)) is not None
    with sessions() as s:
        assert s.execute(select(Job.state)).scalar_one() == "running"


def test_a_node_delivers_an_object_written_on_another_nodes_disk(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    ds = ct_image("PIDN", "node-out", NOW.date())
    written = tmp_path / "node-a" / "results" / "obj.dcm"
    written.parent.mkdir(parents=True)
    ds.save_as(written, enforce_file_format=True)
    with sessions.begin() as s:
        outbox.queue(
            s, ["pacs"], [OutboundObject(written, str(ds.SOPClassUID), str(ds.SOPInstanceUID))], None, None
        )
    written.unlink()  # node A is gone with its disk; the row still holds the bytes
    peer = DicomPeer(port=free_port()).start()
    try:
        peers = {"pacs": PeerSettings(ae_title=peer.ae_title, host="127.0.0.1", port=peer.port)}
        summary = outbox.deliver_due(sessions, peers, "LIVERAGENT", OutboxSettings(), policy=AlertPolicy())
    finally:
        peer.stop()
    assert summary.delivered == 1
    assert peer.received == [str(ds.SOPInstanceUID)]
    with sessions() as s:
        assert s.execute(select(OutboxItem.state)).scalar_one() == "delivered"
