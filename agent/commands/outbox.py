"""``liver-agent outbox list|retry``: inspect deliveries; make quarantined (or waiting) ones due now."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import select

from agent.commands import settings_or_exit
from agent.db import make_engine, session_factory, upgrade
from agent.db.models import OutboxItem, OutboxState
from agent.log import uid_hash
from agent.pipeline import outbox


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("outbox", parents=parents, help="list or retry deliveries to the PACS")
    sub = p.add_subparsers(dest="outbox_command", metavar="SUBCOMMAND")
    ls = sub.add_parser("list", parents=parents, help="list deliveries (default: not yet delivered)")
    ls.add_argument(
        "--state",
        choices=[s.value for s in OutboxState] + ["all"],
        help="only this state (default: undelivered)",
    )
    ls.set_defaults(func=run_list)
    rt = sub.add_parser("retry", parents=parents, help="send quarantined or waiting deliveries now")
    rt.add_argument("ids", nargs="*", type=int, metavar="ID", help="rows to retry (default: all undelivered)")
    rt.set_defaults(func=run_retry)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    engine = make_engine(settings.database.url.get_secret_value())
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            query = select(OutboxItem).order_by(OutboxItem.id)
            if args.state and args.state != "all":
                query = query.where(OutboxItem.state == args.state)
            elif not args.state:
                query = query.where(OutboxItem.state != OutboxState.DELIVERED.value)
            rows = session.execute(query).scalars().all()
    finally:
        engine.dispose()
    print(
        f"{'id':>6} {'state':<12} {'destination':<12} {'attempts':>8} {'next attempt':<26} sop / last error"
    )
    for r in rows:
        print(
            f"{r.id:>6} {r.state:<12} {r.destination:<12} {r.attempts:>8} "
            f"{r.next_attempt_at.isoformat(timespec='seconds'):<26} "
            f"{uid_hash(r.sop_uid)} {r.last_error or ''}"
        )
    return 0


def run_retry(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    engine = make_engine(settings.database.url.get_secret_value())
    try:
        upgrade(engine)
        with session_factory(engine).begin() as session:
            n = outbox.retry(session, args.ids or None)
    finally:
        engine.dispose()
    print(f"{n} deliveries due now")
    return 0 if n or not args.ids else 2
