"""``liver-agent db upgrade``: bring the database schema to the newest revision (``serve`` does it too)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.commands import settings_or_exit
from agent.config import mask_url
from agent.db import make_engine, upgrade
from agent.db.migrate import current_revision


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("db", help="database maintenance")
    sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = sub.add_parser("upgrade", parents=parents, help="apply the schema migrations")
    up.set_defaults(func=run)
    cur = sub.add_parser("current", parents=parents, help="print the schema revision")
    cur.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    url = settings.database.url.get_secret_value()
    engine = make_engine(url)
    try:
        if args.db_command == "upgrade":
            upgrade(engine)
        print(f"{mask_url(url)}: revision {current_revision(engine) or '(none)'}")
    except Exception as exc:
        print(f"liver-agent db {args.db_command}: {type(exc).__name__}: {str(exc)[:300]}")
        return 1
    finally:
        engine.dispose()
    return 0
