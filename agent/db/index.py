"""Insert-or-update of the index for one received instance, in one short transaction.

Used by the C-STORE handler after the file is safely in the spool. A repeated SOP Instance UID updates its
row (never a second row); an instance for a study that is no longer receiving reopens the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from agent.db.models import Instance, Patient, Series, Study, StudyState


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What the index stores about one instance (values already validated by the receiver)."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    study_uid: str
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    series_uid: str
    modality: str | None
    series_number: str | None
    series_description: str | None
    body_part: str | None
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: str | None
    path: str
    size: int
    calling_aet: str | None


@dataclass(frozen=True, slots=True)
class Recorded:
    study_pk: int
    # State of the study before this instance (None: the study is new).
    previous_state: str | None
    # Spool path of an earlier copy of this SOP Instance filed elsewhere (to remove), if any.
    replaced_path: str | None
    replaced: bool


def _insert(session: Session, model: Any) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"database dialect {name!r} is not supported")


def _clip(value: str | None, n: int) -> str | None:
    return None if value is None else value[:n]


def record_instance(session: Session, rec: InstanceRecord, now: datetime) -> Recorded:
    """Index ``rec`` (the caller commits). Returns what changed, for logging and clean-up."""
    ins = _insert(session, Patient)
    stmt = ins.values(
        patient_id=rec.patient_id[:64],
        issuer=rec.issuer_of_patient_id[:64],
        name=_clip(rec.patient_name, 324),
        birth_date=_clip(rec.patient_birth_date, 8),
        created_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Patient.patient_id, Patient.issuer],
        set_={"name": stmt.excluded.name, "birth_date": stmt.excluded.birth_date},
    ).returning(Patient.id)
    patient_pk = session.execute(stmt).scalar_one()

    previous_state = session.execute(select(Study.state).where(Study.study_uid == rec.study_uid)).scalar()
    ins = _insert(session, Study)
    stmt = ins.values(
        study_uid=rec.study_uid,
        patient_pk=patient_pk,
        study_date=_clip(rec.study_date, 8),
        study_time=_clip(rec.study_time, 16),
        accession_number=_clip(rec.accession_number, 16),
        description=_clip(rec.study_description, 64),
        state=StudyState.RECEIVING.value,
        first_received_at=now,
        last_received_at=now,
        receiving_since=now,
        updated_at=now,
    )
    receiving = Study.state == StudyState.RECEIVING.value
    stmt = stmt.on_conflict_do_update(
        index_elements=[Study.study_uid],
        set_={
            "last_received_at": now,
            "receiving_since": case((receiving, Study.receiving_since), else_=now),
            "stable_at": case((receiving, Study.stable_at), else_=None),
            "state": StudyState.RECEIVING.value,
            "updated_at": now,
        },
    ).returning(Study.id)
    study_pk = session.execute(stmt).scalar_one()

    ins = _insert(session, Series)
    stmt = ins.values(
        series_uid=rec.series_uid,
        study_pk=study_pk,
        modality=_clip(rec.modality, 16),
        series_number=_clip(rec.series_number, 12),
        description=_clip(rec.series_description, 64),
        body_part=_clip(rec.body_part, 16),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Series.series_uid], set_={"study_pk": stmt.excluded.study_pk}
    ).returning(Series.id)
    series_pk = session.execute(stmt).scalar_one()

    old_path = session.execute(select(Instance.path).where(Instance.sop_uid == rec.sop_uid)).scalar()
    ins = _insert(session, Instance)
    stmt = ins.values(
        sop_uid=rec.sop_uid,
        series_pk=series_pk,
        sop_class_uid=rec.sop_class_uid,
        transfer_syntax_uid=rec.transfer_syntax_uid,
        instance_number=_clip(rec.instance_number, 12),
        path=rec.path,
        size=rec.size,
        calling_aet=rec.calling_aet,
        received_at=now,
    )
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[Instance.sop_uid],
        set_={
            "series_pk": ex.series_pk,
            "sop_class_uid": ex.sop_class_uid,
            "transfer_syntax_uid": ex.transfer_syntax_uid,
            "instance_number": ex.instance_number,
            "path": ex.path,
            "size": ex.size,
            "calling_aet": ex.calling_aet,
            "received_at": ex.received_at,
        },
    )
    session.execute(stmt)
    return Recorded(
        study_pk=study_pk,
        previous_state=previous_state,
        replaced_path=old_path if old_path is not None and old_path != rec.path else None,
        replaced=old_path is not None,
    )
