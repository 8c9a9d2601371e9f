"""Retrieved instances (answers to our own C-MOVE / C-GET) are indexed but never (re)open their study."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from agent.db import Instance, Job, Study, make_engine, session_factory, upgrade
from agent.db.index import RETRIEVED, IndexWriter, InstanceRecord, record_instance
from agent.pipeline.stability import mark_stable

T0 = datetime(2024, 3, 12, 10, 0, tzinfo=UTC)


@pytest.fixture
def sessions(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def rec(sop: str, study: str = "1.2.3", series: str = "1.2.3.10", origin: str = "routed") -> InstanceRecord:
    return InstanceRecord(
        patient_id="PID1", issuer_of_patient_id="", patient_name="Doe^Jane", patient_birth_date="19600101",
        study_uid=study, study_date="20230312", study_time="1015", accession_number="A1",
        study_description="CT", series_uid=series, modality="SR", series_number="1", series_description="m",
        body_part="ABDOMEN", sop_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
        transfer_syntax_uid="1.2.840.10008.1.2.1", instance_number="1",
        path=f"{study}/{series}/{sop}.dcm", size=100, calling_aet="PACS", origin=origin,
    )  # fmt: skip


def store(sessions, r: InstanceRecord, at: datetime):
    with sessions.begin() as s:
        return record_instance(s, r, at)


def study_row(sessions, study_uid: str = "1.2.3") -> tuple[str, datetime, datetime, datetime | None]:
    with sessions() as s:
        st = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        return st.state, st.last_received_at, st.receiving_since, st.stable_at


def jobs(sessions) -> int:
    with sessions() as s:
        return s.execute(select(func.count()).select_from(Job)).scalar_one()


def origins(sessions) -> dict[str, str]:
    with sessions() as s:
        return dict(s.execute(select(Instance.sop_uid, Instance.origin)).all())


def test_study_first_created_by_a_retrieval_is_prior_and_never_turns_stable(sessions) -> None:
    got = store(sessions, rec("1.2.3.1", origin=RETRIEVED), T0)
    assert got.previous_state is None and not got.reopened
    assert study_row(sessions)[0] == "prior"
    # Neither the quiet time nor the forced maximum wait ever picks it up.
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=61)) == []
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(days=30)) == []
    assert jobs(sessions) == 0
    assert origins(sessions) == {"1.2.3.1": "retrieved"}


def test_retrieval_into_a_done_study_leaves_its_state_and_clock_alone(sessions) -> None:
    store(sessions, rec("1.2.3.1"), T0)
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=61)) == ["1.2.3"]
    with sessions.begin() as s:
        s.execute(Study.__table__.update().values(state="done"))
    before = study_row(sessions)
    got = store(sessions, rec("1.2.3.2", origin=RETRIEVED), T0 + timedelta(seconds=500))
    assert got.previous_state == "done" and not got.reopened
    assert study_row(sessions) == before
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=2000)) == []
    assert jobs(sessions) == 1  # only the first episode's


def test_retrieval_into_a_receiving_study_does_not_extend_its_quiet_time(sessions) -> None:
    store(sessions, rec("1.2.3.1"), T0)
    store(sessions, rec("1.2.3.2", origin=RETRIEVED), T0 + timedelta(seconds=50))
    assert mark_stable(sessions, 60, 900, now=T0 + timedelta(seconds=61)) == ["1.2.3"]


def test_routed_instance_for_a_prior_study_opens_it_like_a_new_study(sessions) -> None:
    store(sessions, rec("1.2.3.1", origin=RETRIEVED), T0)
    later = T0 + timedelta(days=1)
    got = store(sessions, rec("1.2.3.2"), later)
    assert got.previous_state == "prior" and got.reopened
    state, last, since, stable_at = study_row(sessions)
    assert (state, last, since, stable_at) == ("receiving", later, later, None)
    assert mark_stable(sessions, 60, 900, now=later + timedelta(seconds=61)) == ["1.2.3"]
    assert jobs(sessions) == 1


def test_the_origin_follows_the_latest_copy_of_an_instance(sessions) -> None:
    store(sessions, rec("1.2.3.1", origin=RETRIEVED), T0)
    # The PACS routes the same instance to us afterwards: new data for the study, which opens.
    again = store(sessions, rec("1.2.3.1"), T0 + timedelta(seconds=5))
    assert again.replaced and again.reopened
    assert origins(sessions) == {"1.2.3.1": "routed"}
    assert study_row(sessions)[0] == "receiving"


def test_index_writer_batches_keep_each_origin(sessions) -> None:
    writer = IndexWriter(sessions.kw["bind"], lambda: T0)
    try:
        writer.record(rec("1.2.9.1", study="1.2.9", series="1.2.9.1", origin=RETRIEVED))
        writer.record(replace(rec("1.2.8.1", study="1.2.8", series="1.2.8.1")))
    finally:
        writer.close()
    with sessions() as s:
        states = dict(s.execute(select(Study.study_uid, Study.state)).all())
    assert states == {"1.2.9": "prior", "1.2.8": "receiving"}
    assert origins(sessions) == {"1.2.9.1": "retrieved", "1.2.8.1": "routed"}


def test_listener_writer_on_sqlite_writes_the_same_rows_as_record_instance(tmp_path: Path) -> None:
    """The IndexWriter's direct SQLite path and the SQLAlchemy upserts leave identical tables."""
    steps: list[tuple[InstanceRecord | str, datetime]] = [
        (rec("1.2.3.1"), T0),
        (rec("1.2.3.2"), T0 + timedelta(seconds=1)),
        (replace(rec("1.2.3.3"), patient_name="Doe^Janet"), T0 + timedelta(seconds=2)),
        (rec("1.2.7.1", study="1.2.7", series="1.2.7.1", origin=RETRIEVED), T0 + timedelta(seconds=3)),
        (rec("1.2.7.2", study="1.2.7", series="1.2.7.1", origin=RETRIEVED), T0 + timedelta(seconds=4)),
        ("UPDATE studies SET state = 'done', stable_at = '2024-03-12 10:00:30.000000'", T0),
        (rec("1.2.3.4", origin=RETRIEVED), T0 + timedelta(seconds=5)),
        (rec("1.2.3.5"), T0 + timedelta(seconds=6)),  # reopens
        (rec("1.2.7.3", study="1.2.7", series="1.2.7.2"), T0 + timedelta(seconds=7)),  # routed: opens
        (rec("1.2.3.1", series="1.2.3.11"), T0 + timedelta(seconds=8)),  # filed again elsewhere
        (replace(rec("1.2.3.2"), size=999, origin=RETRIEVED), T0 + timedelta(seconds=9)),
    ]
    dumps = []
    for kind in ("core", "writer"):
        engine = make_engine(f"sqlite:///{tmp_path / kind}.db")
        upgrade(engine)
        sessions = session_factory(engine)
        clock = [T0]
        writer = IndexWriter(engine, lambda clock=clock: clock[0]) if kind == "writer" else None
        results = []
        for step, at in steps:
            if isinstance(step, str):
                with engine.begin() as conn:
                    conn.exec_driver_sql(step)
                continue
            clock[0] = at
            results.append(writer.record(step) if writer else store(sessions, step, at))
        if writer:
            writer.close()
        with engine.connect() as conn:
            tables = {
                t: conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY id").all()
                for t in ("patients", "studies", "series", "instances")
            }
        dumps.append((results, tables))
        engine.dispose()
    assert dumps[0] == dumps[1]
    results, tables = dumps[0]
    assert [r.reopened for r in results] == [False] * 6 + [True, True, False, False]
