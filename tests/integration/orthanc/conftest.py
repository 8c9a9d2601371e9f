"""Orthanc fixtures: one server per test module, or a private one for tests that stop and restart it.

The configuration (``support.orthanc.Orthanc.config``) registers our agent in ``DicomModalities`` (re-pointed
at each test's agent over REST), uses a short ``StableAge``, and Orthanc runs with ``TCP_NODELAY=1``. The
fixtures always stop it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.agentproc import free_port
from support.orthanc import ORTHANC, Orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc is not installed: run scripts/install-system-deps.sh")
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A private Orthanc for tests that stop and restart it."""
    if not Path(ORTHANC).exists():
        pytest.skip("Orthanc is not installed: run scripts/install-system-deps.sh")
    server = Orthanc(tmp_path / "orthanc", free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
