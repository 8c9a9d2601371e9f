"""Study jobs on the durable queue (``agent.queue``): enqueue idempotently, claim with a lease, finish.

A job row outlives crashes: a claimed job whose lease has expired (the worker died) is claimed again by any
worker of any node (``agent.queue.claim``). The back-off of a failed attempt and of a peer outage are
``agent.queue.RetryPolicy`` objects.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from agent import queue
from agent.db.models import ACTIVE_JOB_STATES, Job, JobState, Study, StudyState, utcnow
from agent.log import get_logger, uid_hash
from agent.pipeline.nodes import may_run
from agent.queue import Lease, RetryPolicy

log = get_logger(__name__)

PROCESS_STUDY = "process_study"


def enqueue(
    session: Session, kind: str, study_pk: int | None, now: datetime | None = None
) -> tuple[Job, bool]:
    """Return the active (pending or running) job of ``kind`` for the study, creating it if there is none.

    The second value says whether a new row was created. A unique partial index guarantees at most one
    active job per (kind, study) even when two enqueuers race. The caller commits.
    """
    existing = _active(session, kind, study_pk)
    if existing is not None:
        return existing, False
    now = now or utcnow()
    job = Job(
        kind=kind, study_pk=study_pk, state=JobState.PENDING.value, attempts=0, created_at=now, updated_at=now
    )
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        found = _active(session, kind, study_pk)
        if found is None:
            raise
        return found, False
    return job, True


def _active(session: Session, kind: str, study_pk: int | None) -> Job | None:
    return session.execute(
        select(Job).where(Job.kind == kind, Job.study_pk == study_pk, Job.state.in_(ACTIVE_JOB_STATES))
    ).scalar_one_or_none()


def claimable(now: datetime) -> list[ColumnElement[bool]]:
    """A job is due when pending (and past ``not_before``), or running with an expired lease."""
    return [
        or_(
            Job.state == JobState.PENDING.value,
            and_(Job.state == JobState.RUNNING.value, Job.lease_until < now),
        ),
        or_(Job.not_before.is_(None), Job.not_before <= now),
    ]


def claim_lease(
    session: Session,
    kinds: tuple[str, ...],
    lease_s: float,
    now: datetime | None = None,
    node: tuple[str, float] | None = None,
) -> tuple[Job, Lease] | None:
    """Claim the oldest claimable job of one of ``kinds`` (see :func:`claimable`) and its lease.

    A ``process_study`` job is claimable only while its study is not receiving again (an instance that
    reopened the study postpones the work until the study is stable once more). With ``node`` (name, seconds
    after which a silent node is gone), only the jobs that node may run (``agent.pipeline.nodes.may_run``).
    The caller commits.
    """
    now = now or utcnow()

    def not_receiving(query: Select[Any]) -> Select[Any]:
        query = query.outerjoin(Study, Study.id == Job.study_pk).where(
            or_(Job.study_pk.is_(None), Study.state != StudyState.RECEIVING.value)
        )
        if node is not None:
            query = query.where(or_(Job.study_pk.is_(None), may_run(node[0], node[1], now)))
        return query

    leases = queue.claim(
        session,
        Job,
        where=[Job.kind.in_(kinds), *claimable(now)],
        order_by=[Job.id],
        lease_s=lease_s,
        queue="jobs",
        values={"state": JobState.RUNNING.value, "attempts": Job.attempts + 1, "updated_at": now},
        refine=not_receiving,
        now=now,
    )
    if not leases:
        return None
    job = session.get(Job, leases[0].id, populate_existing=True)
    assert job is not None
    log.info("job.claimed", job=job.id, kind=job.kind, attempt=job.attempts)
    return job, leases[0]


def claim(
    session: Session, kinds: tuple[str, ...], lease_s: float, now: datetime | None = None
) -> Job | None:
    """:func:`claim_lease` without the lease (callers that finish in the same transaction)."""
    claimed = claim_lease(session, kinds, lease_s, now)
    return claimed[0] if claimed else None


def finish(session: Session, job: Job, error: str | None = None, now: datetime | None = None) -> None:
    """Mark a claimed job done, or failed with ``error``. The caller commits."""
    now = now or utcnow()
    job.state = JobState.FAILED.value if error else JobState.DONE.value
    job.last_error = error
    job.lease_until = None
    job.outage_retries = 0
    job.updated_at = now
    queue.record_outcome("jobs", "failed" if error else "done")
    log.info("job.finished", job=job.id, kind=job.kind, state=job.state)


def retry_later(session: Session, job: Job, error: str, delay_s: float, now: datetime | None = None) -> None:
    """Give a claimed job back as pending, claimable again ``delay_s`` from now. The caller commits."""
    now = now or utcnow()
    job.state = JobState.PENDING.value
    job.last_error = error
    job.lease_until = None
    job.not_before = now + timedelta(seconds=delay_s)
    job.updated_at = now
    queue.record_outcome("jobs", "retry")
    log.info("job.retry_later", job=job.id, kind=job.kind, attempt=job.attempts, delay_s=delay_s)


def outage_policy(base_s: float, cap_s: float) -> RetryPolicy:
    """The back-off while a peer is unreachable: ``base_s`` (at least 1 s) doubling, capped at ``cap_s``."""
    return RetryPolicy(max(base_s, 1.0), 2.0, cap_s)


def outage_delay(retries: int, base_s: float, cap_s: float) -> float:
    """Back-off before retry ``retries + 1`` while a peer is unreachable (:func:`outage_policy`)."""
    return outage_policy(base_s, cap_s).delay(retries + 1)


def retry_after_outage(
    session: Session, job: Job, error: str, base_s: float, cap_s: float, now: datetime | None = None
) -> float:
    """Give a claimed job back because a peer was unreachable: the attempt its claim counted is returned
    (an outage never uses up ``max_attempts``) and it waits a capped, doubling back-off. The caller commits;
    returns the delay."""
    delay = outage_delay(job.outage_retries or 0, base_s, cap_s)
    job.attempts = max((job.attempts or 0) - 1, 0)
    job.outage_retries = (job.outage_retries or 0) + 1
    retry_later(session, job, error, delay, now)
    log.info("job.outage_retry", job=job.id, kind=job.kind, outage_retries=job.outage_retries, delay_s=delay)
    return delay


def log_enqueued(job: Job, study_uid: str | None) -> None:
    log.info("job.enqueued", job=job.id, kind=job.kind, study=uid_hash(study_uid))
