"""The durable queue (agent/queue) on SQLite: one back-off rule, claims that never overlap, leases renewed
while work runs and taken over when they run out, and the outbox rows of an older schema kept."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from support.worklist import migrated_sessions

from agent import queue
from agent.config import AlertSettings, OutboxSettings
from agent.db import make_engine, session_factory, upgrade
from agent.db.models import Job, OutboxItem, OutboxState
from agent.pipeline import jobs, outbox
from agent.pipeline.outbox import OutboundObject
from agent.queue import LeaseKeeper, RetryPolicy

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_one_retry_policy_gives_each_queue_its_configured_back_off() -> None:
    assert [RetryPolicy(30, 2, 600).delay(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 600, 600]
    assert outbox.retry_policy(OutboxSettings()) == RetryPolicy(30, 2, 600)
    alerts = AlertSettings(retry_initial_s=10, retry_factor=3, retry_max_s=100)
    assert [RetryPolicy(10, 3, 100).delay(n) for n in (1, 2, 3, 4)] == [10, 30, 90, 100]
    from agent.alerts.delivery import retry_policy

    assert retry_policy(alerts) == RetryPolicy(10, 3, 100)
    assert [jobs.outage_delay(r, 0.2, 5) for r in range(5)] == [1, 2, 4, 5, 5]  # at least 1 s, capped
    assert RetryPolicy(60, 1).delay(9) == 60  # a constant wait
    assert RetryPolicy(1, 2, 10).delay(10_000) == 10
    assert RetryPolicy(5, 2, 1).delay(3) == 5  # a ceiling below the first wait never shortens it


def _pending_jobs(sessions, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    ids = []
    with sessions.begin() as s:
        for _ in range(n):
            job = Job(kind="test", state="pending", attempts=0, created_at=T0, updated_at=T0)
            s.add(job)
            s.flush()
            ids.append(job.id)
    return ids


def test_concurrent_claimers_never_share_a_row(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    ids = _pending_jobs(sessions, 40)
    got: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        while True:
            with sessions.begin() as s:
                claimed = jobs.claim_lease(s, ("test",), lease_s=60, now=T0)
            if claimed is None:
                return
            with lock:
                got.append(claimed[1].id)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == ids  # every row once, none twice
    with sessions() as s:
        assert s.execute(select(Job.attempts).distinct()).scalars().all() == [1]


def test_an_expired_lease_is_taken_over_and_the_old_holder_learns_it(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    _pending_jobs(sessions, 1)
    with sessions.begin() as s:
        _, first = jobs.claim_lease(s, ("test",), lease_s=30, now=T0) or (None, None)
    assert first is not None
    with sessions.begin() as s:  # still leased: nobody else gets it
        assert jobs.claim_lease(s, ("test",), lease_s=30, now=T0 + timedelta(seconds=29)) is None
    with sessions.begin() as s:  # the holder died: after the lease another worker takes the job over
        taken = jobs.claim_lease(s, ("test",), lease_s=30, now=T0 + timedelta(seconds=31))
    assert taken is not None and taken[1].id == first.id and taken[1].until != first.until
    with sessions.begin() as s:
        assert queue.renew(s, Job, first, 30) is None  # the old holder cannot renew...
        assert not queue.holds(s, Job, first)  # ... nor record its outcome
        assert queue.holds(s, Job, taken[1])
        assert s.get(Job, first.id).attempts == 2  # type: ignore[union-attr]


def test_the_keeper_renews_a_lease_while_the_work_runs(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    _pending_jobs(sessions, 1)
    with sessions.begin() as s:
        claimed = jobs.claim_lease(s, ("test",), lease_s=0.6)
    assert claimed is not None
    with LeaseKeeper(sessions, Job, claimed[1], 0.6) as keeper:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # three lease lengths: without renewal the job would be free
            with sessions.begin() as s:
                assert jobs.claim_lease(s, ("test",), lease_s=0.6) is None
            time.sleep(0.1)
        assert not keeper.lost.is_set()
        assert keeper.current().until > claimed[1].until
    with sessions.begin() as s:
        assert queue.holds(s, Job, keeper.current())
        assert queue.release(s, Job, keeper.current())


def test_outbox_rows_are_claimed_under_a_lease(tmp_path: Path) -> None:
    sessions = migrated_sessions(tmp_path / "agent.db")
    objects = [
        OutboundObject(tmp_path / f"{i}.dcm", "1.2.840.10008.5.1.4.1.1.88.33", f"1.2.3.{i}") for i in range(6)
    ]
    with sessions.begin() as s:
        outbox.queue(s, ["pacs"], objects, None, None, now=T0)
    due = [OutboxItem.state == OutboxState.PENDING.value, OutboxItem.lease_until.is_(None)]
    with sessions.begin() as s:
        a = queue.claim(
            s, OutboxItem, where=due, order_by=[OutboxItem.id], lease_s=60, queue="outbox", limit=4
        )
    with sessions.begin() as s:
        b = queue.claim(
            s, OutboxItem, where=due, order_by=[OutboxItem.id], lease_s=60, queue="outbox", limit=4
        )
    assert len(a) == 4 and len(b) == 2
    assert not {x.id for x in a} & {x.id for x in b}


def test_the_outbox_lease_migration_keeps_existing_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0007")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox (destination, sop_uid, sop_class_uid, path, state, attempts, "
                "next_attempt_at, created_at) VALUES ('pacs', '1.2.3', '1.2.840.10008.5.1.4.1.1.88.33', "
                "'/r/x.dcm', 'pending', 2, '2024-05-01 12:00:00.000000', '2024-05-01 11:00:00.000000')"
            )
        )
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        row = s.execute(select(OutboxItem)).scalar_one()
        assert (row.sop_uid, row.state, row.attempts, row.lease_until) == ("1.2.3", "pending", 2, None)
        assert s.execute(select(func.count()).select_from(OutboxItem)).scalar_one() == 1
