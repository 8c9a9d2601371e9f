"""Sub-commands of ``liver-agent``; each module registers one command (see ``agent.cli``)."""

from __future__ import annotations

import sys

from agent.config import ConfigError, Settings, load_settings


def settings_or_exit(config: str | None) -> Settings:
    """Load settings for a command, or print the reason and exit 2."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        print(f"liver-agent: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
