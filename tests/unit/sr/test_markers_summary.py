"""Tumour markers in the response SR and its PDF summary (``liver-agent sr assess --markers``): the marker
curve under the spider plot, each marker's category at the current visit, and the split by site."""

from __future__ import annotations

import json
import shutil
import subprocess

import pydicom
import pytest

from tests.unit.sr.responsegen import CONTEXT, assess, write_inputs
from tests.unit.sr.test_longitudinal import P

MARKERS = (
    "patient_id,marker,date,value,unit,upper_limit\n"
    f"{P},CEA,2024-01-12,40,ng/mL,5\n"
    f"{P},CEA,2024-03-01,22,ng/mL,5\n"
    f"{P},CEA,2024-05-02,15,ng/mL,5\n"
    "OTHER,CEA,2024-05-02,999,ng/mL,5\n"
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("markers")
    inputs = write_inputs(d / "in")
    csv = d / "markers.csv"
    csv.write_text(MARKERS, encoding="utf-8")
    rc, out, err = assess(
        *inputs.all, "--out", d / "resp.dcm", "--summary", d / "sum.dcm", "--json", "--markers", csv, *CONTEXT
    )
    assert rc == 0, err
    return {"sr": d / "resp.dcm", "pdf": d / "sum.dcm", "json": json.loads(out), "dir": d}


def test_markers_of_the_patient_only_reach_the_assessment(written: dict) -> None:
    series = written["json"]["markers"]
    assert [s["marker"] for s in series] == ["CEA"]
    assert [r["value"] for r in series[0]["results"]] == [40, 22, 15]
    fu2 = series[0]["statuses"][2]
    assert fu2["category"] == "response" and fu2["change_vs_pretreatment_pct"] == -62.5


def _texts(ds: pydicom.Dataset) -> list[str]:
    out = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            out.append(str(item.TextValue))
        out.extend(_texts(item))
    return out


def test_sr_carries_the_marker_status_and_the_split_by_site(written: dict) -> None:
    texts = _texts(pydicom.dcmread(written["sr"]))
    assert any(t.startswith("Tumour marker: CEA: response (CEA response: 15 ng/mL") for t in texts)
    assert any(t.startswith("By site: Liver targets") for t in texts)


def test_pdf_draws_the_marker_curve_under_the_spider_plot(written: dict) -> None:
    tool = shutil.which("pdftotext")
    assert tool, "pdftotext (poppler-utils) is needed"
    pdf = written["dir"] / "sum.pdf"
    pdf.write_bytes(pydicom.dcmread(written["pdf"]).EncapsulatedDocument.rstrip(b"\0"))
    text = subprocess.run([tool, "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "TUMOUR MARKERS" in text and "CEA (ng/mL)" in text and "ULN 5" in text
    assert "CEA: response (CEA response: 15 ng/mL is <= -50 % from the pre-treatment 40 (2024-01-12))" in text
    lines = text.splitlines()
    spider = next(i for i, line in enumerate(lines) if "SPIDER PLOT" in line)
    markers = next(i for i, line in enumerate(lines) if "TUMOUR MARKERS" in line)
    assert spider < markers  # under the spider plot
    assert "By site" in text
