"""Stated lengths against their drawing (agent/sr/geometry.py) on SRs the OHIF writer made: the images they
were drawn on (0.75 mm pixels) give the geometry; a stated value is edited to a semi-axis, to pixels, or to
a wrong number."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pydicom
import pytest
from support.ohif import ohif_sr, referenced_images

from agent.pipeline.classify import files_lookup
from agent.sr.geometry import check_ellipse_area
from agent.sr.observations import observations
from agent.sr.read import MeasurementKind, read_sr


def lookup_for(sr: Path, tmp_path: Path):
    paths = []
    for image in referenced_images(sr):
        path = tmp_path / f"{image.SOPInstanceUID}.dcm"
        image.save_as(path, enforce_file_format=True)
        paths.append(path)
    return files_lookup(paths)


def edited(tmp_path: Path, group: int, concept: str, value: str) -> Path:
    """The OHIF follow-up with one NUM's stated value replaced."""
    ds = pydicom.dcmread(ohif_sr("ohif3_labels_followup.dcm"))
    measurements = next(c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "126010")
    for item in measurements.ContentSequence[group].ContentSequence:
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeMeaning == concept:
            item.MeasuredValueSequence[0].NumericValue = value
    out = tmp_path / "edited.dcm"
    ds.save_as(out)
    return out


def test_stated_lengths_that_agree_with_the_drawing_stand(tmp_path: Path) -> None:
    sr = ohif_sr("ohif3_labels_followup.dcm")
    obs, _ = observations(read_sr(sr), lookup_for(sr, tmp_path))
    assert [(o.long_axis_mm, o.short_axis_mm) for o in obs] == [
        (Decimal("20.25"), Decimal(15)),
        (Decimal(12), None),
        (Decimal(30), Decimal("22.5")),
    ]
    assert not any("drawn" in n for o in obs for n in o.notes)


@pytest.mark.parametrize(
    ("value", "used", "note"),
    [
        ("10.125", Decimal("20.25"), "a semi-axis: half the drawn 20.2 mm; the drawn 20.25 mm is used"),
        ("27", Decimal("20.25"), "pixels stated as mm: the drawn line is 20.2 mm; the drawn 20.25 mm"),
        ("31", None, "disagrees with the drawn 20.2 mm (no clean factor explains it); not used"),
    ],
)
def test_a_disagreement_is_corrected_only_by_a_clean_factor(
    tmp_path: Path, value: str, used: Decimal | None, note: str
) -> None:
    sr = edited(tmp_path, 0, "Long Axis", value)
    obs, _ = observations(read_sr(sr), lookup_for(sr, tmp_path))
    assert obs[0].long_axis_mm == used
    assert any(note in n for n in obs[0].notes), obs[0].notes


def test_without_the_pixel_spacing_nothing_is_checked(tmp_path: Path) -> None:
    sr = edited(tmp_path, 0, "Long Axis", "10.125")
    obs, _ = observations(read_sr(sr))
    assert obs[0].long_axis_mm == Decimal("10.125")


def test_an_ellipse_area_is_checked_against_its_axes(tmp_path: Path) -> None:
    sr = ohif_sr("ohif3_ellipse_stats.dcm")
    lookup = lookup_for(sr, tmp_path)
    report = read_sr(sr)
    (area,) = [m for m in report.groups[0].measurements if m.kind is MeasurementKind.AREA]
    image = area.region.image  # type: ignore[union-attr]
    spacing = lookup(None, None, image.sop_instance_uid).pixel_spacing_mm  # type: ignore[union-attr]
    assert spacing == (Decimal("0.75"), Decimal("0.75"))
    assert check_ellipse_area(area, spacing) is None  # 42 x 30 mm drawn, pi/4 x 42 x 30 = 989.6 mm2 stated
    doubled = replace(area, value=Decimal("1979.2"))
    assert check_ellipse_area(doubled, spacing) == (
        "area stated 1979.2 mm2 disagrees with the drawn ellipse (989.6 mm2); not used"
    )
