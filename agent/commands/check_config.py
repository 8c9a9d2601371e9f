"""``liver-agent check-config``: print the effective settings (secrets masked)."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from agent.commands import settings_or_exit
from agent.config import masked_dump


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "check-config", parents=parents, help="validate the configuration and print the effective settings"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    print(yaml.safe_dump(masked_dump(settings), sort_keys=False), end="")
    return 0
