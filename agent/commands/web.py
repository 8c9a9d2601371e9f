"""``liver-agent web``: worklist users and API token hashes.

``add-user NAME`` / ``set-password NAME`` store a user of the worklist pages in the database (the password is
asked twice on a terminal, or read from the first line of standard input); ``remove-user NAME`` deletes one.
Changing a password or removing a user ends that user's open sessions. ``list-users`` shows every user and
where it is kept (users may also be listed in the configuration, ``web.users``).

``hash-token`` prints the hash of an API token or password for the configuration (``web.tokens[].hash``,
``web.users[].password_hash``); ``--generate`` draws a new random token and prints it once (keep it) with
its hash.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from typing import Any

from agent.commands import settings_or_exit


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("web", parents=parents, help="HTTP service helpers")
    sub = p.add_subparsers(dest="web_command", required=True)
    h = sub.add_parser("hash-token", help="print the hash of an API token or password for the configuration")
    h.add_argument("--generate", action="store_true", help="draw a new random token; print it and its hash")
    h.add_argument(
        "--method",
        choices=("pbkdf2_sha256", "sha256"),
        default="pbkdf2_sha256",
        help="pbkdf2_sha256 (default; use it for passwords) or sha256 (long random tokens only)",
    )
    h.set_defaults(func=run)
    add = sub.add_parser("add-user", parents=parents, help="add a worklist user (password asked or on stdin)")
    add.add_argument("name", help="user name (login)")
    add.add_argument("--display-name", help="name shown in the pages")
    add.set_defaults(func=run_users)
    pw = sub.add_parser(
        "set-password", parents=parents, help="change a user's password and end their sessions"
    )
    pw.add_argument("name")
    pw.set_defaults(func=run_users)
    rm = sub.add_parser("remove-user", parents=parents, help="remove a worklist user and end their sessions")
    rm.add_argument("name")
    rm.set_defaults(func=run_users)
    ls = sub.add_parser("list-users", parents=parents, help="list worklist users and where each is kept")
    ls.set_defaults(func=run_users)


def _secret(prompt: str, confirm: bool = False) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    secret = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != secret:
        return ""
    return secret


def run(args: argparse.Namespace) -> int:
    from agent.web.auth import hash_secret

    if args.generate:
        secret = secrets.token_urlsafe(32)
        print(f"token: {secret}")
        print(f"hash:  {hash_secret(secret, args.method)}")
        return 0
    secret = _secret("secret: ")
    if not secret:
        print("liver-agent web hash-token: empty secret", file=sys.stderr)
        return 2
    print(hash_secret(secret, args.method))
    return 0


def run_users(args: argparse.Namespace) -> int:
    from agent.db import make_engine, session_factory, upgrade
    from agent.web import users

    command = f"liver-agent web {args.web_command}"
    settings = settings_or_exit(args.config)
    password = ""
    if args.web_command in ("add-user", "set-password"):
        password = _secret(f"password for {args.name}: ", confirm=True)
        if not password:
            print(f"{command}: no password given (or the two did not match)", file=sys.stderr)
            return 2
    engine = make_engine(settings.database.url.get_secret_value())
    try:
        upgrade(engine)
        with session_factory(engine).begin() as session:
            configured = settings.web.users
            if args.web_command == "add-user":
                users.add_user(session, configured, args.name, password, args.display_name)
                print(f"added {args.name}; log in at the worklist")
            elif args.web_command == "set-password":
                ended = users.set_password(session, configured, args.name, password)
                print(f"password of {args.name} changed; {ended} open session(s) ended")
            elif args.web_command == "remove-user":
                ended = users.remove_user(session, configured, args.name)
                print(f"removed {args.name}; {ended} open session(s) ended")
            else:
                for name, where in users.list_users(session, configured):
                    print(f"{name}\t{where}")
    except users.UserError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0
