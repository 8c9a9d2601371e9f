"""The same database code on a real PostgreSQL server: migrations, the index upsert, stability and job claims
with ``FOR UPDATE SKIP LOCKED``, and ``liver-agent serve`` receiving a study into PostgreSQL unchanged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, select, text
from support.agentproc import wait_until
from support.dicomgen import make_study
from support.postgres import PostgreSQL, available

from agent.db import Base, Instance, Job, make_engine, session_factory, upgrade
from agent.db.index import InstanceRecord, record_instance
from agent.pipeline.jobs import PROCESS_STUDY, claim
from agent.pipeline.stability import mark_stable

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 12, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgreSQL]:
    if not available():
        pytest.skip("PostgreSQL server binaries are not installed: run scripts/install-system-deps.sh")
    pg = PostgreSQL(tmp_path_factory.mktemp("postgres")).start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def engine(server: PostgreSQL) -> Iterator[Engine]:
    server.reset()
    eng = make_engine(server.url)
    upgrade(eng)
    yield eng
    eng.dispose()


def rec(sop: str, study: str = "1.2.3", series: str = "1.2.3.10") -> InstanceRecord:
    return InstanceRecord(
        patient_id="PID1", issuer_of_patient_id="", patient_name="Doe^Jane", patient_birth_date="19600101",
        study_uid=study, study_date="20240312", study_time="1015", accession_number="A1",
        study_description="CT ABDOMEN", series_uid=series, modality="CT", series_number="1",
        series_description="ax", body_part="ABDOMEN", sop_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1", instance_number="1",
        path=f"{study}/{series}/{sop}.dcm", size=100, calling_aet="PACS",
    )  # fmt: skip


def test_migrations_match_the_models_on_postgresql(engine: Engine) -> None:
    upgrade(engine)  # idempotent
    with engine.connect() as conn:
        assert conn.dialect.name == "postgresql"
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_repeated_instance_is_one_row_and_a_quiet_study_gets_one_job(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions.begin() as s:
        record_instance(s, rec("1.2.3.1"), T0)
    with sessions.begin() as s:
        again = record_instance(s, replace(rec("1.2.3.1"), size=222), T0 + timedelta(seconds=1))
    assert again.replaced
    with sessions() as s:
        assert s.execute(select(func.count()).select_from(Instance)).scalar_one() == 1
        assert s.execute(select(Instance.size)).scalar_one() == 222
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=30)) == []
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=62)) == ["1.2.3"]
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=120)) == []
    with sessions() as s:
        assert s.execute(select(Job.kind, Job.state)).all() == [(PROCESS_STUDY, "pending")]


def test_concurrent_claimers_skip_locked_rows_and_never_share_a_job(engine: Engine) -> None:
    sessions = session_factory(engine)
    studies = [f"1.2.9.{i}" for i in range(1, 13)]
    for i, study in enumerate(studies):
        with sessions.begin() as s:
            at = T0 + timedelta(seconds=i)
            record_instance(s, rec(f"{study}.1", study=study, series=f"{study}.10"), at)
    assert sorted(mark_stable(sessions, 60, 900, now=T0 + timedelta(minutes=5))) == sorted(studies)

    # A claimer that holds its transaction open keeps its row locked; another claimer is not blocked by the
    # lock and takes the next job at once.
    now = T0 + timedelta(minutes=6)
    holder = sessions()
    held = claim(holder, (PROCESS_STUDY,), lease_s=60, now=now)
    assert held is not None
    with sessions.begin() as other:
        # Were the row not skipped, this claim would wait for the lock: fail fast instead of hanging.
        other.execute(text("SET LOCAL lock_timeout = '2s'"))
        nxt = claim(other, (PROCESS_STUDY,), lease_s=60, now=now)
        assert nxt is not None and nxt.id != held.id
    holder.commit()
    holder.close()

    claimed: list[int] = [held.id, nxt.id]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with sessions.begin() as s:
                job = claim(s, (PROCESS_STUDY,), lease_s=60, now=now)
                if job is None:
                    return
                with lock:
                    claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == len(studies)
    with sessions() as s:
        assert s.execute(select(Job.attempts).distinct()).scalars().all() == [1]


def test_serve_receives_a_study_into_postgresql(make_agent, server: PostgreSQL, tmp_path: Path) -> None:
    server.reset()
    agent = make_agent(LIVER_AGENT_DATABASE__URL=server.url).start()
    study = make_study(tmp_path / "study")
    sent = agent.store(*study.files)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    eng = make_engine(server.url)
    try:

        def state() -> str | None:
            with eng.connect() as conn:
                return conn.execute(
                    text("SELECT state FROM studies WHERE study_uid = :u"), {"u": study.study_uid}
                ).scalar()

        assert wait_until(lambda: state() == "stable", 30), agent.all_logs()[-3000:]
        with eng.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM instances")).scalar() == len(study.files)
            assert conn.execute(text("SELECT kind, state FROM jobs")).all() == [(PROCESS_STUDY, "pending")]
        assert not agent.db_path.exists()  # nothing went to SQLite
    finally:
        eng.dispose()
        assert agent.stop() == 0


def test_outbox_claims_skip_rows_locked_by_another_deliverer(engine: Engine) -> None:
    from agent import queue
    from agent.db.models import OutboxItem, OutboxState
    from agent.pipeline.outbox import OutboundObject
    from agent.pipeline.outbox import queue as queue_objects

    sessions = session_factory(engine)
    objects = [
        OutboundObject(Path(f"/r/{i}.dcm"), "1.2.840.10008.5.1.4.1.1.88.33", f"1.2.7.{i}") for i in range(5)
    ]
    with sessions.begin() as s:
        queue_objects(s, ["pacs"], objects, None, None, now=T0)
    due = [OutboxItem.state == OutboxState.PENDING.value, OutboxItem.lease_until.is_(None)]
    holder = sessions()
    held = queue.claim(
        holder, OutboxItem, where=due, order_by=[OutboxItem.id], lease_s=60, queue="outbox", limit=2
    )
    with sessions.begin() as other:
        other.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait for the holder's lock fails fast
        rest = queue.claim(
            other, OutboxItem, where=due, order_by=[OutboxItem.id], lease_s=60, queue="outbox", limit=5
        )
    holder.commit()
    holder.close()
    assert len(held) == 2 and len(rest) == 3
    assert not {x.id for x in held} & {x.id for x in rest}


def test_an_ohif_follow_up_through_the_pipeline_on_postgresql(engine: Engine, tmp_path: Path) -> None:
    """The OHIF v3 pair of tests/unit/pipeline/test_ohif_pipeline.py on PostgreSQL: no database error, the
    lesions paired by their labels."""
    from support.ohif import run_pipeline, spool_ohif_patient

    from agent.config import Settings
    from tests.unit.pipeline.test_ohif_pipeline import check_ohif_patient

    spool = tmp_path / "spool"
    spool_ohif_patient(
        spool,
        tmp_path,
        ("ohif3_labels_followup.dcm",),
        ("ohif3_labels_baseline.dcm", "ohif3_labels_followup.dcm"),
    )
    settings = Settings(
        storage={"spool_dir": str(spool), "min_free_mb": 0}, pipeline={"results_dir": str(tmp_path / "out")}
    )
    check_ohif_patient(run_pipeline(session_factory(engine), settings, spool))
