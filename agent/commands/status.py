"""``liver-agent status``: studies by state, outbox depth, oldest pending delivery, active operational alerts.

Operational alerts are those of the alerts store (``agent.alerts.store``: the rows the sinks and
``/api/alerts`` see), open or acknowledged but not resolved, counted by code.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import func, select

from agent.commands import settings_or_exit
from agent.db import make_engine, session_factory, upgrade
from agent.db.models import AlertRecord, AlertSource, AlertState, Job, Study, utcnow
from agent.pipeline.outbox import depth


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("status", parents=parents, help="studies by state and delivery backlog")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    engine = make_engine(settings.database.url.get_secret_value())
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            studies = dict(session.execute(select(Study.state, func.count()).group_by(Study.state)).all())
            jobs = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            out = depth(session)
            alerts = dict(
                session.execute(
                    select(AlertRecord.code, func.count())
                    .where(
                        AlertRecord.source == AlertSource.OPERATIONAL.value,
                        AlertRecord.state != AlertState.RESOLVED.value,
                    )
                    .group_by(AlertRecord.code)
                ).all()
            )
    finally:
        engine.dispose()
    age = (utcnow() - out.oldest_pending).total_seconds() if out.oldest_pending else None
    data: dict[str, Any] = {
        "studies": studies,
        "jobs": jobs,
        "outbox": {
            "pending": out.pending,
            "quarantined": out.quarantined,
            "delivered": out.delivered,
            "oldest_pending": out.oldest_pending.isoformat() if out.oldest_pending else None,
            "oldest_pending_age_s": round(age, 1) if age is not None else None,
        },
        "operational_alerts": alerts,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("studies: " + (", ".join(f"{k} {v}" for k, v in sorted(studies.items())) or "none"))
    print("jobs: " + (", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none"))
    oldest = f"{data['outbox']['oldest_pending']} ({age:.0f} s ago)" if age is not None else "-"
    print(
        f"outbox: {out.pending} pending, {out.quarantined} quarantined, {out.delivered} delivered; "
        f"oldest pending: {oldest}"
    )
    print("operational alerts: " + (", ".join(f"{k} {v}" for k, v in sorted(alerts.items())) or "none"))
    return 0
