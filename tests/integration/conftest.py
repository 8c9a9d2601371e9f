"""Integration fixtures: our agent as a real ``liver-agent serve`` subprocess, and DCMTK as its peer.

Every server binds 127.0.0.1 on a free port chosen here and is stopped by the fixture. DCMTK tools run with
``TCP_NODELAY=1``. Run as root the suite sits in a private network namespace (scripts/test.sh).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agentproc import Agent, free_port


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator:
    agents: list[Agent] = []

    def factory(**env_overrides: str) -> Agent:
        workdir = tmp_path / f"agent{len(agents)}"
        workdir.mkdir()
        agent = Agent(workdir, free_port(), dict(env_overrides))
        agents.append(agent)
        return agent

    yield factory
    for agent in agents:
        agent.kill()


@pytest.fixture(autouse=True)
def _need_dcmtk() -> None:
    if not shutil.which("storescu") or not shutil.which("echoscu"):
        pytest.skip("DCMTK (storescu, echoscu) is not installed: run scripts/install-system-deps.sh")
