"""Sub-commands of ``liver-agent``; each module registers one command (see ``agent.cli``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Settings


def settings_or_exit(config: str | None) -> Settings:
    """Load settings for a command, or print the reason and exit 2 (pydantic loads only for commands that
    read the configuration)."""
    from agent.config import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as exc:
        print(f"liver-agent: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
