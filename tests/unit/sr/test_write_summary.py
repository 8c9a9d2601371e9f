"""The Encapsulated PDF summary: a page that renders, with table, categories, thresholds and alerts as text.

Rendered with poppler (``pdftoppm`` to PNG, ``pdftotext`` for the text layer), as a viewer would.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.unit.sr.responsegen import CONTEXT, Inputs, assess, write_inputs

pytestmark = pytest.mark.skipif(
    not (shutil.which("pdftoppm") and shutil.which("pdftotext")), reason="poppler-utils is not installed"
)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    inputs: Inputs = write_inputs(tmp_path_factory.mktemp("in"))
    d = tmp_path_factory.mktemp("out")
    out: dict[str, Any] = {"dir": d}
    for kind, extra in (("post", []), ("pre", ["--pre-read"])):
        rc, stdout, err = assess(
            *inputs.all,
            *extra,
            "--out",
            d / f"{kind}.dcm",
            "--summary",
            d / f"{kind}-pdf.dcm",
            "--json",
            *CONTEXT,
        )
        assert rc == 0, err
        pdf = d / f"{kind}.pdf"
        pdf.write_bytes(pydicom.dcmread(d / f"{kind}-pdf.dcm").EncapsulatedDocument)
        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        out[kind] = {"pdf": pdf, "text": text, "json": json.loads(stdout), "dcm": d / f"{kind}-pdf.dcm"}
    return out


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("kind", ["post", "pre"])
def test_the_summary_renders_as_one_landscape_page(outputs: dict[str, Any], kind: str) -> None:
    pdf: Path = outputs[kind]["pdf"]
    prefix = outputs["dir"] / f"{kind}-page"
    subprocess.run(["pdftoppm", "-r", "60", "-png", str(pdf), str(prefix)], check=True, capture_output=True)
    pages = sorted(outputs["dir"].glob(f"{kind}-page*.png"))
    assert len(pages) == 1
    width, height = _png_size(pages[0])
    assert (width, height) == (702, 497)  # A4 landscape (842 x 595 pt) at 60 dpi
    assert pages[0].stat().st_size > 20_000  # a drawn page, not a blank one


def test_text_layer_holds_the_table_categories_thresholds_and_alerts(outputs: dict[str, Any]) -> None:
    text: str = outputs["post"]["text"]
    for needle in (
        "Tumour response summary",
        "MACHINE-GENERATED · NOT VERIFIED BY A RADIOLOGIST",
        "TEST, Patient",
        "Baseline",
        "Baseline",
        "Previous = nadir (FU1)",
        "Current (FU2)",
        "T1 liver seg VII",
        "NT1 liver seg II",
        "N1 liver seg VI",
        "Sum of target diameters",
        "130 mm",
        "92 mm",
        "−29.2 %",
        "+5.7 %",
        "RECIST 1.1",
        "iRECIST",
        "iPR",
        "non-CR/non-PD",
        "PD if the target sum reaches ≥ 104.4 mm",
        "PR if the target sum falls to ≤ 91 mm",
        "NEW_LESION_EQUIVOCAL",
        "WARNING",
        "SPIDER PLOT",
    ):
        assert needle in text, needle
    for alert in outputs["post"]["json"]["alerts"]:
        assert alert["code"] in text


def test_pre_read_is_marked_and_leaves_the_current_column_pending(outputs: dict[str, Any]) -> None:
    text: str = outputs["pre"]["text"]
    assert "Tumour response pre-read" in text
    assert "PRE-READ: PRIOR MEASUREMENTS ONLY" in text
    assert "pending" in text
    assert "THRESHOLDS FOR THE CURRENT READ" in text
    assert "RECIST 1.1, current read: PD if the target sum reaches ≥ 104.4 mm" in text


def test_summary_header_matches_the_sr_and_says_unverified(outputs: dict[str, Any]) -> None:
    pdf = pydicom.dcmread(outputs["post"]["dcm"])
    sr = pydicom.dcmread(outputs["dir"] / "post.dcm")
    assert pdf.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
    document = bytes(pdf.EncapsulatedDocument)
    assert document.startswith(b"%PDF-")
    assert document[: pdf.EncapsulatedDocumentLength].rstrip().endswith(b"%%EOF")
    assert len(document) - pdf.EncapsulatedDocumentLength in (0, 1)  # only the even-length padding
    assert "unverified" in pdf.DocumentTitle
    assert pdf.InstanceNumber == 1 and sr.InstanceNumber == 1
    for attr in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber"):
        assert pdf[attr].value == sr[attr].value, attr
    assert pdf.SeriesInstanceUID != sr.SeriesInstanceUID  # a series holds one modality
    sources = {s.ReferencedSOPInstanceUID for s in pdf.SourceInstanceSequence}
    assert sr.SOPInstanceUID in sources


def test_text_layer_shows_why_each_category_was_reached(outputs: dict[str, Any]) -> None:
    """docs/criteria.md §1.7: the reference with its label and date, the sums, the Choi density per lesion."""
    text = " ".join(outputs["post"]["text"].split())
    for needle in (
        "Compared with baseline 130 mm at BL (2024-01-08)",
        "nadir 87 mm at FU1",
        "Per lesion:",
        "HU",
    ):
        assert needle in text, needle


def test_lesion_table_shows_the_density_of_each_target_at_each_visit(outputs: dict[str, Any]) -> None:
    """Choi density is checkable from the table: T1 80 HU at baseline, 60 HU at FU1, 62 HU now."""
    text = " ".join(outputs["post"]["text"].split())
    for needle in ("80 HU", "60 HU", "62 HU"):
        assert needle in text, needle
