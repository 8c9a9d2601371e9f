"""Index, stability and job queue on a real SQLite file (WAL), migrated with the packaged Alembic scripts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from agent.db import Base, Instance, Job, Series, Study, make_engine, session_factory, upgrade
from agent.db.index import InstanceRecord, record_instance
from agent.pipeline.jobs import PROCESS_STUDY, claim, enqueue, finish
from agent.pipeline.stability import mark_stable

T0 = datetime(2024, 3, 12, 10, 0, tzinfo=UTC)


@pytest.fixture
def sessions(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def rec(sop: str = "1.2.3.1", series: str = "1.2.3.10", study: str = "1.2.3") -> InstanceRecord:
    return InstanceRecord(
        patient_id="PID1", issuer_of_patient_id="", patient_name="Doe^Jane", patient_birth_date="19600101",
        study_uid=study, study_date="20240312", study_time="1015", accession_number="A1",
        study_description="CT", series_uid=series, modality="CT", series_number="1", series_description="ax",
        body_part="ABDOMEN", sop_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1", instance_number="1",
        path=f"{study}/{series}/{sop}.dcm", size=100, calling_aet="PACS",
    )  # fmt: skip


def store(sessions, r: InstanceRecord, at: datetime):
    with sessions.begin() as s:
        return record_instance(s, r, at)


def count(sessions, model) -> int:
    with sessions() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_migrations_match_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    upgrade(engine)  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()


def test_repeated_sop_instance_updates_its_row(sessions) -> None:
    first = store(sessions, rec(), T0)
    assert first.previous_state is None and not first.replaced
    again = store(sessions, replace(rec(), size=222), T0 + timedelta(seconds=1))
    assert again.replaced and again.replaced_path is None
    # Filed again under another series: one row, and the old path is reported for removal.
    moved = store(sessions, rec(series="1.2.3.11"), T0 + timedelta(seconds=2))
    assert moved.replaced_path == "1.2.3/1.2.3.10/1.2.3.1.dcm"
    assert count(sessions, Instance) == 1
    assert count(sessions, Series) == 2
    with sessions() as s:
        inst = s.execute(select(Instance)).scalar_one()
        assert inst.path == "1.2.3/1.2.3.11/1.2.3.1.dcm"


def test_quiet_study_turns_stable_with_exactly_one_job(sessions) -> None:
    store(sessions, rec(sop="1.2.3.1"), T0)
    store(sessions, rec(sop="1.2.3.2"), T0 + timedelta(seconds=30))
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=89)) == []
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=91)) == ["1.2.3"]
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=200)) == []
    with sessions() as s:
        study = s.execute(select(Study)).scalar_one()
        assert study.state == "stable" and study.stable_at == T0 + timedelta(seconds=91)
        jobs = s.execute(select(Job)).scalars().all()
        assert [(j.kind, j.state, j.study_pk) for j in jobs] == [(PROCESS_STUDY, "pending", study.id)]


def test_trickling_study_is_forced_stable_at_max_wait(sessions) -> None:
    for i in range(20):
        store(sessions, rec(sop=f"1.2.3.{i + 1}"), T0 + timedelta(seconds=50 * i))
        now = T0 + timedelta(seconds=50 * i + 1)
        stable = mark_stable(sessions, 60, 900, now=now)
        if stable:
            break
    assert stable == ["1.2.3"]
    assert now >= T0 + timedelta(seconds=900)


def test_instance_for_a_stable_study_reopens_it_and_the_job_is_not_duplicated(sessions) -> None:
    store(sessions, rec(sop="1.2.3.1"), T0)
    mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=61))
    late = store(sessions, rec(sop="1.2.3.2"), T0 + timedelta(seconds=100))
    assert late.previous_state == "stable"
    with sessions() as s:
        study = s.execute(select(Study)).scalar_one()
        assert study.state == "receiving" and study.stable_at is None
        assert study.receiving_since == T0 + timedelta(seconds=100)
        # The pending job is not claimable while the study receives again.
        assert claim(s, (PROCESS_STUDY,), 60, now=T0 + timedelta(seconds=101)) is None
    mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=161))
    assert count(sessions, Job) == 1


def test_claim_lease_expiry_and_finish(sessions) -> None:
    store(sessions, rec(), T0)
    mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=61))
    with sessions.begin() as s:
        job = claim(s, (PROCESS_STUDY,), 30, now=T0 + timedelta(seconds=62))
        assert job is not None and job.attempts == 1 and job.state == "running"
    with sessions.begin() as s:
        assert claim(s, (PROCESS_STUDY,), 30, now=T0 + timedelta(seconds=70)) is None  # leased
    with sessions.begin() as s:
        again = claim(
            s, (PROCESS_STUDY,), 30, now=T0 + timedelta(seconds=93)
        )
        assert again is not None and again.id == job.id and again.attempts == 2
        finish(s, again)
    with sessions.begin() as s:
        assert claim(s, (PROCESS_STUDY,), 30, now=T0 + timedelta(seconds=200)) is None
        # A finished job lets a later stable episode enqueue a new one.
        _, created = enqueue(s, PROCESS_STUDY, job.study_pk)
        assert created


def test_enqueue_is_idempotent(sessions) -> None:
    store(sessions, rec(), T0)
    with sessions.begin() as s:
        study_pk = s.execute(select(Study.id)).scalar_one()
        a, created_a = enqueue(s, PROCESS_STUDY, study_pk)
        b, created_b = enqueue(s, PROCESS_STUDY, study_pk)
        assert created_a and not created_b and a.id == b.id
    assert count(sessions, Job) == 1


SR = "1.2.840.10008.5.1.4.1.1.88.22"


def test_a_study_receiving_only_srs_is_stable_after_the_sr_quiet_time(sessions) -> None:
    # Images first: the image quiet time applies.
    store(sessions, rec(), T0)
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=6), sr_quiet_s=5) == []
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=61), sr_quiet_s=5) == ["1.2.3"]
    with sessions.begin() as s:
        s.execute(Study.__table__.update().values(state="done"))
    # Later the radiologist's measurement SR arrives alone: stable 5 s after it, not 60 s.
    later = T0 + timedelta(minutes=30)
    store(sessions, replace(rec("1.2.3.99", series="1.2.3.99"), sop_class_uid=SR, modality="SR"), later)
    assert mark_stable(sessions, 60, 900, now=later + timedelta(seconds=4), sr_quiet_s=5) == []
    assert mark_stable(sessions, 60, 900, now=later + timedelta(seconds=5), sr_quiet_s=5) == ["1.2.3"]


def test_an_sr_arriving_with_images_waits_for_the_image_quiet_time(sessions) -> None:
    store(sessions, replace(rec("1.2.3.99", series="1.2.3.99"), sop_class_uid=SR, modality="SR"), T0)
    store(sessions, rec(), T0 + timedelta(seconds=1))
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=10), sr_quiet_s=5) == []
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=61), sr_quiet_s=5) == ["1.2.3"]
