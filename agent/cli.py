"""The ``liver-agent`` command: one sub-command per module in ``agent/commands``.

Each command module exposes ``register(subparsers, parents)``; it adds its parser and sets ``func`` to a
function taking the parsed arguments and returning the exit code. Exit codes: 0 success, 1 failure at run
time, 2 invalid input or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__

# Order is the order of ``liver-agent --help``.
COMMAND_MODULES = (
    "agent.commands.serve",
    "agent.commands.echo",
    "agent.commands.assess",
    "agent.commands.sr",
    "agent.commands.check_config",
    "agent.commands.db",
    "agent.commands.reprocess",
    "agent.commands.status",
    "agent.commands.outbox",
    "agent.commands.web",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liver-agent",
        description="DICOM agent that pre-computes liver tumour response beside the PACS.",
    )
    parser.add_argument("--version", action="version", version=f"liver-agent {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", help="YAML configuration file (environment LIVER_AGENT_* overrides it)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
