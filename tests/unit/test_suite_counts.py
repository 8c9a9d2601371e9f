"""The data-driven suites keep their size: a fixture that goes missing or a parametrisation that comes back
empty fails here instead of leaving the suite green with its checks gone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Test file -> number of tests it collects. Change a number only together with the tests it counts.
EXPECTED = {
    "tests/unit/sr/test_samples.py": 28,
    "tests/unit/sr/test_read_once.py": 22,
    "tests/unit/sr/test_ohif_writer.py": 14,
}


def collected(path: str) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = re.search(r"^(\d+) tests? collected", done.stdout, re.MULTILINE)
    assert found, done.stdout[-2000:]
    return int(found.group(1))


def test_the_sample_suites_collect_every_test() -> None:
    assert {path: collected(path) for path in EXPECTED} == EXPECTED


def test_the_sample_suites_cannot_skip() -> None:
    for path in EXPECTED:
        source = (REPO / path).read_text(encoding="utf-8")
        assert not re.search(r"\bskip(if)?\b|importorskip", source), path
