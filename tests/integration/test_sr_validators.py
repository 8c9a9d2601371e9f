"""Every SR and summary we write passes dicom3tools ``dciodvfy`` (no error, only the accepted warnings of
``tests/support/dciodvfy_accepted.py``); DCMTK ``dsrdump`` reads the SR in strict mode; highdicom reads it.

Cases: a response report, a pre-read, and a new version superseding our earlier report of the same study.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pytest

from tests.support.dciodvfy_accepted import validate
from tests.unit.sr.responsegen import CONTEXT, Inputs, assess, write_inputs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools (dciodvfy) is not installed"),
    pytest.mark.skipif(not shutil.which("dsrdump"), reason="DCMTK (dsrdump) is not installed"),
]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    inputs: Inputs = write_inputs(tmp_path_factory.mktemp("in"))
    d = tmp_path_factory.mktemp("out")
    files: dict[str, Path] = {}
    for kind, extra in (("response", []), ("pre-read", ["--pre-read"])):
        rc, _, err = assess(
            *inputs.all, *extra, "--out", d / f"{kind}.dcm", "--summary", d / f"{kind}-summary.dcm", *CONTEXT
        )
        assert rc == 0, err
        files[kind] = d / f"{kind}.dcm"
        files[f"{kind} summary"] = d / f"{kind}-summary.dcm"
    # A new version: the earlier response and the pre-read of the same study become predecessors.
    rc, _, err = assess(
        *inputs.all,
        files["response"],
        files["pre-read"],
        "--primary",
        "CRC",
        "--out",
        d / "v2.dcm",
        "--summary",
        d / "v2-summary.dcm",
    )
    assert rc == 0, err
    files["new version"] = d / "v2.dcm"
    files["new version summary"] = d / "v2-summary.dcm"
    return files


CASES = ["response", "pre-read", "new version"]


@pytest.mark.parametrize("case", CASES + [f"{c} summary" for c in CASES])
def test_dciodvfy_finds_no_error_and_no_unexpected_warning(written: dict[str, Path], case: str) -> None:
    verdict = validate(written[case])
    assert verdict.iod == ("EncapsulatedPDF" if case.endswith("summary") else "ComprehensiveSR")
    assert verdict.errors == []
    assert verdict.warnings == []
    assert verdict.returncode == 0


@pytest.mark.parametrize("case", CASES)
def test_dsrdump_reads_the_sr_strictly(written: dict[str, Path], case: str) -> None:
    proc = subprocess.run(["dsrdump", str(written[case])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Comprehensive SR Document" in proc.stdout
    assert "Completion Flag     : PARTIAL" in proc.stdout
    assert "Verification Flag   : UNVERIFIED" in proc.stdout
    assert not [line for line in proc.stderr.splitlines() if line.startswith(("E:", "F:"))]


def test_dsrdump_shows_the_predecessor(written: dict[str, Path]) -> None:
    proc = subprocess.run(
        ["dsrdump", "+Pt", str(written["new version"])], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "Predecessor Docs    : 2" in proc.stdout  # our earlier response and pre-read of this study
    assert "# TID 1500 (DCMR)" in proc.stdout


@pytest.mark.parametrize("case", CASES)
def test_highdicom_reads_every_sr_we_write(written: dict[str, Path], case: str) -> None:
    sr = hd.sr.srread(written[case])
    assert isinstance(sr.content, hd.sr.MeasurementReport)
    assert sr.get_evidence()
