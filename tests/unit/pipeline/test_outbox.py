"""The delivery outbox against a real peer (a pynetdicom SCP on 127.0.0.1 started here), no Orthanc.

What is checked: the back-off schedule (30 s doubling, capped at 10 min), transient failures (no association,
an out-of-resources status) retried and permanent failure statuses quarantined with an alert in the alerts
store (the row kept), the give-up alert after ``give_up_after_s`` while the row is kept and still retried,
a restart resuming pending rows, and the PACS_UNREACHABLE clock.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support.agentproc import free_port
from support.dicom_peer import DicomPeer
from support.worklist import add_study, migrated_sessions

from agent import cli
from agent.alerts.models import AlertDelivery, AlertRecord
from agent.alerts.store import DELIVERY_GAVE_UP, DELIVERY_REFUSED, PACS_UNREACHABLE
from agent.config import OutboxSettings, PeerSettings
from agent.db import make_engine, session_factory
from agent.db.models import OutboxItem, PeerHealth
from agent.pipeline import outbox
from agent.pipeline.health import AlertPolicy, peer_answered, peer_unreachable
from tests.unit.sr.srgen import ct_image

SETTINGS = OutboxSettings()  # the defaults: 30 s doubling, capped at 600 s; give up after 24 h
ROUTING = {"log": frozenset({"critical", "warning", "info"})}
POLICY = AlertPolicy(routing=ROUTING, unreachable_after_s=900)


@pytest.fixture
def sessions(tmp_path: Path):
    s = migrated_sessions(tmp_path / "agent.db")
    yield s
    s.kw["bind"].dispose()


@pytest.fixture
def peer():
    p = DicomPeer().start()
    yield p
    p.stop()


def peer_settings(port: int) -> dict[str, PeerSettings]:
    return {
        "pacs": PeerSettings(
            ae_title="TESTPACS", host="127.0.0.1", port=port, acse_timeout_s=5, dimse_timeout_s=5,
            network_timeout_s=5, query_retrieve=False,
        )
    }  # fmt: skip


def obj(tmp_path: Path, name: str) -> outbox.OutboundObject:
    ds = ct_image("PIDOUT", name, date(2024, 3, 1))
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return outbox.OutboundObject(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID))


def queue(sessions: sessionmaker[Session], objects, study_pk: int | None, at: datetime | None = None) -> None:
    with sessions.begin() as s:
        outbox.queue(s, ["pacs"], objects, study_pk, None, now=at)


def rows(sessions) -> list[OutboxItem]:
    with sessions() as s:
        return list(s.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def op_alerts(sessions) -> list[tuple[str, str | None, str, int | None]]:
    with sessions() as s:
        return [
            (a.code, a.subject, a.state, a.study_pk)
            for a in s.scalars(select(AlertRecord).where(AlertRecord.source == "operational"))
        ]


def deliveries(sessions) -> int:
    with sessions() as s:
        return int(s.execute(select(func.count()).select_from(AlertDelivery)).scalar_one())


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


# ------------------------------------------------------------------------------------------------------
# Back-off


def test_backoff_is_30_s_doubling_capped_at_10_min() -> None:
    waits = [outbox.backoff_s(n, SETTINGS) for n in range(1, 10)]
    assert waits == [30, 60, 120, 240, 480, 600, 600, 600, 600]
    assert outbox.backoff_s(10_000, SETTINGS) == 600


def test_unreachable_peer_is_retried_on_the_back_off_schedule(sessions, tmp_path: Path) -> None:
    queue(sessions, [obj(tmp_path, "a")], None)
    peers = peer_settings(free_port())  # nothing listens there: no association
    waits = []
    for _ in range(7):
        # Each round looks an hour ahead, so the row is due whatever its wait (and far from the give-up).
        summary = outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, now=later(3600), policy=POLICY)
        assert (summary.delivered, summary.retried, summary.quarantined) == (0, 1, 0)
        (row,) = rows(sessions)
        waits.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
    assert waits == [30, 60, 120, 240, 480, 600, 600]
    (row,) = rows(sessions)
    # (pynetdicom reports a refused connection as an aborted association request)
    assert row.state == "pending" and row.attempts == 7 and row.last_error == "pacs: aborted"
    # Not due yet at the real time: nothing is attempted.
    assert outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, policy=POLICY).retried == 0


# ------------------------------------------------------------------------------------------------------
# Transient vs permanent


@pytest.mark.parametrize("status", [0xC000, 0xA900])
def test_permanent_failure_status_quarantines_keeps_the_row_and_alerts(
    sessions, tmp_path: Path, peer: DicomPeer, status: int, monkeypatch, capsys
) -> None:
    study = add_study(sessions, "1.2.826.0.1.77.1")
    first, second = obj(tmp_path, "a"), obj(tmp_path, "b")
    queue(sessions, [first, second], study)
    peer.statuses = [status]  # the first object is refused, the second stored
    peers = peer_settings(peer.port)
    summary = outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, policy=POLICY)
    assert (summary.delivered, summary.retried, summary.quarantined) == (1, 0, 1)
    refused, stored = rows(sessions)
    assert (refused.state, refused.attempts, refused.last_status) == ("quarantined", 1, status)
    assert stored.state == "delivered" and peer.received == [second.sop_uid]
    subject = f"outbox:{refused.id}"
    assert op_alerts(sessions) == [(DELIVERY_REFUSED, subject, "open", study)]
    assert deliveries(sessions) == 1  # routed to the sink
    # ``liver-agent status`` counts it with the quarantined row.
    monkeypatch.setenv("LIVER_AGENT_DATABASE__URL", f"sqlite:///{tmp_path / 'agent.db'}")
    capsys.readouterr()  # (the log lines so far)
    assert cli.main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["operational_alerts"] == {DELIVERY_REFUSED: 1}
    assert (status["outbox"]["quarantined"], status["outbox"]["delivered"]) == (1, 1)
    # Quarantined rows are not retried by the loop ...
    assert outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, now=later(3600), policy=POLICY) == (
        outbox.DeliveryRound()
    )
    assert len(rows(sessions)) == 2
    # ... but by the operator; the peer takes it now and the alert is resolved.
    with sessions.begin() as s:
        assert outbox.retry(s, [refused.id]) == 1
    assert outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, policy=POLICY).delivered == 1
    assert peer.received == [second.sop_uid, first.sop_uid]
    assert op_alerts(sessions) == [(DELIVERY_REFUSED, subject, "resolved", study)]


def test_out_of_resources_status_is_transient_and_the_peer_counts_as_answering(
    sessions, tmp_path: Path, peer: DicomPeer
) -> None:
    """0xA7xx (Refused: out of resources) says "not now": retried with back-off, never quarantined."""
    queue(sessions, [obj(tmp_path, "a")], None)
    peer.statuses = [0xA700]
    peers = peer_settings(peer.port)
    summary = outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, policy=POLICY)
    assert (summary.delivered, summary.retried, summary.quarantined) == (0, 1, 0)
    (row,) = rows(sessions)
    assert row.state == "pending" and row.last_status == 0xA700
    assert (row.next_attempt_at - row.last_attempt_at).total_seconds() == 30
    assert op_alerts(sessions) == []
    with sessions() as s:
        assert s.get(PeerHealth, "pacs") is None  # it answered: no outage clock
    assert outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, now=later(60), policy=POLICY).delivered
    assert rows(sessions)[0].state == "delivered"


# ------------------------------------------------------------------------------------------------------
# Give-up alert


def test_give_up_alert_after_give_up_after_s_keeps_the_row_and_keeps_retrying(
    sessions, tmp_path: Path
) -> None:
    port = free_port()
    peers = peer_settings(port)
    queued_at = datetime.now(UTC) - timedelta(hours=25)
    queue(sessions, [obj(tmp_path, "a"), obj(tmp_path, "b")], None, at=queued_at)
    queue(sessions, [obj(tmp_path, "fresh")], None)  # queued now: not overdue
    outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, policy=POLICY)
    assert op_alerts(sessions) == [(DELIVERY_GAVE_UP, "dicom:pacs", "open", None)]
    with sessions() as s:
        (alert,) = s.scalars(select(AlertRecord)).all()
        assert alert.message.startswith("2 object(s) for pacs still undelivered after 86400 s")
    overdue = [r for r in rows(sessions) if r.alerted_at is not None]
    assert len(overdue) == 2 and all(r.state == "pending" and r.attempts == 1 for r in overdue)
    # Later rounds retry the rows; the alert is neither duplicated nor sent again.
    outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, now=later(3600), policy=POLICY)
    assert [r.attempts for r in rows(sessions)] == [2, 2, 2]
    assert len(op_alerts(sessions)) == 1 and deliveries(sessions) == 1
    # The destination comes back: everything is delivered and the alert resolved.
    peer = DicomPeer(port=port).start()
    try:
        summary = outbox.deliver_due(sessions, peers, "LIVERAGENT", SETTINGS, now=later(3600), policy=POLICY)
    finally:
        peer.stop()
    assert summary.delivered == 3 and len(peer.received) == 3
    assert op_alerts(sessions) == [(DELIVERY_GAVE_UP, "dicom:pacs", "resolved", None)]


# ------------------------------------------------------------------------------------------------------
# Restart


def test_restart_resumes_pending_deliveries(tmp_path: Path, peer: DicomPeer) -> None:
    db = tmp_path / "agent.db"
    first = migrated_sessions(db)
    objects = [obj(tmp_path, "a"), obj(tmp_path, "b")]
    queue(first, objects, None)
    # The agent dies before its first round (nothing but the database survives) ...
    first.kw["bind"].dispose()
    # ... and a new process (new engine, new session factory) delivers what was queued.
    engine = make_engine(f"sqlite:///{db}")
    try:
        second = session_factory(engine)
        summary = outbox.deliver_due(second, peer_settings(peer.port), "LIVERAGENT", SETTINGS, policy=POLICY)
        assert summary.delivered == 2
        assert sorted(peer.received) == sorted(o.sop_uid for o in objects)
        # Queueing the same objects again (a re-run) adds nothing and sends nothing.
        queue(second, objects, None)
        again = outbox.deliver_due(second, peer_settings(peer.port), "LIVERAGENT", SETTINGS, policy=POLICY)
        assert again.delivered == 0 and len(peer.received) == 2
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------------------
# PACS_UNREACHABLE


def test_pacs_unreachable_is_raised_after_the_delay_and_resolved_when_the_peer_answers(sessions) -> None:
    t0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    with sessions.begin() as s:
        assert not peer_unreachable(s, "pacs", "pacs: cannot associate", POLICY, t0)
        assert not peer_unreachable(s, "pacs", "pacs: cannot associate", POLICY, t0 + timedelta(seconds=899))
    assert op_alerts(sessions) == []
    with sessions.begin() as s:
        assert peer_unreachable(s, "pacs", "pacs: rejected", POLICY, t0 + timedelta(seconds=900))
        assert peer_unreachable(s, "pacs", "pacs: rejected", POLICY, t0 + timedelta(seconds=1500))
    assert op_alerts(sessions) == [(PACS_UNREACHABLE, "peer:pacs", "open", None)]
    assert deliveries(sessions) == 1
    with sessions.begin() as s:
        assert peer_answered(s, "pacs", t0 + timedelta(seconds=1600))
        assert not peer_answered(s, "pacs", t0 + timedelta(seconds=1601))
    assert op_alerts(sessions) == [(PACS_UNREACHABLE, "peer:pacs", "resolved", None)]
    # A new outage starts a new clock.
    with sessions.begin() as s:
        assert not peer_unreachable(s, "pacs", "x", POLICY, t0 + timedelta(seconds=2000))


def test_delivery_to_a_silent_destination_raises_pacs_unreachable(sessions, tmp_path: Path) -> None:
    port = free_port()
    queue(sessions, [obj(tmp_path, "a")], None)
    impatient = AlertPolicy(routing=ROUTING, unreachable_after_s=0)
    outbox.deliver_due(sessions, peer_settings(port), "LIVERAGENT", SETTINGS, policy=impatient)
    assert op_alerts(sessions) == [(PACS_UNREACHABLE, "peer:pacs", "open", None)]
    peer = DicomPeer(port=port).start()
    try:
        outbox.deliver_due(
            sessions, peer_settings(port), "LIVERAGENT", SETTINGS, now=later(60), policy=impatient
        )
    finally:
        peer.stop()
    assert rows(sessions)[0].state == "delivered"
    assert op_alerts(sessions) == [(PACS_UNREACHABLE, "peer:pacs", "resolved", None)]
