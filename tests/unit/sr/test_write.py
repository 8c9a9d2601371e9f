"""The response SR we write: layout, round trip through our reader, evidence, determinism, pre-read, CLI.

Inputs are highdicom-written TID 1500 SRs of one patient (baseline, two follow-ups; see ``responsegen``).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset

from agent.pipeline.assemble import read_reports
from agent.pipeline.tracking import build_timeline, timeline_to_dict
from agent.response.model import Context, Criterion
from agent.response.parse import assessment_to_dict, timeline_from_dict
from agent.response.table import assess_timeline
from agent.sr import codes
from agent.sr.read import PRE_READ_REASON, SRReadError, read_sr, require_measurements
from agent.sr.write import derive_uid
from tests.unit.sr.responsegen import CONTEXT, Inputs, assess, dump, write_inputs
from tests.unit.sr.test_longitudinal import U

DEFAULT_ROOT = "2.25.208329370317461296372539217536313711491."


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return write_inputs(tmp_path_factory.mktemp("in"))


@pytest.fixture(scope="module")
def written(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("out")
    rc, out, err = assess(
        *inputs.all, "--out", d / "resp.dcm", "--summary", d / "sum.dcm", "--json", *CONTEXT
    )
    assert rc == 0, err
    return {"sr": d / "resp.dcm", "pdf": d / "sum.dcm", "json": json.loads(out), "dir": d}


def _items(ds: Dataset, *names: Any) -> list[Dataset]:
    """Content items along a path of concept names (codes.Code), depth-first."""
    found = [ds]
    for name in names:
        found = [
            c
            for item in found
            for c in getattr(item, "ContentSequence", [])
            if codes.matches(_concept(c), name)
        ]
    return found


def _concept(item: Dataset) -> codes.Code | None:
    seq = getattr(item, "ConceptNameCodeSequence", None)
    if not seq:
        return None
    c = seq[0]
    return codes.Code(c.get("CodeValue") or c.get("LongCodeValue"), c.CodingSchemeDesignator, c.CodeMeaning)


def _code_value(item: Dataset) -> codes.Code:
    c = item.ConceptCodeSequence[0]
    return codes.Code(c.get("CodeValue") or c.get("LongCodeValue"), c.CodingSchemeDesignator, c.CodeMeaning)


def _lesions(files: list[str]) -> dict[str, dict[str, Any]]:
    """Last time point of the dumped timeline: lesion id -> record."""
    rc, out, err = dump(*files)
    assert rc == 0, err
    data = json.loads(out)
    return {les["id"]: les for les in data["timepoints"][-1]["lesions"]}


# --------------------------------------------------------------------------------------------------------
# Header, flags, evidence


def test_header_flags_and_identity_say_machine_generated_and_unverified(written: dict[str, Any]) -> None:
    ds = pydicom.dcmread(written["sr"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == (
        "PARTIAL",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert ds.Manufacturer == "liver-agent"
    assert str(ds.SoftwareVersions) == __import__("agent").__version__
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert codes.matches(_concept(ds), codes.ONCOLOGY_MEASUREMENT_REPORT)
    comment = _items(ds, codes.QUALITATIVE_EVALUATIONS, codes.COMMENT)[0].TextValue
    assert "Machine-generated" in comment and "not verified by a radiologist" in comment
    schemes = {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}
    assert codes.PRIVATE_SCHEME in schemes


def test_in_the_current_study_new_series_patient_banner_from_the_header(
    inputs: Inputs, written: dict[str, Any]
) -> None:
    src = pydicom.dcmread(inputs.fu2)
    ds = pydicom.dcmread(written["sr"])
    pdf = pydicom.dcmread(written["pdf"])
    for attr in (
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
    ):
        assert ds[attr].value == src[attr].value == pdf[attr].value, attr
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.SeriesInstanceUID.startswith(DEFAULT_ROOT)


def test_summary_pdf_in_a_series_of_its_own_next_to_the_sr(written: dict[str, Any]) -> None:
    ds = pydicom.dcmread(written["sr"])
    pdf = pydicom.dcmread(written["pdf"])
    assert (ds.Modality, pdf.Modality) == ("SR", "DOC")
    assert pdf.StudyInstanceUID == ds.StudyInstanceUID
    assert pdf.SeriesInstanceUID != ds.SeriesInstanceUID
    assert pdf.SeriesInstanceUID.startswith(DEFAULT_ROOT)
    assert pdf.SeriesNumber != ds.SeriesNumber


def test_content_and_creation_date_time_are_when_the_objects_were_made(
    inputs: Inputs, written: dict[str, Any]
) -> None:
    from tests.unit.sr.conftest import FIXED_CLOCK

    src = pydicom.dcmread(inputs.fu2)
    made = (FIXED_CLOCK.strftime("%Y%m%d"), FIXED_CLOCK.strftime("%H%M%S"))
    for ds in (pydicom.dcmread(written["sr"]), pydicom.dcmread(written["pdf"])):
        assert (ds.ContentDate, ds.ContentTime) == made
        assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == made
        assert ds.StudyDate == src.StudyDate != ds.ContentDate


def test_evidence_current_images_and_prior_images_and_srs(inputs: Inputs, written: dict[str, Any]) -> None:
    ds = pydicom.dcmread(written["sr"])
    current = {
        sop.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    studies = {study.StudyInstanceUID for study in ds.CurrentRequestedProcedureEvidenceSequence}
    assert studies == {ds.StudyInstanceUID}
    other = {
        sop.ReferencedSOPInstanceUID
        for study in ds.PertinentOtherEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    bl, fu1, fu2 = (pydicom.dcmread(p) for p in (inputs.bl, inputs.fu1, inputs.fu2))
    assert fu2.SOPInstanceUID in current  # the measurement SR of this study
    fu2_images = {
        e.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for e in fu2.CurrentRequestedProcedureEvidenceSequence
    }
    assert fu2_images <= current
    assert {bl.SOPInstanceUID, fu1.SOPInstanceUID} <= other  # prior SRs
    prior_images = {
        sop.ReferencedSOPInstanceUID
        for src in (bl, fu1)
        for study in src.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert prior_images <= other
    assert "PredecessorDocumentsSequence" not in ds


# --------------------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_same_lesions_roles_values_and_tracking_uids(
    inputs: Inputs, written: dict[str, Any]
) -> None:
    before = _lesions(inputs.all)
    after = _lesions([str(written["sr"])])
    assert set(after) == set(before)
    for lesion_id, b in before.items():
        a = after[lesion_id]
        for key in ("kind", "status", "organ", "is_node", "long_axis_mm", "short_axis_mm", "mean_hu"):
            assert a[key] == b[key], (lesion_id, key)
        assert a.get("fragments_mm") == b.get("fragments_mm"), lesion_id
    assert after["liver seg IV"]["fragments_mm"] == [12, 10]
    assert after["liver seg VI"]["kind"] == "new" and after["liver seg VI"]["status"] == "equivocal"
    uids = {
        i: (a["source"].get("tracking_uid") or a["source"]["fragments"][0]["tracking_uid"])
        for i, a in after.items()
    }
    assert uids["liver seg VII"] == U["liver1"]  # the baseline's Tracking UID, carried over
    assert uids["liver seg IV"] == U["liver2"]
    assert uids["liver seg VI"] == U["newliver"]
    # Lesion without any Tracking UID in the inputs: a derived one under our root, the same on every run.
    assert uids["adrenal left"].startswith(DEFAULT_ROOT)
    assert uids["adrenal left"] == derive_uid(
        DEFAULT_ROOT, "tracking", "P1", pydicom.dcmread(inputs.bl).StudyInstanceUID, "adrenal left"
    )


def test_roles_are_written_as_baseline_category(written: dict[str, Any]) -> None:
    ds = pydicom.dcmread(written["sr"])
    groups = _items(ds, codes.IMAGING_MEASUREMENTS, codes.MEASUREMENT_GROUP)
    categories = [
        _code_value(item)
        for g in groups
        for item in g.ContentSequence
        if codes.matches(_concept(item), codes.BASELINE_CATEGORY)
    ]
    assert sum(codes.matches(c, codes.TARGET_LESION_AT_BASELINE) for c in categories) == 6  # 5 + a fragment
    assert sum(codes.matches(c, codes.NON_TARGET_LESION_AT_BASELINE) for c in categories) == 1


def test_assessing_the_timeline_extended_by_our_sr_gives_the_same_result(
    inputs: Inputs, written: dict[str, Any]
) -> None:
    d: Path = written["dir"]
    expected = written["json"]
    for files in ([inputs.bl, inputs.fu1, written["sr"]], [inputs.bl, inputs.fu1, inputs.fu2, written["sr"]]):
        rc, out, err = assess(*files, "--out", d / "again.dcm", "--json", *CONTEXT)
        assert rc == 0, err
        assert json.loads(out) == expected


def test_json_is_the_assessment_of_liver_agent_assess(inputs: Inputs, written: dict[str, Any]) -> None:
    _, out, _ = dump(*inputs.all)
    timeline = timeline_from_dict(json.loads(out))
    assert written["json"] == json.loads(json.dumps(assessment_to_dict(assess_timeline(timeline))))
    assert written["json"]["recist"]["timepoint_responses"][-1] == "PR"


def test_highdicom_reads_our_sr(written: dict[str, Any]) -> None:
    sr = hd.sr.srread(written["sr"])
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    planar = report.get_planar_roi_measurement_groups(tracking_uid=hd.UID(U["liver1"]))
    assert len(planar) == 1
    (long_axis,) = planar[0].get_measurements(name=codes.LONG_AXIS)
    assert long_axis.value == 36
    assert len(report.get_image_measurement_groups()) >= 3  # sums per time point (+ fragment 2)
    assert {tuple(e) for e in sr.get_evidence()}  # both evidence sequences parse


def test_reader_sees_no_warning_on_our_sr(written: dict[str, Any]) -> None:
    _, failures, file_warnings = read_reports([str(written["sr"])])
    assert not failures
    assert file_warnings[str(written["sr"])] == []
    report = require_measurements(read_sr(written["sr"]))
    assert report.manufacturer == "liver-agent"


# --------------------------------------------------------------------------------------------------------
# Patient-level result and alerts


def test_recist_result_uses_standard_codes_and_other_criteria_ours(written: dict[str, Any]) -> None:
    ds = pydicom.dcmread(written["sr"])
    qe = _items(ds, codes.QUALITATIVE_EVALUATIONS)[0].ContentSequence

    def by_method(name: codes.Code, method: codes.Code) -> list[codes.Code]:
        return [
            _code_value(item)
            for item in qe
            if codes.matches(_concept(item), name)
            and any(codes.matches(_code_value(m), method) for m in getattr(item, "ContentSequence", []))
        ]

    assert by_method(codes.CURRENT_RESPONSE, codes.RECIST_1_1) == [codes.CATEGORY_CODES["PR"]]
    assert by_method(codes.TARGET_RESPONSE, codes.RECIST_1_1) == [codes.TARGET_LESION_PR]
    assert by_method(codes.NON_TARGET_RESPONSE, codes.RECIST_1_1) == [codes.NON_TARGET_LESION_NON_CR_NON_PD]
    assert by_method(codes.BEST_OVERALL_RESPONSE, codes.RECIST_1_1) == [codes.CATEGORY_CODES["PR"]]
    irecist = codes.CRITERION_CODES[Criterion.IRECIST.value]
    assert by_method(codes.CURRENT_RESPONSE, irecist) == [codes.CATEGORY_CODES["iPR"]]
    chun = codes.CRITERION_CODES[Criterion.CHUN.value]
    assert by_method(codes.CURRENT_RESPONSE, chun) == [codes.CATEGORY_CODES["NE"]]
    thresholds = [i.TextValue for i in qe if codes.matches(_concept(i), codes.NEXT_THRESHOLD)]
    assert any("RECIST 1.1, the next read: PD if the target sum reaches >= 104.4 mm" in t for t in thresholds)


def test_every_alert_is_a_text_item_with_code_and_severity(written: dict[str, Any]) -> None:
    ds = pydicom.dcmread(written["sr"])
    alerts = _items(ds, codes.QUALITATIVE_EVALUATIONS, codes.ALERT)
    expected = sorted((a["code"], a["severity"]) for a in written["json"]["alerts"])
    got = []
    for item in alerts:
        mods = item.ContentSequence
        code = next(m.TextValue for m in mods if codes.matches(_concept(m), codes.ALERT_CODE))
        severity = next(_code_value(m) for m in mods if codes.matches(_concept(m), codes.ALERT_SEVERITY))
        assert code in item.TextValue
        got.append((code, next(k for k, v in codes.SEVERITY_CODES.items() if codes.matches(severity, v))))
    assert sorted(got) == expected
    assert ("NEW_LESION_EQUIVOCAL", "warning") in got


def test_sum_groups_mark_baseline_and_nadir_and_carry_changes(written: dict[str, Any]) -> None:
    ds = pydicom.dcmread(written["sr"])
    groups = [
        g
        for g in _items(ds, codes.IMAGING_MEASUREMENTS, codes.MEASUREMENT_GROUP)
        if any(
            codes.matches(_concept(i), codes.FINDING)
            and codes.matches(_code_value(i), codes.TARGET_SUM_FINDING)
            for i in g.ContentSequence
        )
    ]
    assert len(groups) == 3
    types = [
        _code_value(next(i for i in g.ContentSequence if codes.matches(_concept(i), codes.TIME_POINT_TYPE)))
        for g in groups
    ]
    assert [t.value for t in types] == [codes.BASELINE.value, codes.NADIR.value, codes.POSTTREATMENT.value]

    def nums(g: Dataset) -> dict[str, Decimal]:
        return {
            _concept(i).value: Decimal(str(i.MeasuredValueSequence[0].NumericValue))  # type: ignore[union-attr]
            for i in g.ContentSequence
            if i.ValueType == "NUM" and i.RelationshipType == "CONTAINS"
        }

    assert nums(groups[0]) == {codes.MEASUREMENT_OF_RESPONSE.value: Decimal(130)}
    current = nums(groups[2])
    assert current[codes.MEASUREMENT_OF_RESPONSE.value] == 92
    assert current[codes.CHANGE_VS_BASELINE.value] == Decimal("-29.2")
    assert current[codes.CHANGE_VS_NADIR.value] == Decimal("5.7")
    assert current[codes.PD_THRESHOLD.value] == Decimal("104.4")
    assert current[codes.PR_THRESHOLD.value] == Decimal("91.0")


# --------------------------------------------------------------------------------------------------------
# Determinism, org root, predecessors


def test_same_inputs_same_bytes_and_uids_follow_the_org_root(
    inputs: Inputs, written: dict[str, Any], tmp_path: Path
) -> None:
    rc, _, err = assess(
        *inputs.all, "--out", tmp_path / "a.dcm", "--summary", tmp_path / "a-pdf.dcm", *CONTEXT
    )
    assert rc == 0, err
    assert (tmp_path / "a.dcm").read_bytes() == written["sr"].read_bytes()
    assert (tmp_path / "a-pdf.dcm").read_bytes() == written["pdf"].read_bytes()
    config = tmp_path / "agent.yaml"
    config.write_text("uids:\n  org_root: '1.2.3.4.5'\n")
    rc, _, err = assess(*inputs.all, "--out", tmp_path / "b.dcm", "-c", config, *CONTEXT)
    assert rc == 0, err
    b = pydicom.dcmread(tmp_path / "b.dcm")
    assert b.SOPInstanceUID.startswith("1.2.3.4.5.") and b.SeriesInstanceUID.startswith("1.2.3.4.5.")


def test_new_version_lists_our_earlier_sr_as_predecessor(
    inputs: Inputs, written: dict[str, Any], tmp_path: Path
) -> None:
    earlier = pydicom.dcmread(written["sr"])
    # The radiologist corrects follow-up 2 (a new SR for the same study); ours is passed in as well.
    from tests.unit.sr.responsegen import DATES
    from tests.unit.sr.srgen import write_study_sr
    from tests.unit.sr.test_longitudinal import P, follow_up_2

    fixed, _ = write_study_sr(
        tmp_path,
        "fu2-fixed",
        patient_id=P,
        study="fu2",
        study_date=DATES["fu2"],
        lesions=follow_up_2(liver1=40),
        content_time="130000",
    )
    rc, _, err = assess(
        inputs.bl, inputs.fu1, fixed, written["sr"], "--out", tmp_path / "v2.dcm", "--json", *CONTEXT
    )
    assert rc == 0, err
    v2 = pydicom.dcmread(tmp_path / "v2.dcm")
    predecessors = [
        sop.ReferencedSOPInstanceUID
        for study in v2.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    ]
    assert predecessors == [earlier.SOPInstanceUID]
    assert v2.SOPInstanceUID != earlier.SOPInstanceUID and v2.SeriesInstanceUID == earlier.SeriesInstanceUID
    assert (
        _lesions([str(tmp_path / "v2.dcm")])["liver seg VII"]["long_axis_mm"] == 40
    )  # the new values, not ours


# --------------------------------------------------------------------------------------------------------
# Pre-read


def test_pre_read_carries_priors_and_thresholds_for_the_current_read(inputs: Inputs, tmp_path: Path) -> None:
    rc, out, err = assess(*inputs.all, "--pre-read", "--out", tmp_path / "pre.dcm", "--json", *CONTEXT)
    assert rc == 0, err
    data = json.loads(out)
    assert len(data["recist"]["timepoint_responses"]) == 2  # the priors only
    ds = pydicom.dcmread(tmp_path / "pre.dcm")
    assert ds.StudyInstanceUID == pydicom.dcmread(inputs.fu2).StudyInstanceUID
    kind = _items(ds, codes.QUALITATIVE_EVALUATIONS, codes.REPORT_KIND)
    assert codes.matches(_code_value(kind[0]), codes.PRE_READ)
    qe = _items(ds, codes.QUALITATIVE_EVALUATIONS)[0].ContentSequence
    texts = [i.TextValue for i in qe if i.ValueType == "TEXT"]
    assert any(t.startswith("PRE-READ for FU2 2024-05-06") for t in texts)
    assert any("the current read: PD if the target sum reaches >= 104.4 mm" in t for t in texts)
    assert any(
        t.startswith("T1 liver seg VII")
        and "current (fu2) pending" in t
        and "previous = nadir (fu1) 35 mm" in t
        for t in texts
    )
    groups = _items(ds, codes.IMAGING_MEASUREMENTS, codes.MEASUREMENT_GROUP)
    assert len(groups) == 3  # sums at BL and FU1, thresholds for FU2; no lesion group
    with pytest.raises(SRReadError) as exc:
        require_measurements(read_sr(tmp_path / "pre.dcm"))
    assert exc.value.reason == PRE_READ_REASON
    # The pre-read among the inputs is set aside, not an error.
    rc, _, err = assess(*inputs.all, tmp_path / "pre.dcm", "--out", tmp_path / "post.dcm", *CONTEXT)
    assert rc == 0, err


# --------------------------------------------------------------------------------------------------------
# CLI edges


def test_unusable_file_exits_2_and_writes_nothing(inputs: Inputs, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom")
    rc, _, err = assess(inputs.bl, bad, "--out", tmp_path / "x.dcm")
    assert rc == 2
    assert "not a DICOM file" in err and "Traceback" not in err
    assert not (tmp_path / "x.dcm").exists()


def test_pre_read_needs_a_prior(inputs: Inputs, tmp_path: Path) -> None:
    rc, _, err = assess(inputs.bl, "--pre-read", "--out", tmp_path / "x.dcm")
    assert rc == 2 and "at least one earlier study" in err


def test_tracking_context_in_dump_of_our_sr_names_the_current_study(
    written: dict[str, Any], inputs: Inputs
) -> None:
    usable, _, _ = read_reports([str(written["sr"])])
    tracked = build_timeline(usable, Context(None, "CRC"))
    data = timeline_to_dict(tracked)
    assert data["timepoints"][0]["study_instance_uid"] == pydicom.dcmread(inputs.fu2).StudyInstanceUID
    assert data["timepoints"][0]["date"] == "2024-05-06"


def test_an_image_referenced_without_evidence_is_refused() -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm

    from agent.sr.write import _check_evidence

    image = hd.sr.ImageContentItem(
        dcm.DCM.SourceOfMeasurement, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )  # fmt: skip
    group = hd.sr.ContainerContentItem(
        dcm.DCM.MeasurementGroup, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    group.ContentSequence = [image]
    root = hd.sr.ContainerContentItem(dcm.DCM.ImagingMeasurementReport)
    root.ContentSequence = [group]
    known = Dataset()
    known.SOPInstanceUID = "1.2.3.4.5"
    other = Dataset()
    other.SOPInstanceUID = "1.2.3.4.6"
    _check_evidence(root, [other, known])
    with pytest.raises(ValueError, match=r'No evidence .* "1\.2\.3\.4\.5"'):
        _check_evidence(root, [other])
