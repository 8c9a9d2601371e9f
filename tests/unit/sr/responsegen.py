"""Inputs and outputs of ``liver-agent sr assess`` for the writer tests (files made with highdicom in code).

Patient P1 of ``test_longitudinal`` (baseline, follow-up 1 with a split lesion, follow-up 2 with a new-lesion
candidate and an adrenal lesion that never had a Tracking UID). ``assess`` runs the real command in-process.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from agent.cli import main
from tests.unit.sr.srgen import write_study_sr
from tests.unit.sr.test_longitudinal import P, baseline, follow_up_1, follow_up_2

CONTEXT = ["--primary", "CRC", "--treatment-start", "2024-01-15", "--criteria", "RECIST1.1,iRECIST,Choi,Chun"]
DATES = {"bl": date(2024, 1, 8), "fu1": date(2024, 3, 4), "fu2": date(2024, 5, 6)}


@dataclass(frozen=True)
class Inputs:
    bl: Path
    fu1: Path
    fu2: Path

    @property
    def all(self) -> list[str]:
        return [str(self.fu2), str(self.bl), str(self.fu1)]  # any order


def write_inputs(directory: Path) -> Inputs:
    directory.mkdir(parents=True, exist_ok=True)
    bl, _ = write_study_sr(
        directory, "bl", patient_id=P, study="bl", study_date=DATES["bl"], lesions=baseline()
    )
    fu1, _ = write_study_sr(
        directory, "fu1", patient_id=P, study="fu1", study_date=DATES["fu1"], lesions=follow_up_1()
    )
    fu2, _ = write_study_sr(
        directory, "fu2", patient_id=P, study="fu2", study_date=DATES["fu2"], lesions=follow_up_2(liver1=36)
    )
    return Inputs(bl, fu1, fu2)


def assess(*args: str | Path) -> tuple[int, str, str]:
    """``liver-agent sr assess ...`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["sr", "assess", *map(str, args)])
        except SystemExit as exc:  # argparse usage errors
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def dump(*files: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["sr", "dump", *map(str, files), *CONTEXT])
    return rc, out.getvalue(), err.getvalue()
