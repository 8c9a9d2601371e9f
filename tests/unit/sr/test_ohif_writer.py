"""SRs made by the OHIF writer itself (tests/data/ohif, see tests/data/README.md): the radiologist's label is
the lesion's identity, the tool name never is, and a baseline/follow-up pair pairs by label.

OHIF 3.13 (Cornerstone3D adapters 5.6.8 + dcmjs 0.52): label in a TEXT Comment, one fresh Tracking UID per
annotation, the tool name as Tracking Identifier. OHIF 2 (dcmjs's cornerstoneTools 4 adapter): label as the
meaning of a CORNERSTONEFREETEXT finding.
"""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pydicom
import pytest
from support.ohif import ohif_sr

from agent import cli
from agent.sr.observations import label_key, observations
from agent.sr.read import MeasurementKind, is_tool_name, read_sr


def test_ohif3_labels_are_read_as_written_and_tool_names_are_not_identities() -> None:
    report = read_sr(ohif_sr("ohif3_labels_followup.dcm"))
    groups = report.groups
    assert [g.viewer_label for g in groups] == ["t2  (Seg IVa)", "läsion 3 seg ii", "target 1 seg vii"]
    assert [g.tracking_identifier for g in groups] == [
        "Cornerstone3DTools@^0.1.0:Bidirectional",
        "Cornerstone3DTools@^0.1.0:Length",
        "Cornerstone3DTools@^0.1.0:Bidirectional",
    ]
    assert all(is_tool_name(g.tracking_identifier or "") for g in groups)
    assert [g.identity for g in groups] == [g.viewer_label for g in groups]
    assert len({g.tracking_uid for g in groups}) == 3  # a fresh Tracking UID per annotation
    long_axes = [g.first(MeasurementKind.LONG_AXIS) for g in groups]
    assert [m.value if m else None for m in long_axes] == [Decimal("20.25"), None, Decimal(30)]
    assert groups[0].first(MeasurementKind.SHORT_AXIS).value == 15  # type: ignore[union-attr]
    assert groups[1].first(MeasurementKind.LENGTH).value == 12  # type: ignore[union-attr]
    obs, _ = observations(report)
    assert [o.tracking_identifier for o in obs] == ["t2  (Seg IVa)", "läsion 3 seg ii", "target 1 seg vii"]
    assert all(o.organ == "unspecified" for o in obs)  # OHIF writes no finding site


def test_no_label_leaves_no_identity_and_says_why() -> None:
    obs, _ = observations(read_sr(ohif_sr("ohif3_nolabels_followup.dcm")))
    assert [o.tracking_identifier for o in obs] == [None, None]
    assert all(any("names the drawing tool" in n for n in o.notes) for o in obs)


def test_ohif3_ellipse_area_and_hu_statistics() -> None:
    (group,) = read_sr(ohif_sr("ohif3_ellipse_stats.dcm")).groups
    assert group.viewer_label == "Target 1 seg VII"
    area = group.first(MeasurementKind.AREA)
    assert area is not None and abs(area.value - Decimal("989.6017")) < Decimal("0.001")
    mean = group.first(MeasurementKind.MEAN_HU)
    assert mean is not None and mean.value == 55


def test_ohif2_free_text_finding_is_the_label_not_a_site() -> None:
    report = read_sr(ohif_sr("ohif2_freetext_followup.dcm"))
    assert [g.viewer_label for g in report.groups] == ["liver lesion b", "LIVER LESION A"]
    assert all(g.finding is None and g.finding_sites == () for g in report.groups)
    assert all(g.tracking_identifier == "cornerstoneTools@^4.0.0:Bidirectional" for g in report.groups)
    # dcmjs's cornerstoneTools 4 adapter states no unit, so the axes are in pixels: never taken as mm.
    assert all(g.first(MeasurementKind.LONG_AXIS) is None for g in report.groups)
    assert any("cannot be converted" in w for g in report.groups for w in g.warnings)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Target 1", "target  1.", True),
        ("T2 (seg IVa)", "t2  (Seg IVa)", True),
        ("Läsion 1 seg VII", "läsion 1 - SEG vii", True),
        ("T1", "Target 1", False),
        ("target lesion 1", "Target 1", False),
        ("Läsion 1", "Lasion 1", False),
    ],
)
def test_label_normalisation_keeps_the_words(a: str, b: str, same: bool) -> None:
    assert (label_key(a) == label_key(b)) is same


def test_sr_assess_pairs_ohif_lesions_by_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "sr",
        "assess",
        str(ohif_sr("ohif3_labels_baseline.dcm")),
        str(ohif_sr("ohif3_labels_followup.dcm")),
    ]
    assert cli.main([*argv, "--out", str(tmp_path / "out.dcm"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    recist = result["recist"]
    # Targets 42 + 25.5 = 67.5 mm at baseline, 30 + 20.25 = 50.25 mm at follow-up (-25.6 %): SD, none new.
    assert recist["target_sums_mm"] == [67.5, 50.25]
    assert recist["timepoint_responses"] == [None, "SD"]
    assert not [a for a in result["alerts"] if a["code"].startswith("NEW_LESION")]
    targets = result["sites"][1]["targets"]
    (site,) = targets.values()
    assert site["lesions"] == ["Target 1 seg VII", "T2 (seg IVa)"]  # shown as written at baseline


def test_without_labels_the_pairing_is_proposed_and_the_result_provisional(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(ohif_sr("ohif3_nolabels_baseline.dcm")), str(ohif_sr("ohif3_nolabels_followup.dcm"))]
    assert cli.main(["sr", "dump", *files]) == 0
    timeline = json.loads(capsys.readouterr().out)
    # Proposed by size rank (same site: none stated): 52.5 mm <- 50 mm (L1), 33 mm <- 30 mm (L2).
    assert timeline["provisional"] is True
    pairs = sorted((p["diameter_mm"], p["paired_with"], p["status"]) for p in timeline["pairings"])
    assert pairs == [(33, "L2", "proposed"), (52.5, "L1", "proposed")]
    assert all("same size rank" in " ".join(p["basis"]) for p in timeline["pairings"])
    summary = tmp_path / "summary.dcm"
    argv = ["sr", "assess", *files, "--out", str(tmp_path / "out.dcm"), "--summary", str(summary), "--json"]
    assert cli.main(argv) == 0
    recist = json.loads(capsys.readouterr().out)["recist"]
    # The PDF summary says it too (its text layer, as poppler reads it).
    pdf = tmp_path / "summary.pdf"
    pdf.write_bytes(bytes(pydicom.dcmread(summary).EncapsulatedDocument).rstrip(b"\0"))
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "LESION_PAIRING_PROVISIONAL" in text or "provisional" in text.lower()
    assert recist["target_sums_mm"] == [80, 85.5]
    assert recist["timepoint_responses"] == [None, "SD"]
    # The response SR says the pairing is provisional, lesion by lesion.
    sr = pydicom.dcmread(tmp_path / "out.dcm")
    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    provisional = [t for t in texts if "paired with L" in t and "provisional" in t]
    assert len(provisional) == 2 and all("confirm or re-pair" in t for t in provisional), texts


def test_labels_that_pair_leave_nothing_provisional(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(ohif_sr("ohif3_labels_baseline.dcm")), str(ohif_sr("ohif3_labels_followup.dcm"))]
    assert cli.main(["sr", "dump", *files]) == 0
    timeline = json.loads(capsys.readouterr().out)
    assert timeline["provisional"] is False and timeline["pairings"] == []


def test_old_dcmjs_hounsfield_unit_is_read(tmp_path: Path) -> None:
    # dcmjs before its UCUM units wrote HU as (HU, 99dcmjsUnit, "Hounsfield Unit").
    ds = pydicom.dcmread(ohif_sr("ohif3_ellipse_stats.dcm"))
    group = next(c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "126010")
    for item in group.ContentSequence[0].ContentSequence:
        if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
            unit = item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
            if unit.CodeValue == "[hnsf'U]":
                unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = (
                    "HU",
                    "99dcmjsUnit",
                    "Hounsfield Unit",
                )
    ds.save_as(tmp_path / "old_units.dcm")
    (group_read,) = read_sr(tmp_path / "old_units.dcm").groups
    mean = group_read.first(MeasurementKind.MEAN_HU)
    assert mean is not None and mean.value == 55 and mean.raw_unit is not None
    assert mean.raw_unit.scheme_designator == "99dcmjsUnit"
