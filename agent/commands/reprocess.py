"""``liver-agent reprocess STUDY_UID``: queue a study for processing again (the running service picks it up).

Processing is idempotent: unchanged inputs give the same output version and nothing new is sent; changed
inputs give a new version that supersedes the earlier one.
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import select, update

from agent.commands import settings_or_exit
from agent.db import make_engine, session_factory, upgrade
from agent.db.models import Study, StudyState, utcnow
from agent.dicom.spool import is_valid_uid
from agent.pipeline.jobs import PROCESS_STUDY, enqueue, log_enqueued


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("reprocess", parents=parents, help="process a received study again")
    p.add_argument("study_uid", metavar="STUDY_UID", help="Study Instance UID of a study the agent received")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    if not is_valid_uid(args.study_uid):
        print(f"liver-agent reprocess: {args.study_uid!r} is not a valid UID")
        return 2
    engine = make_engine(settings.database.url.get_secret_value())
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions.begin() as session:
            study = session.execute(
                select(Study).where(Study.study_uid == args.study_uid)
            ).scalar_one_or_none()
            if study is None:
                print("liver-agent reprocess: no such study in the index")
                return 2
            now = utcnow()
            if study.state != StudyState.RECEIVING.value:
                session.execute(
                    update(Study)
                    .where(Study.id == study.id)
                    .values(state=StudyState.STABLE.value, updated_at=now)
                )
            job, created = enqueue(session, PROCESS_STUDY, study.id, now)
            session.flush()
            if created:
                log_enqueued(job, args.study_uid)
            print(f"study queued for processing (job {job.id}{'' if created else ', already queued'})")
    finally:
        engine.dispose()
    return 0
