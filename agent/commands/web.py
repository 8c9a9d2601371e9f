"""``liver-agent web hash-token``: print the hash of an API token or a password for the configuration.

``--generate`` draws a new random token and prints it once (keep it) with its hash; otherwise the secret is
read from the terminal without echo, or from the first line of standard input. The configuration holds only
the hash (``web.tokens[].hash``, ``web.users[].password_hash``).
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from typing import Any

from agent.web.auth import hash_secret


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


def run(args: argparse.Namespace) -> int:
    if args.generate:
        secret = secrets.token_urlsafe(32)
        print(f"token: {secret}")
        print(f"hash:  {hash_secret(secret, args.method)}")
        return 0
    secret = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not secret:
        print("liver-agent web hash-token: empty secret", file=sys.stderr)
        return 2
    print(hash_secret(secret, args.method))
    return 0
