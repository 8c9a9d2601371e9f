"""Every real SR of tests/data/sr: the values its writer put in come back, or a clear reason; and the
MANIFEST there lists every file with its source, licence and checksum."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from agent.sr import codes
from agent.sr.context import study_context
from agent.sr.observations import observations
from agent.sr.read import MeasurementKind, SRReadError, SRReport, read_sr, require_measurements

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "sr"


def sample(prefix: str) -> Path:
    found = sorted(SAMPLES.glob(f"{prefix}_*.dcm"))
    assert found, prefix
    return found[0]


def kinds(report: SRReport, kind: MeasurementKind) -> list[Decimal]:
    return [m.value for g in report.groups for m in g.measurements if m.kind is kind]


def group(report: SRReport, identifier: str):  # type: ignore[no-untyped-def]
    matches = [g for g in report.groups if g.tracking_identifier == identifier]
    assert len(matches) == 1, [g.tracking_identifier for g in report.groups]
    return matches[0]


def test_the_manifest_lists_every_sample_with_source_licence_and_checksum() -> None:
    rows = {}
    for line in (SAMPLES / "MANIFEST.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].endswith(".dcm"):
            rows[cells[0]] = cells
    files = sorted(p.name for p in SAMPLES.glob("*.dcm"))
    assert len(files) == 19 and sorted(rows) == files
    for name, (_, repository, path, commit, licence, sha256) in rows.items():
        assert "/" in repository and path and commit and licence, name
        assert hashlib.sha256((SAMPLES / name).read_bytes()).hexdigest() == sha256, name
    for licence_file in {"GPL-3.0"} & {r[4].split(" ")[0] for r in rows.values()}:
        assert (SAMPLES / "LICENSES" / f"{licence_file}.txt").is_file()


def test_every_sample_reads_or_gives_a_reason_and_nothing_else_raises() -> None:
    files = sorted(SAMPLES.glob("*.dcm"))
    assert len(files) == 19
    for path in files:
        try:
            report = require_measurements(read_sr(path))
        except SRReadError as exc:
            assert exc.reason and "\n" not in exc.reason
            continue
        study_context(report)
        observations(report)


def test_01_dcmqi_volumetric_group_with_srt_codes_and_ml_volume() -> None:
    report = read_sr(sample("01"))
    assert report.reader == "highdicom"
    g = group(report, "primary tumor")
    assert g.template == "1411"
    assert g.tracking_uid == "2.25.318774060119084600392715520575818119084"
    assert g.finding == codes.NEOPLASM_PRIMARY  # (M-80003, SRT) maps to SCT
    assert g.finding_sites[0].value == "T-C5300"
    assert g.time_point is not None and g.time_point.time_point == "1"
    assert kinds(report, MeasurementKind.VOLUME) == [Decimal("33582.4")]  # 33.5824 ml
    suv = [m for m in g.measurements if m.name.value == "126401"]
    assert len(suv) == 10
    mean = next(m for m in suv if m.derivation == codes.MEAN)
    assert mean.value == Decimal("6.01529") and mean.unit == "{SUVbw}g/ml"


def test_02_area_in_cm2_becomes_mm2_and_no_diameter_is_the_reason() -> None:
    report = read_sr(sample("02"))
    g = group(report, "Planar ROI Measurements")
    assert g.tracking_uid == "1.2.826.0.1.3680043.8.498.95005499519195632686309166061552196996"
    assert kinds(report, MeasurementKind.AREA) == [Decimal(170)]
    with pytest.raises(SRReadError, match="no diameter"):
        require_measurements(report)


def test_03_four_groups_of_all_three_templates() -> None:
    report = read_sr(sample("03"))
    assert [g.template for g in report.groups] == ["1501", "1410", "1410", "1411"]
    assert group(report, "Image0001").first(MeasurementKind.MEAN_HU).value == Decimal(  # type: ignore[union-attr]
        "-119.07385253906250"
    )
    nodule = group(report, "LungNodule0001")
    assert nodule.first(MeasurementKind.LENGTH).value == 10  # type: ignore[union-attr]
    assert nodule.finding_sites == (codes.Code("39607008", "SCT", "Lung"),)
    assert group(report, "Aorta0001").first(MeasurementKind.LENGTH).value == 20  # type: ignore[union-attr]
    assert group(report, "Vertebra0001").first(MeasurementKind.VOLUME).value == 200  # type: ignore[union-attr]
    obs, warns = observations(report)
    # Only the nodule is a lesion: the aorta is an anatomical structure, the others have no diameter.
    assert [(o.tracking_identifier, o.organ, o.long_axis_mm) for o in obs] == [("LungNodule0001", "lung", 10)]
    assert any("Aorta0001" in w for w in warns)


def test_04_pixels_are_never_taken_as_mm() -> None:
    report = read_sr(sample("04"))
    g = group(report, "Cornerstone3DTools@^0.1.0:Bidirectional")
    assert g.template == "1501"  # OHIF puts the SCOORD under each NUM
    assert g.tracking_uid == "2.25.639471218588509803385904782051176077285"
    assert g.measurements == ()
    assert any("64.4505437946691" in w and "(1, UCUM)" in w for w in g.warnings)
    with pytest.raises(SRReadError, match="cannot be converted to mm"):
        require_measurements(report)


def test_05_empty_num_falls_back_to_the_walker_and_recovers_every_value() -> None:
    report = read_sr(sample("05"))
    assert report.reader == "walker"
    assert any("highdicom refused" in w for w in report.warnings)
    assert len(report.groups) == 6
    assert kinds(report, MeasurementKind.LONG_AXIS) == [Decimal("93.9")]
    assert kinds(report, MeasurementKind.SHORT_AXIS) == [Decimal(47)]
    assert kinds(report, MeasurementKind.LENGTH) == [Decimal("39.3664929116140"), Decimal("133.992062006165")]
    # dcmjs labels the ellipse areas with the Length code: the mm2 unit decides.
    assert kinds(report, MeasurementKind.AREA) == [Decimal("4806.42320110457"), Decimal("3905.35929103307")]
    arrow = group(report, "cornerstoneTools@^4.0.0:ArrowAnnotate")
    assert any("Center" in w and "no measured value" in w for w in arrow.warnings)
    bidirectional = group(report, "cornerstoneTools@^4.0.0:Bidirectional")
    assert bidirectional.images[0].sop_instance_uid.endswith("20100510032220.11")
    assert {g.tracking_identifier for g in report.groups} >= {"cornerstoneTools@^4.0.0:Length"}


def test_06_to_08_dwv_units_and_current_sct_codes() -> None:
    ruler = read_sr(sample("06"))
    assert [g.tracking_identifier for g in ruler.groups] == ["clvovj8vyt5", "zev6p8rale", "0kk336h6bglr"]
    assert all(v == Decimal("4.025316455696") for v in kinds(ruler, MeasurementKind.LENGTH))
    ellipse = read_sr(sample("07"))
    assert kinds(ellipse, MeasurementKind.LONG_AXIS)[0] == Decimal("3.189873417722")
    assert kinds(ellipse, MeasurementKind.SHORT_AXIS)[0] == Decimal("1.898734177215")
    assert kinds(ellipse, MeasurementKind.AREA)[0] == Decimal("19.0277523323")  # 0.190277523323 cm2
    # MR pixel statistics in "1" are not attenuation.
    assert kinds(ellipse, MeasurementKind.MEAN_HU) == []
    circle = read_sr(sample("08"))
    radius = [m for g in circle.groups for m in g.measurements if m.name.value == "131190003"]
    assert len(radius) == 3 and radius[0].raw_unit is not None and radius[0].raw_unit.value == "mm"
    with pytest.raises(SRReadError, match="no diameter"):
        require_measurements(circle)


def test_09_no_measurements_is_a_clear_reason() -> None:
    report = read_sr(sample("09"))
    assert len(report.groups) == 3
    with pytest.raises(SRReadError, match="no measurement"):
        require_measurements(report)


def test_10_basic_text_sr_with_measurements_and_uidref_tracking_identifier() -> None:
    report = read_sr(sample("10"))
    assert report.reader == "walker" and report.sop_class_name == "Basic Text SR"
    assert [g.tracking_identifier for g in report.groups] == ["qay0k5nepj", "vfd7ybcztd", "nixvveul9co"]
    assert all(g.tracking_uid is None for g in report.groups)
    assert kinds(report, MeasurementKind.LENGTH)[2] == Decimal("4.059971840115625")
    assert any("UIDREF" in w for w in report.groups[0].warnings)


@pytest.mark.parametrize(
    ("prefix", "identifier", "value", "study_date"),
    [
        ("11", "0022", "39.579597", "2000-07-01"),
        ("12", "0022", "42.221249", "2000-08-10"),
        ("13", "0023", "36.611893", "2000-01-01"),
        ("14", "0023", "49.134548", "2000-07-12"),
    ],
)
def test_11_to_14_aim_private_template(prefix: str, identifier: str, value: str, study_date: str) -> None:
    report = read_sr(sample(prefix))
    assert report.template_id is None
    (g,) = report.groups
    assert g.tracking_identifier == identifier
    (m,) = [m for m in g.measurements if m.kind is MeasurementKind.LENGTH]
    assert m.value == Decimal(value) and m.unit == "mm"
    assert m.raw_unit is not None and (m.raw_unit.value, m.raw_unit.scheme_designator) == ("mm", "DCM")
    ctx = study_context(report)
    assert ctx.date is not None and ctx.date.isoformat() == study_date  # from the image library
    assert ctx.modality == "CT"  # from the referenced SOP class


def test_13_bogus_zero_uid_of_the_calculation_is_not_the_lesion_uid() -> None:
    (g,) = read_sr(sample("13")).groups
    assert g.tracking_uid == "1.2.288.3.2205383238.1512.1207946199.8"


def test_15_by_reference_items_and_private_units_are_kept_but_not_lesions() -> None:
    report = read_sr(sample("15"))
    diam = [m for g in report.groups for m in g.measurements if m.name.value == "1234"]
    assert diam and diam[0].value == 3 and diam[0].raw_unit is not None and diam[0].raw_unit.value == "cm"
    with pytest.raises(SRReadError, match="no usable lesion measurement"):
        require_measurements(report)


def test_17_deflated_transfer_syntax() -> None:
    report = read_sr(sample("17"))
    diam = [m for g in report.groups for m in g.measurements if m.name.value == "3333"]
    assert diam[0].value == Decimal("1.5") and diam[0].raw_unit is not None and diam[0].raw_unit.value == "cm"


def test_18_latin2_character_set_decodes() -> None:
    import pydicom

    ds = pydicom.dcmread(sample("18"))
    meanings = [i.ConceptNameCodeSequence[0].CodeMeaning for i in ds.ContentSequence]
    assert "Opisywane procedury" in meanings
    with pytest.raises(SRReadError, match="no measurement"):
        require_measurements(read_sr(sample("18")))


@pytest.mark.parametrize("prefix", ["16", "19"])
def test_reports_without_measurements(prefix: str) -> None:
    with pytest.raises(SRReadError, match="no measurement group"):
        require_measurements(read_sr(sample(prefix)))


@pytest.mark.parametrize("prefix", ["01", "02", "03", "06", "07", "08", "09"])
def test_walker_agrees_with_highdicom(prefix: str) -> None:
    via_hd = read_sr(sample(prefix))
    via_walker = read_sr(sample(prefix), use_highdicom=False)
    assert via_hd.reader == "highdicom" and via_walker.reader == "walker"

    def summary(r: SRReport) -> list[tuple[object, ...]]:
        return sorted(
            (
                g.tracking_identifier,
                g.tracking_uid,
                tuple(sorted((m.kind.value, str(m.value), m.unit) for m in g.measurements)),
                tuple(img.sop_instance_uid for img in g.images[:1]),
            )
            for g in r.groups
        )

    assert summary(via_hd) == summary(via_walker)


def test_aim_baseline_and_follow_up_link_by_identifier_text() -> None:
    from agent.pipeline.assemble import read_reports
    from agent.pipeline.tracking import build_timeline

    usable, failures, _ = read_reports([str(sample("11")), str(sample("12"))])
    assert not failures
    tracked = build_timeline(usable)
    (bl,), (fu,) = (tp.lesions for tp in tracked.timepoints)
    assert bl.lesion.id == fu.lesion.id == "0022"
    assert bl.lesion.kind.value == "target" and bl.lesion.long_axis_mm == Decimal("39.579597")
    assert fu.lesion.long_axis_mm == Decimal("42.221249")
    assert any("Tracking Identifier text" in n for n in fu.notes)
