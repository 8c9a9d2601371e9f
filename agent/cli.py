"""The ``liver-agent`` command: one sub-command per module in ``agent/commands``.

Each command module exposes ``register(subparsers, parents)``; it adds its parser and sets ``func`` to a
function taking the parsed arguments and returning the exit code. Exit codes: 0 success, 1 failure at run
time, 2 invalid input or configuration.

Start-up stays fast (``assess`` and ``sr dump`` are run once per patient from scripts): only the module of the
command named on the command line is imported, so pydicom, highdicom, pynetdicom, SQLAlchemy, FastAPI and
reportlab load only for the commands that use them. ``liver-agent --help`` lists the commands from
``COMMANDS`` without importing any of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__

# Command -> (module, the one-line help its parser registers). Order is the order of ``liver-agent --help``.
COMMANDS = {
    "serve": ("agent.commands.serve", "run the agent (DICOM listener and pipeline)"),
    "echo": ("agent.commands.echo", "check a peer answers: C-ECHO to AE@HOST:PORT, or a configured peer"),
    "assess": ("agent.commands.assess", "compute the tumour response of a measurement timeline (JSON)"),
    "sr": ("agent.commands.sr", "read DICOM SR measurement reports"),
    "check-config": (
        "agent.commands.check_config",
        "validate the configuration and print the effective settings",
    ),
    "db": ("agent.commands.db", "database maintenance"),
    "reprocess": ("agent.commands.reprocess", "process a received study again"),
    "status": ("agent.commands.status", "studies by state and delivery backlog"),
    "outbox": ("agent.commands.outbox", "list or retry deliveries to the PACS"),
    "web": ("agent.commands.web", "HTTP service helpers"),
    "markers": ("agent.commands.markers", "tumour marker results (CSV import, list)"),
}
COMMAND_MODULES = tuple(module for module, _ in COMMANDS.values())


def _named_command(argv: Sequence[str]) -> str | None:
    """The command named on the command line (its first argument not an option), if it is one of ours."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s module registered, or with every command listed by name only."""
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
    if command is not None:
        importlib.import_module(COMMANDS[command][0]).register(subparsers, [common])
    else:
        for name, (_, summary) in COMMANDS.items():
            subparsers.add_parser(name, parents=[common], help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_named_command(argv))
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
