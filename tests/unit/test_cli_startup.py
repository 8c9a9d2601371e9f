"""``liver-agent`` starts fast: ``--help`` and ``assess`` load none of the heavy libraries (checked in a fresh
interpreter), every command is still reachable, and the command list says what each command's parser says."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import COMMANDS

HEAVY = (
    "pydicom",
    "highdicom",
    "pynetdicom",
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "reportlab",
    "pydantic",
    "apscheduler",
    "numpy",
)

PROBE = """
import importlib, json, os, sys
if os.environ.get("PRELOAD"):
    importlib.import_module(os.environ["PRELOAD"])
from agent.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(HEAVY)))
print("\\nLOADED=" + json.dumps({"code": code, "heavy": heavy}))
"""


def timepoint(day: str, *sizes: float) -> dict[str, object]:
    lesions = [
        {"id": f"T{i + 1}", "organ": "liver", "kind": "target", "long_axis_mm": size}
        for i, size in enumerate(sizes)
    ]
    return {
        "date": day,
        "modality": "CT",
        "phase": "portal_venous",
        "slice_thickness_mm": 2.5,
        "lesions": lesions,
    }


CASE = {
    "context": {"treatment_start": "2024-01-15", "primary": "CRC", "therapy": ["FOLFOX"]},
    "timepoints": [timepoint("2024-01-08", 60, 40), timepoint("2024-03-04", 24, 16)],
}


def loaded(*argv: str, preload: str = "") -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.replace("HEAVY", repr(json.dumps(HEAVY))), *argv],
        env={**os.environ, "PRELOAD": preload},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED="))
    return json.loads(line.removeprefix("LOADED="))  # type: ignore[no-any-return]


def test_help_loads_no_heavy_library() -> None:
    assert loaded("--help") == {"code": 0, "heavy": []}


def test_assess_loads_no_heavy_library(tmp_path: Path) -> None:
    path = tmp_path / "case.json"
    path.write_text(json.dumps(CASE), encoding="utf-8")
    assert loaded("assess", str(path)) == {"code": 0, "heavy": []}
    assert loaded("assess", str(path), "--format", "table") == {"code": 0, "heavy": []}


def test_the_probe_sees_a_heavy_library_when_one_is_loaded() -> None:
    assert "pydicom" in loaded("--help", preload="pydicom.dataset")["heavy"]  # type: ignore[operator]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_command_list_says_what_each_parser_says(name: str) -> None:
    module, summary = COMMANDS[name]
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(module).register(subparsers, [])
    assert [(a.dest, a.help) for a in subparsers._choices_actions] == [(name, summary)]


def test_every_command_module_is_listed() -> None:
    commands = Path(__file__).resolve().parents[2] / "agent" / "commands"
    registering = {
        f"agent.commands.{p.stem}"
        for p in commands.glob("*.py")
        if "\ndef register(" in p.read_text(encoding="utf-8")
    }
    assert registering == {module for module, _ in COMMANDS.values()}
