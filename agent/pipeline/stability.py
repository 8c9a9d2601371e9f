"""Study completeness: a study is ``stable`` once no instance arrived for ``stable_after_s``.

A measurement SR is complete on arrival: a study whose instances of the current receiving episode are all
SRs (a radiologist saved measurements on a study already here) is stable after ``sr_quiet_s`` instead, so
the response follows the measurements within seconds.

It is forced stable ``max_wait_s`` after its receiving episode began, when instances keep trickling in. All
timestamps live in the database (written by the C-STORE handler), so a restart loses no pending study: the
first tick after start finds whatever became quiet meanwhile. Each study that turns stable gets exactly one
durable ``process_study`` job row, in the same transaction as its state change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from agent.config import StabilitySettings
from agent.db.models import Instance, Series, Study, StudyState, utcnow
from agent.log import get_logger, uid_hash
from agent.pipeline.jobs import PROCESS_STUDY, enqueue, log_enqueued
from agent.pipeline.nodes import SR_ROOT
from agent.scheduling import add_periodic

log = get_logger(__name__)


def mark_stable(
    sessions: sessionmaker[Session],
    stable_after_s: float,
    max_wait_s: float,
    now: datetime | None = None,
    sr_quiet_s: float | None = None,
) -> list[str]:
    """Turn every quiet (or overdue) receiving study stable and enqueue its job; return their UIDs.

    With ``sr_quiet_s``, a study whose instances received in this episode are all SRs is quiet after that
    long."""
    now = now or utcnow()
    quiet_before = now - timedelta(seconds=stable_after_s)
    overdue_before = now - timedelta(seconds=max_wait_s)
    quiet = [Study.last_received_at <= quiet_before, Study.receiving_since <= overdue_before]
    if sr_quiet_s is not None and sr_quiet_s < stable_after_s:
        not_sr = (
            select(Instance.id)
            .join(Series, Series.id == Instance.series_pk)
            .where(
                Series.study_pk == Study.id,
                Instance.received_at >= Study.receiving_since,
                Instance.sop_class_uid.not_like(f"{SR_ROOT}%"),
            )
            .exists()
        )
        quiet.append(and_(Study.last_received_at <= now - timedelta(seconds=sr_quiet_s), ~not_sr))
    with sessions() as session:
        candidates = session.execute(
            select(Study.id, Study.study_uid, Study.last_received_at, Study.receiving_since).where(
                Study.state == StudyState.RECEIVING.value, or_(*quiet)
            )
        ).all()
    stabilised = []
    for study_pk, study_uid, last, since in candidates:
        with sessions.begin() as session:
            # Compare-and-set: an instance that arrived since the query keeps the study receiving.
            result = session.execute(
                update(Study)
                .where(Study.id == study_pk, Study.state == StudyState.RECEIVING.value)
                .where(Study.last_received_at == last)
                .values(state=StudyState.STABLE.value, stable_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if cast(CursorResult[Any], result).rowcount != 1:
                continue
            job, created = enqueue(session, PROCESS_STUDY, study_pk, now)
            session.flush()
        forced = last > quiet_before and since <= overdue_before
        log.info(
            "study.stable",
            study=uid_hash(study_uid),
            forced=forced,
            sr_only=last > quiet_before and not forced,
            quiet_s=round((now - last).total_seconds(), 1),
            receiving_s=round((now - since).total_seconds(), 1),
        )
        if created:
            log_enqueued(job, study_uid)
        stabilised.append(study_uid)
    return stabilised


class StabilityMonitor:
    """Runs ``mark_stable`` every ``check_interval_s`` on the service's scheduler.

    ``on_stable`` (optional) is called after a tick that turned studies stable (the worker's wake-up).
    """

    def __init__(self, sessions: sessionmaker[Session], settings: StabilitySettings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.on_stable: Callable[[], None] | None = None

    def tick(self) -> None:
        stable = mark_stable(
            self.sessions,
            self.settings.stable_after_s,
            self.settings.max_wait_s,
            sr_quiet_s=self.settings.sr_quiet_s,
        )
        if stable and self.on_stable is not None:
            self.on_stable()

    def schedule(self, scheduler: BackgroundScheduler) -> None:
        add_periodic(
            scheduler, self.tick, self.settings.check_interval_s, "stability", "study.stability_check_failed"
        )
