"""The radiologist's lesion pairing decisions: stored (who, when), then the study is assessed again.

A decision names a measurement group of a follow-up (its SR's SOP Instance UID and its Tracking UID) and
says it is the same lesion as an earlier one (``same`` with that lesion's id) or a new lesion (``new``).
The worklist's study page and the HTTP API (``confirm`` scope) both call :func:`record`. The re-run makes a
new output version (the decisions are part of its inputs) that supersedes the previous SR, and every later
assessment of the patient reuses the decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from agent.db.models import LesionPairing, Study, StudyState, utcnow
from agent.log import get_logger, uid_hash
from agent.pipeline.jobs import PROCESS_STUDY, enqueue, log_enqueued

log = get_logger(__name__)
GROUP_DECISIONS = ("same", "new")
LESION_DECISIONS = ("absent", "not_assessed")
DECISIONS = GROUP_DECISIONS + LESION_DECISIONS


@dataclass(frozen=True, slots=True)
class Decision:
    sr_sop_uid: str  # the follow-up group's SR ("" for a decision about an earlier lesion)
    tracking_uid: str  # "" when the group has none
    decision: str  # same | new (a group) | absent | not_assessed (an earlier lesion, ``lesion_id``)
    paired_with: str | None = None  # the earlier lesion's id, for "same"
    lesion_id: str = ""  # the earlier lesion absent or not assessed in this study


class PairingError(ValueError):
    """A decision that cannot be stored (unknown study, bad decision)."""


def record(sessions: sessionmaker[Session], study_uid: str, decisions: Sequence[Decision], who: str) -> int:
    """Store the decisions for the study's patient and queue the study again; returns the job id."""
    if not decisions:
        raise PairingError("no decision given")
    for d in decisions:
        if d.decision not in DECISIONS:
            raise PairingError(f"decision {d.decision!r} is not one of {', '.join(DECISIONS)}")
        if d.decision == "same" and not d.paired_with:
            raise PairingError("a 'same' decision names the earlier lesion (paired_with)")
        if d.decision in LESION_DECISIONS:
            if not d.lesion_id or len(d.lesion_id) > 64:
                raise PairingError(f"an {d.decision!r} decision names the earlier lesion (lesion_id)")
        elif not d.sr_sop_uid or len(d.sr_sop_uid) > 64 or len(d.tracking_uid) > 64:
            raise PairingError("a decision names its group by SR SOP Instance UID and Tracking UID")
    now = utcnow()
    with sessions.begin() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            raise PairingError("no such study")
        for d in decisions:
            about_lesion = d.decision in LESION_DECISIONS
            subject = {
                "study_uid": study_uid,
                "sr_sop_uid": "" if about_lesion else d.sr_sop_uid,
                "tracking_uid": "" if about_lesion else d.tracking_uid,
                "lesion_id": d.lesion_id if about_lesion else "",
            }
            # One decision per group whichever study page it was made on; per (study, lesion) otherwise.
            keys = subject if about_lesion else {k: v for k, v in subject.items() if k != "study_uid"}
            row = session.scalar(
                select(LesionPairing).where(*(getattr(LesionPairing, k) == v for k, v in keys.items()))
            )
            if row is None:
                row = LesionPairing(**subject)
                session.add(row)
            row.patient_pk = study.patient_pk
            row.study_uid = study_uid
            row.decision = d.decision
            row.paired_with = d.paired_with if d.decision == "same" else None
            row.decided_by = who[:64]
            row.decided_at = now
        if study.state != StudyState.RECEIVING.value:
            stable = StudyState.STABLE.value
            session.execute(update(Study).where(Study.id == study.id).values(state=stable, updated_at=now))
        job, created = enqueue(session, PROCESS_STUDY, study.id, now)
        session.flush()
        job_id = job.id
        if created:
            log_enqueued(job, study_uid)
    log.info("pairing.recorded", study=uid_hash(study_uid), decisions=len(decisions), job=job_id)
    return job_id
