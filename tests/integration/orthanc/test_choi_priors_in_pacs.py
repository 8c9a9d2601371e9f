"""Choi and the pseudoprogression alert when the patient's history lives in the PACS (Orthanc).

A GIST patient: baseline and first follow-up (portal-venous CT + the viewer's measurement SR) are only in
the PACS; the second follow-up is routed to the agent as a PACS does (the CT series, later the SR). The
lesions grow by more than 20 % while their attenuation falls by more than 15 %. The agent must learn each
prior image's acquisition context from the PACS (C-FIND at series and image level, retrieval of only the
measured instances), measure the mean HU from the pixels when the SRs give diameters only, and store in the
PACS a response SR with RECIST PD, Choi PR and the pseudoprogression discordance alert, and a PDF showing
each lesion's HU at each visit. The baseline images are JPEG-LS, the first follow-up's JPEG 2000.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless
from support.choigen import Lesion, Visit, write_visit
from support.dciodvfy_accepted import validate
from support.orthanc import Orthanc, wait_until

from tests.integration.orthanc.test_pipeline_orthanc import (
    COMPREHENSIVE_SR,
    PDF,
    TRANSPORTS,
    is_pre_read,
    our_srs,
    ours,
    route,
    start_agent,
    text_values,
)

pytestmark = [pytest.mark.orthanc, pytest.mark.integration]

# (long, short, HU) per lesion and visit: the sum of diameters 70 -> 73 (+4 %, RECIST SD) -> 88 mm (+26 %,
# +18 mm: RECIST PD); the mean attenuation 60 -> 49 (-18 %) -> 41 HU (-32 %): Choi PR at both follow-ups.
VISITS = {
    "bl": (date(2024, 1, 10), "ABD PV 2.5mm", ((40, 28, 62), (30, 22, 58)), JPEGLSLossless),
    "fu1": (date(2024, 3, 20), "Abdomen portal venös 2.5", ((42, 29, 50), (31, 22, 48)), JPEG2000Lossless),
    "fu2": (date(2024, 5, 29), "CT ABD venous 70s 2.5", ((52, 34, 42), (36, 25, 40)), None),
}
NAMES = ("liver seg 7", "liver seg 4")


def visits(patient_id: str, phase_said: bool = True) -> dict[str, Visit]:
    out = {}
    for name, (day, description, lesions, syntax) in VISITS.items():
        out[name] = Visit(
            patient_id,
            name,
            day,
            description if phase_said else "CT ABDOMEN 2.5",
            tuple(
                Lesion(NAMES[k], f"L{k + 1}", long_mm, short_mm, hu)
                for k, (long_mm, short_mm, hu) in enumerate(lesions)
            ),
            contrast_timing=phase_said,
            **({"transfer_syntax": syntax} if syntax else {}),
        )
    return out


def _pdf_text(orthanc: Orthanc, study_uid: str, tmp_path: Path) -> str:
    pdfs = [i for i in ours(orthanc, study_uid) if i.get("SOPClassUID") == PDF]
    ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(pdfs[-1]["ID"])))
    path = tmp_path / "summary.pdf"
    path.write_bytes(bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)])
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def _final(orthanc: Orthanc, study_uid: str) -> pydicom.Dataset | None:
    return next((ds for ds in our_srs(orthanc, study_uid) if not is_pre_read(ds)), None)


def run_patient(
    orthanc: Orthanc,
    make_agent: Any,
    tmp_path: Path,
    patient_id: str,
    with_hu: bool,
    phase_said: bool = True,
    method: str = "move",
) -> tuple[Any, dict[str, Visit], pydicom.Dataset, str]:
    """Priors into the PACS, the follow-up routed to the agent; returns the agent, visits, final SR, PDF."""
    vs = visits(patient_id, phase_said)
    files = {name: write_visit(tmp_path / name, v, with_hu) for name, v in vs.items()}
    for name in ("bl", "fu1"):
        images, sr = files[name]
        for path in [*images, sr]:
            orthanc.upload(path)
    agent = start_agent(make_agent, orthanc, method)
    images, sr = files["fu2"]
    started = time.monotonic()
    route(orthanc, *images)
    fu2 = vs["fu2"].study_uid
    assert wait_until(lambda: len(our_srs(orthanc, fu2)) >= 1, 60), agent.all_logs()[-4000:]
    route(orthanc, sr)
    assert wait_until(lambda: _final(orthanc, fu2) is not None, 60), agent.all_logs()[-4000:]
    assert time.monotonic() - started < 60 * 2  # each step within 60 s of its routing
    final = _final(orthanc, fu2)
    assert final is not None
    return agent, vs, final, _pdf_text(orthanc, fu2, tmp_path)


def assert_pseudoprogression_caught(final: pydicom.Dataset) -> None:
    texts = " | ".join(text_values(final))
    assert "DISC_RECIST_PD_CHOI_PR" in texts, texts
    criteria = {}
    for item in final.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue != "C0034375":  # Qualitative Evaluations
            continue
        for child in item.ContentSequence:
            if child.ValueType != "CODE" or "ContentSequence" not in child:
                continue
            method = next(
                (
                    m.ConceptCodeSequence[0].CodeMeaning
                    for m in child.ContentSequence
                    if m.ValueType == "CODE" and m.RelationshipType == "HAS CONCEPT MOD"
                ),
                None,
            )
            if child.ConceptNameCodeSequence[0].CodeMeaning.lower().startswith("current response"):
                criteria[method] = child.ConceptCodeSequence[0].CodeMeaning
    recist, choi = criteria.get("RECIST 1.1"), criteria.get("Choi criteria")
    assert recist is not None and "Progressive" in recist, criteria
    assert choi is not None and "Partial" in choi, criteria


def assert_valid_outputs(orthanc: Orthanc, study_uid: str, tmp_path: Path) -> None:
    mine = ours(orthanc, study_uid)
    series = {}
    for inst in mine:
        path = tmp_path / f"{inst['ID']}.dcm"
        path.write_bytes(orthanc.instance_file(inst["ID"]))
        verdict = validate(path)
        assert verdict.errors == [] and verdict.warnings == [], (inst["SOPClassUID"], verdict)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series.setdefault(ds.SeriesInstanceUID, set()).add(ds.Modality)
    # The SR and the PDF each in a series of their own (one modality per series).
    assert sorted(sorted(m) for m in series.values()) == [["DOC"], ["SR"]]
    assert {i["SOPClassUID"] for i in mine} == {COMPREHENSIVE_SR, PDF}


def hu_row(pdf: str, name: str) -> list[str]:
    """The HU values of the lesion's row in the PDF's attenuation table."""
    for line in pdf.splitlines():
        if name in line and "HU" in line:
            return re.findall(r"(-?\d+) HU", line.replace("\u2212", "-"))
    raise AssertionError(f"no attenuation row for {name!r} in the summary:\n{pdf}")


@pytest.mark.parametrize("method", TRANSPORTS)
def test_diameters_only_prior_images_in_the_pacs_density_measured_from_pixels(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path, method: str
) -> None:
    agent, vs, final, pdf = run_patient(
        orthanc, make_agent, tmp_path, f"GISTPX{method.upper()}", with_hu=False, method=method
    )
    assert_pseudoprogression_caught(final)
    assert_valid_outputs(orthanc, vs["fu2"].study_uid, tmp_path)
    # Each lesion's HU at each visit, measured by the agent from the pixels (within 1 HU).
    for k, name in enumerate(NAMES):
        expected = [VISITS[v][2][k][2] for v in ("bl", "fu1", "fu2")]
        assert [int(x) for x in hu_row(pdf, name)[-3:]] == pytest.approx(expected, abs=1), pdf
    assert "computed by liver-agent" in pdf
    texts = " | ".join(text_values(final))
    assert "mean HU computed by liver-agent inside the ellipse spanned by the measured axes" in texts
    # Only the measured images of the priors were retrieved (2 of 4 per prior), as retrieved priors that
    # never reopened their study.
    for name in ("bl", "fu1"):
        study_uid = vs[name].study_uid
        rows = agent.query(
            "SELECT se.modality, i.origin FROM instances i JOIN series se ON se.id = i.series_pk"
            " JOIN studies st ON st.id = se.study_pk WHERE st.study_uid = :u ORDER BY se.modality",
            u=study_uid,
        )
        assert sorted(rows) == [("CT", "retrieved"), ("CT", "retrieved"), ("SR", "retrieved")], rows
        assert agent.scalar("SELECT state FROM studies WHERE study_uid = :u", u=study_uid) == "prior"
    # What the PACS answered is kept: a prior is asked about once.
    learned = agent.query("SELECT source, modality, series_description FROM acquisition_context")
    assert learned and all(src in ("query", "retrieved") for src, _, _ in learned), learned
    detail = json.loads(agent.scalar("SELECT detail FROM output_versions WHERE current = 1 ORDER BY id DESC"))
    notes = json.dumps(detail["timeline"])
    assert "contrast phase unknown" not in notes and "assumed" not in notes
    agent.stop()


def test_attenuation_in_the_srs_prior_images_only_in_the_pacs(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path
) -> None:
    agent, vs, final, pdf = run_patient(orthanc, make_agent, tmp_path, "GISTHU", with_hu=True)
    assert_pseudoprogression_caught(final)
    assert_valid_outputs(orthanc, vs["fu2"].study_uid, tmp_path)
    for k, name in enumerate(NAMES):
        expected = [VISITS[v][2][k][2] for v in ("bl", "fu1", "fu2")]
        assert [int(x) for x in hu_row(pdf, name)[-3:]] == expected, pdf
    texts = " | ".join(text_values(final))
    assert "computed by liver-agent" not in texts  # the SR's own values win
    # The prior images' phase came from the PACS (query, or the measured instance where it said too little).
    sources = {
        row[0]
        for row in agent.query(
            "SELECT ac.source FROM acquisition_context ac WHERE ac.study_uid IN (:a, :b)",
            a=vs["bl"].study_uid,
            b=vs["fu1"].study_uid,
        )
    }
    assert sources and sources <= {"query", "retrieved"}, sources
    agent.stop()


def test_phase_nobody_can_tell_is_assumed_and_the_alert_says_so(
    orthanc: Orthanc, make_agent: Any, tmp_path: Path
) -> None:
    """Contrast-enhanced CT whose description and timing say no phase: the query cannot tell, so the
    measured prior instances are retrieved; their headers cannot tell either. Choi density is compared under
    the stated assumption (the default), and the discordance alert repeats it."""
    agent, vs, final, pdf = run_patient(
        orthanc, make_agent, tmp_path, "GISTUNK", with_hu=True, phase_said=False
    )
    assert_pseudoprogression_caught(final)
    assert_valid_outputs(orthanc, vs["fu2"].study_uid, tmp_path)
    # Said per lesion and visit, in the SR and in the PDF.
    texts = text_values(final)
    for label in ("T1 liver seg 7 BL", "T2 liver seg 4 FU1", "T1 liver seg 7 FU2"):
        assert any(t.startswith(f"{label}: contrast phase unknown") for t in texts), (label, texts)
    assert "Contrast phase unknown" in pdf and "T2 FU1" in " ".join(pdf.split())
    alert = next(t for t in text_values(final) if "DISC_RECIST_PD_CHOI_PR" in t)
    assert "assumption" in alert and "contrast phase unknown for" in alert, alert
    # The query could not tell the phase: only the measured prior instances were retrieved to read it.
    for name in ("bl", "fu1"):
        rows = agent.query(
            "SELECT se.modality, i.origin FROM instances i JOIN series se ON se.id = i.series_pk"
            " JOIN studies st ON st.id = se.study_pk WHERE st.study_uid = :u",
            u=vs[name].study_uid,
        )
        assert sorted(rows) == [("CT", "retrieved"), ("CT", "retrieved"), ("SR", "retrieved")], rows
    detail = json.loads(agent.scalar("SELECT detail FROM output_versions WHERE current = 1 ORDER BY id DESC"))
    notes = json.dumps(detail["timeline"])
    assert "contrast phase unknown: series description 'CT ABDOMEN 2.5'" in notes
    agent.stop()
