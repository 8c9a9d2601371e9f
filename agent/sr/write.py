"""Write the response report back as DICOM: a TID 1500 Comprehensive SR and an Encapsulated PDF summary.

This module is the only place that knows how our SR is laid out (PS3.16 TID 1500, via highdicom)::

    CONTAINER (126001, DCM, "Oncology Measurement Report")                     TID 1500
      language; observer = device "liver-agent" (TID 1004); procedure reported (CID 100)
      CONTAINER (126010, DCM, "Imaging Measurements")
        per lesion at the current time point (per fragment of a split lesion), TID 1410 when the lesion was
        drawn on a known image (SCOORD -> IMAGE), else TID 1501 (source images):
          Tracking Identifier + Tracking UID (the baseline's; a derived UID for lesions first seen now)
          TID 1502 time point context (Time Point "FU2 2024-05-06", Subject Time Point Identifier "FU2",
            Time Point Type Baseline / Nadir / Posttreatment, Time Point Order)
          Finding (Lesion | Lymph node), Finding Site
          NUM Long axis, Short axis [mm]; Attenuation Coefficient + Derivation Mean [HU]
          CODE Baseline Category (target / non-target) or, for new lesions, our role code; our status code
        per time point of the timeline, a TID 1501 group "Sum of target lesion diameters" (one Tracking UID
        for the sum of this patient): NUM Measurement of Response [mm]; the current (pre-read: the pending)
        one also % change from baseline and nadir and the target sums that change the next category
      CONTAINER (C0034375, UMLS, "Qualitative Evaluations")                      CODE and TEXT only
        CODE report kind (response / pre-read); TEXT Comment "machine-generated, not verified ..."
        per criterion: CODE Current Response, Target / Non-target response (CID 6143/6144 where the
          standard has the code, else ours), new lesion yes/no, Best Overall Response, TEXT rule; each
          modified by CODE Response Evaluation Method (126081 RECIST 1.1, else our criterion code)
        TEXT threshold for the next category; TEXT one line per lesion;
        TEXT per alert (modifiers: TEXT alert code, CODE severity)

Our codes (scheme ``99LIVERAGENT``) are declared in the Coding Scheme Identification Sequence. Evidence: the
current study's instances go to Current Requested Procedure Evidence, prior images and prior SRs to Pertinent
Other Evidence; an earlier SR of ours for the same study goes to Predecessor Documents. Completion PARTIAL,
verification UNVERIFIED, preliminary PRELIMINARY: machine output until a radiologist signs a new version.

Series: the SR (Modality SR) and the PDF summary (Modality DOC) each go in a series of their own in the
current study, side by side (a series holds one modality; a PACS may merge or refuse a mixed one).

Determinism: every UID is derived from ``org_root`` and stable inputs by hashing (:func:`derive_uid`), so
the same inputs give the same UIDs. Content Date/Time and Instance Creation Date/Time say when the object
was made (:data:`clock`, the local wall clock; a caller may pass ``created``), never the study's date. Never
imports the database or the network; the caller passes the UID root
(``agent.config.UIDSettings.org_root``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from agent import __version__
from agent.response.model import Category, Criterion, CriterionResult, Lesion, LesionKind, Threshold
from agent.response.parse import assessment_to_dict
from agent.sr import codes
from agent.sr.codes import Code
from agent.sr.hdcontent import attach_content
from agent.sr.report import (
    Instance,
    LesionDicom,
    ResponseReport,
    Table,
    criterion_explanation,
    criterion_name,
    criterion_summary,
    fmt_mm,
    fmt_pct,
    marker_status_lines,
    metabolic_lines,
    site_split_lines,
    sorted_alerts,
    table,
    threshold_text,
)

AGENT_NAME = "liver-agent"
SERIES_NUMBER = 7701
SERIES_DESCRIPTION = "liver-agent tumour response (unverified)"
SUMMARY_SERIES_NUMBER = 7702
SUMMARY_SERIES_DESCRIPTION = "liver-agent tumour response summary (unverified)"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
SUM_IDENTIFIER = "Sum of target lesion diameters"
_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
_MODIFIER = hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD
_CONTENT_SEQUENCE = 0x0040A730
_PROCEDURES = {
    "CT": codes.CT_UNSPECIFIED_BODY_REGION,
    "MR": codes.MR_UNSPECIFIED_BODY_REGION,
    "PT": codes.PET_UNSPECIFIED_BODY_REGION,
}
_ORGAN_CODES = {organ: code for code, organ in codes.ORGANS}


def derive_uid(org_root: str, *parts: object) -> str:
    """A UID under ``org_root`` derived from ``parts`` (SHA-256): the same parts always give the same UID."""
    root = org_root.rstrip(".") + "."
    digest = int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:20], "big")
    room = 64 - len(root)
    if room < 10:
        raise ValueError(f"UID root {org_root!r} leaves fewer than 10 digits for the suffix")
    return root + str(digest)[:room]


def fingerprint(report: ResponseReport) -> str:
    """Hash of everything the report says: equal fingerprints mean equal content (and equal UIDs)."""
    tl = report.timeline
    lesions = [
        [
            tp.date.isoformat(),
            tp.modality,
            [
                [les.id, les.kind.value, les.status.value, les.organ, les.is_node]
                + [str(v) for v in (les.long_axis_mm, les.short_axis_mm, les.mean_hu, les.fragments_mm)]
                for les in tp.lesions
            ],
        ]
        for tp in tl.timepoints
    ]
    dicom = {
        key: {
            "uid": v.tracking_uid,
            "identifier": v.tracking_identifier,
            "sites": [c.value for c in v.site_codes],
            "images": [i.sop_instance_uid for i in v.images],
            "regions": [list(r.points) for r in v.regions],
        }
        for key, v in sorted(report.lesions.items())
    }
    payload = {
        "version": __version__,
        "pre_read": report.pre_read,
        "patient": [report.patient.name, report.patient.patient_id],
        "studies": [[s.study_uid, s.date.isoformat()] for s in report.studies],
        "current": report.current.study_uid,
        "lesions": lesions,
        "dicom": dicom,
        "assessment": assessment_to_dict(report.assessment),
        "evidence": sorted(i.sop_instance_uid for i in report.evidence),
        "predecessors": sorted(i.sop_instance_uid for i in report.predecessors),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def series_uid(report: ResponseReport, org_root: str) -> str:
    """Our series in the current study (every version of our report for that study goes there)."""
    return derive_uid(org_root, "response-series", report.current.study_uid)


def summary_series_uid(report: ResponseReport, org_root: str) -> str:
    """The PDF summaries' series, next to :func:`series_uid` in the current study."""
    return derive_uid(org_root, "response-summary-series", report.current.study_uid)


def _local_now() -> datetime:
    return datetime.now().astimezone()


#: When an object is made (local time). Tests that compare bytes replace it with a fixed clock.
clock: Callable[[], datetime] = _local_now


def _created(created: datetime | None) -> tuple[str, str]:
    """(Content Date, Content Time): ``created``, else the clock now."""
    when = created if created is not None else clock()
    return when.strftime("%Y%m%d"), when.strftime("%H%M%S")


# --------------------------------------------------------------------------------------------------------
# The SR


def response_sr(
    report: ResponseReport, *, org_root: str, created: datetime | None = None
) -> hd.sr.ComprehensiveSR:
    """The response SR (Comprehensive SR, TID 1500) of ``report`` in a new series of the current study."""
    tab = table(report)
    groups: list[Any] = []
    if not report.pre_read:
        groups += _lesion_groups(report, org_root, tab)
    groups += _sum_groups(report, org_root, tab)
    device = hd.sr.ObserverContext(
        observer_type=_code(codes.DEVICE),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid(org_root, "device", AGENT_NAME),
            name=AGENT_NAME,
            manufacturer_name=AGENT_NAME,
            model_name=f"{AGENT_NAME} {__version__}",
        ),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=_PROCEDURES.get(report.current.modality or "CT", codes.CT_UNSPECIFIED_BODY_REGION),
        imaging_measurements=groups,
        title=codes.ONCOLOGY_MEASUREMENT_REPORT,
    )
    root: Any = content[0]  # the root CONTAINER item (a highdicom ContainerContentItem)
    root.ContentSequence.append(_qualitative_evaluations(report, tab))
    evidence = _evidence_datasets(report)
    _check_evidence(root, evidence)
    content_date, content_time = _created(created)
    fp = fingerprint(report)
    # highdicom's constructor deep-copies the content it is given, parses the copy again and searches the
    # whole tree for references: it gets the root without its children (the tree, built here with
    # highdicom's own classes, is attached afterwards by agent.sr.hdcontent); _check_evidence did the search.
    shallow = Dataset()
    for elem in root:
        shallow.add(elem if elem.tag != _CONTENT_SEQUENCE else DataElement(_CONTENT_SEQUENCE, "SQ", []))
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=shallow,
        series_instance_uid=series_uid(report, org_root),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derive_uid(org_root, "response-sr", report.current.study_uid, fp),
        instance_number=1,
        manufacturer=AGENT_NAME,
        is_complete=False,
        is_final=False,
        is_verified=False,
        previous_versions=[_reference_dataset(p) for p in report.predecessors] or None,
        coding_schemes=[_private_scheme()],
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=AGENT_NAME,
        software_versions=__version__,
        content_date=content_date,
        content_time=content_time,
        series_date=content_date,
        series_time=content_time,
        specific_character_set="ISO_IR 192",
    )
    attach_content(sr, root)
    sr.InstanceCreationDate = DA(content_date)
    sr.InstanceCreationTime = TM(content_time)
    for equipment in sr.get("ContributingEquipmentSequence", []):  # highdicom stamps its clock here
        equipment.ContributionDateTime = content_date + content_time
    _set_character_set(sr)
    return sr


def _check_evidence(root: Dataset, evidence: Sequence[Dataset]) -> None:
    """Every instance an IMAGE or COMPOSITE item references is in the evidence (highdicom's own check)."""
    known = {str(e.SOPInstanceUID) for e in evidence}
    missing: set[str] = set()
    stack = list(root.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        if item.get("ValueType") in ("IMAGE", "COMPOSITE"):
            uid = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            if uid not in known:
                missing.add(uid)
        stack.extend(item.get("ContentSequence", []))
    if missing:
        raise ValueError(
            "No evidence was provided for the following SOP instances, which are referenced in the "
            'document content: "{}"'.format('", "'.join(sorted(missing)))
        )


def _set_character_set(ds: Dataset) -> None:
    """Default repertoire when every text is ASCII, else UTF-8 (ISO_IR 192), whatever the source used."""
    ascii_only = True

    def visit(dataset: Dataset, elem: Any) -> None:
        nonlocal ascii_only
        if elem.VR in ("SH", "LO", "ST", "LT", "UT", "PN", "UC") and elem.value is not None:
            values = elem.value if isinstance(elem.value, (list, tuple)) else [elem.value]
            if any(not str(v).isascii() for v in values):
                ascii_only = False

    ds.walk(visit)
    if ascii_only:
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = "ISO_IR 192"


def _private_scheme() -> CodingSchemeIdentificationItem:
    return CodingSchemeIdentificationItem(
        designator=codes.PRIVATE_SCHEME,
        name=codes.PRIVATE_SCHEME_NAME,
        version=__version__,
        responsible_organization=AGENT_NAME,
    )


def _code(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def _reference_dataset(instance: Instance) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = instance.study_uid
    ds.SeriesInstanceUID = instance.series_uid
    ds.SOPClassUID = instance.sop_class_uid
    ds.SOPInstanceUID = instance.sop_instance_uid
    return ds


def _evidence_datasets(report: ResponseReport) -> list[Dataset]:
    """Evidence for highdicom: a current-study instance first (it gives the SR its patient and study)."""
    evidence = sorted(
        dict.fromkeys(report.evidence),
        key=lambda i: (
            i.study_uid != report.current.study_uid,
            i.study_uid,
            i.series_uid,
            i.sop_instance_uid,
        ),
    )
    if not evidence or evidence[0].study_uid != report.current.study_uid:
        raise ValueError("no instance of the current study is known: the SR needs one as evidence")
    datasets = [_reference_dataset(i) for i in evidence]
    head = datasets[0]
    patient, study = report.patient, report.current
    head.PatientName = patient.name
    head.PatientID = patient.patient_id
    head.PatientBirthDate = patient.birth_date or ""
    head.PatientSex = patient.sex or ""
    head.StudyDate = study.date.strftime("%Y%m%d")
    head.StudyTime = study.time or ""
    head.AccessionNumber = study.accession or ""
    head.StudyID = study.study_id or ""
    head.ReferringPhysicianName = study.referring_physician or ""
    if study.description:
        head.StudyDescription = study.description
    return datasets


def _time_point(report: ResponseReport, index: int, tab: Table) -> hd.sr.TimePointContext:
    label = report.label(index)
    if index == report.timeline.baseline_index:
        kind = codes.BASELINE
    elif index == tab.nadir_index:
        kind = codes.NADIR
    else:
        kind = codes.POSTTREATMENT
    when = report.studies[index].date if index < len(report.studies) else report.current.date
    return hd.sr.TimePointContext(
        time_point=f"{label} {when.isoformat()}",
        time_point_type=_code(kind),
        time_point_order=index + 1,
        subject_time_point_identifier=label,
    )


def _first_seen_study(report: ResponseReport, lesion_id: str) -> str:
    for study, tp in zip(report.studies, report.timeline.timepoints, strict=True):
        if any(les.id == lesion_id for les in tp.lesions):
            return study.study_uid
    return report.current.study_uid


def tracking_uid(report: ResponseReport, lesion_id: str, org_root: str) -> str:
    """The lesion's Tracking UID: the one carried over from the baseline, else one derived for it."""
    known = report.lesions.get(lesion_id)
    if known is not None and known.tracking_uid:
        return known.tracking_uid
    first = _first_seen_study(report, lesion_id)
    return derive_uid(org_root, "tracking", report.patient.patient_id, first, lesion_id)


def _lesion_groups(report: ResponseReport, org_root: str, tab: Table) -> list[Any]:
    index = len(report.studies) - 1
    tp = report.timeline.timepoints[index]
    by_uid = {i.sop_instance_uid: i for i in report.evidence}
    groups: list[Any] = []
    for lesion in tp.lesions:
        dicom = report.lesions.get(lesion.id, LesionDicom())
        uid = tracking_uid(report, lesion.id, org_root)
        name = dicom.tracking_identifier or lesion.id
        parts: list[tuple[str, Decimal | None, bool]] = [(name, lesion.long_axis_mm, True)]
        if lesion.fragments_mm:  # one group per fragment, one Tracking UID: the reader joins them again
            n = len(lesion.fragments_mm)
            parts = [
                (name if k == 0 else f"{name} (fragment {k + 1} of {n})", value, k == 0)
                for k, value in enumerate(lesion.fragments_mm)
            ]
        for identifier, long_axis, first in parts:
            groups.append(
                _lesion_group(
                    report,
                    lesion,
                    dicom,
                    identifier,
                    uid,
                    long_axis,
                    first,
                    _time_point(report, index, tab),
                    by_uid,
                )
            )
    return groups


def _lesion_group(
    report: ResponseReport,
    lesion: Lesion,
    dicom: LesionDicom,
    identifier: str,
    uid: str,
    long_axis: Decimal | None,
    first: bool,
    time_point: hd.sr.TimePointContext,
    by_uid: dict[str, Instance],
) -> Any:
    measurements = []
    if long_axis is not None:
        measurements.append(_num(codes.LONG_AXIS, long_axis, codes.MILLIMETER))
    if first and lesion.short_axis_mm is not None:
        measurements.append(_num(codes.SHORT_AXIS, lesion.short_axis_mm, codes.MILLIMETER))
    if first and lesion.mean_hu is not None:
        measurements.append(
            hd.sr.Measurement(
                name=_code(codes.ATTENUATION_COEFFICIENT),
                value=float(lesion.mean_hu),
                unit=_code(codes.HOUNSFIELD_UNIT),
                derivation=_code(codes.MEAN),
            )
        )
    evaluations = []
    if lesion.kind is LesionKind.TARGET:
        evaluations.append(_evaluation(codes.BASELINE_CATEGORY, codes.TARGET_LESION_AT_BASELINE))
    elif lesion.kind is LesionKind.NON_TARGET:
        evaluations.append(_evaluation(codes.BASELINE_CATEGORY, codes.NON_TARGET_LESION_AT_BASELINE))
    else:
        evaluations.append(_evaluation(codes.LESION_ROLE, codes.ROLE_NEW))
    status = lesion.status.value
    evaluations.append(
        _evaluation(codes.LESION_STATUS, Code(status, codes.PRIVATE_SCHEME, status.replace("_", " ")))
    )
    sites = dicom.site_codes or ((_ORGAN_CODES[lesion.organ],) if lesion.organ in _ORGAN_CODES else ())
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=uid, identifier=identifier),
        "time_point_context": time_point,
        "finding_type": _code(codes.LYMPH_NODE if lesion.is_node else codes.LESION),
        "finding_sites": [hd.sr.FindingSite(_code(s)) for s in sites],
        "measurements": measurements or None,
        "qualitative_evaluations": evaluations,
    }
    region = _region(dicom, by_uid) if first else None
    if region is not None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
    images = [
        hd.sr.SourceImageForMeasurementGroup(
            by_uid[img.sop_instance_uid].sop_class_uid, img.sop_instance_uid, list(img.frames) or None
        )
        for img in dicom.images
        if img.sop_instance_uid in by_uid
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(source_images=images or None, **common)


def _region(dicom: LesionDicom, by_uid: dict[str, Instance]) -> hd.sr.ImageRegion | None:
    """The first 2D region drawn on an image we can list as evidence (3D regions are not carried)."""
    for region in dicom.regions:
        if region.frame_of_reference_uid is not None or region.image is None:
            continue
        instance = by_uid.get(region.image.sop_instance_uid)
        if instance is None or len(region.points) < 2 or len(region.points) % 2:
            continue
        try:
            return hd.sr.ImageRegion(
                graphic_type=region.graphic_type,
                graphic_data=np.array(region.points, dtype=float).reshape(-1, 2),
                source_image=hd.sr.SourceImageForRegion(
                    instance.sop_class_uid, instance.sop_instance_uid, list(region.image.frames) or None
                ),
            )
        except (ValueError, TypeError):
            continue  # a region highdicom refuses (e.g. wrong point count): reference the image only
    return None


def _num(name: Code, value: Decimal, unit: Code) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=_code(name), value=float(value), unit=_code(unit))


def _evaluation(name: Code, value: Code) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(_code(name), _code(value))


def _round(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"))


def _sum_groups(report: ResponseReport, org_root: str, tab: Table) -> list[Any]:
    """One group per time point holding the target sum; the current (or pending) one adds % and thresholds."""
    uid = derive_uid(org_root, "target-sum", report.patient.patient_id, report.studies[0].study_uid)
    groups: list[Any] = []
    last = len(report.studies) - 1
    indices = list(range(len(report.studies))) + ([len(report.studies)] if report.pre_read else [])
    for index in indices:
        measurements = []
        total = tab.sums_by_timepoint[index] if index < len(tab.sums_by_timepoint) else None
        if total is not None:
            measurements.append(_num(codes.MEASUREMENT_OF_RESPONSE, total, codes.MILLIMETER))
        is_current = index == (len(report.studies) if report.pre_read else last)
        if is_current and not report.pre_read:
            if tab.change_vs_baseline_pct is not None:
                measurements.append(
                    _num(codes.CHANGE_VS_BASELINE, _round(tab.change_vs_baseline_pct), codes.PERCENT)
                )
            if tab.change_vs_nadir_pct is not None:
                measurements.append(
                    _num(codes.CHANGE_VS_NADIR, _round(tab.change_vs_nadir_pct), codes.PERCENT)
                )
        if is_current:
            for t in tab.thresholds:
                if t.quantity == "target_sum_mm":
                    name = codes.PD_THRESHOLD if t.category is Category.PD else codes.PR_THRESHOLD
                    measurements.append(_num(name, _round(t.value), codes.MILLIMETER))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=SUM_IDENTIFIER),
                time_point_context=_time_point(report, index, tab),
                finding_type=_code(codes.TARGET_SUM_FINDING),
                measurements=measurements or None,
            )
        )
    return groups


# --------------------------------------------------------------------------------------------------------
# Qualitative Evaluations: the patient-level result


def _item(name: Code, value: Code | str, relationship: Any = _CONTAINS, *modifiers: Any) -> Any:
    item: Any
    if isinstance(value, str):
        item = hd.sr.TextContentItem(_code(name), value, relationship_type=relationship)
    else:
        item = hd.sr.CodeContentItem(_code(name), _code(value), relationship_type=relationship)
    if modifiers:
        item.ContentSequence = hd.sr.ContentSequence(list(modifiers))
    return item


def _method(criterion: Criterion) -> Any:
    return _item(codes.RESPONSE_EVALUATION_METHOD, codes.CRITERION_CODES[criterion.value], _MODIFIER)


def _sub_response(category: Category, standard: dict[str, Code]) -> Code:
    return standard.get(category.value) or codes.CATEGORY_CODES[category.value]


def _criterion_items(report: ResponseReport, result: CriterionResult) -> list[Any]:
    c = result.criterion
    items: list[Any] = []
    current = report.current_index
    tp = result.timepoints[current] if current is not None and current > 0 else None
    # CID 6143/6144 hold target and non-target lesion responses of size-based criteria only.
    size_based = c in (Criterion.RECIST, Criterion.CHOI, Criterion.MCHOI, Criterion.MRECIST, Criterion.EASL)
    if tp is not None:
        items.append(
            _item(codes.CURRENT_RESPONSE, codes.CATEGORY_CODES[tp.category.value], _CONTAINS, _method(c))
        )
        if tp.target is not Category.NONE or tp.non_target is not Category.NONE:
            t_std = codes.TARGET_RESPONSE_CODES if size_based else {}
            nt_std = codes.NON_TARGET_RESPONSE_CODES if size_based else {}
            items.append(
                _item(codes.TARGET_RESPONSE, _sub_response(tp.target, t_std), _CONTAINS, _method(c)),
            )
            items.append(
                _item(codes.NON_TARGET_RESPONSE, _sub_response(tp.non_target, nt_std), _CONTAINS, _method(c)),
            )
            items.append(
                _item(codes.NEW_LESIONS, codes.YES if tp.new_lesion else codes.NO, _CONTAINS, _method(c)),
            )
    items.append(
        _item(codes.BEST_OVERALL_RESPONSE, codes.CATEGORY_CODES[result.bor.value], _CONTAINS, _method(c))
    )
    items.append(_item(codes.RESPONSE_RULE, criterion_summary(report, result), _CONTAINS, _method(c)))
    for line in criterion_explanation(report, result):
        items.append(_item(codes.RESPONSE_EXPLANATION, line, _CONTAINS, _method(c)))
    return items


def _thresholds(report: ResponseReport) -> list[tuple[Criterion, Threshold]]:
    return [(r.criterion, t) for r in report.assessment.results for t in r.next_thresholds]


def threshold_sentence(report: ResponseReport, criterion: Criterion, t: Threshold) -> str:
    read = "the current read" if report.pre_read else "the next read"
    return f"{criterion_name(criterion)}, {read}: {threshold_text(t)} ({t.rule})"


def lesion_sentence(report: ResponseReport, tab: Table, row_index: int) -> str:
    row = tab.rows[row_index]
    cells = "; ".join(
        f"{col.title.lower()} {value}" for col, value in zip(tab.columns, row.values, strict=True)
    )
    axis = ", short axis" if row.is_node else ""
    return f"{row.label} {row.name} ({row.kind.value}, {row.organ}{axis}): {cells}"


def machine_notice(report: ResponseReport) -> str:
    kind = (
        f"PRE-READ for {report.current_label} {report.current.date.isoformat()}: prior measurements only, "
        "the current study has not been measured yet. "
        if report.pre_read
        else ""
    )
    return (
        f"{kind}Machine-generated by {AGENT_NAME} {__version__} from the measurements of "
        f"{len(report.studies)} studies; not verified by a radiologist."
    )


def _qualitative_evaluations(report: ResponseReport, tab: Table) -> Any:
    container = hd.sr.ContainerContentItem(_code(codes.QUALITATIVE_EVALUATIONS), relationship_type=_CONTAINS)
    items: list[Any] = [
        _item(codes.REPORT_KIND, codes.PRE_READ if report.pre_read else codes.RESPONSE_READ),
        _item(codes.COMMENT, machine_notice(report)),
    ]
    for result in report.assessment.results:
        items += _criterion_items(report, result)
    if tab.nadir_index is not None or tab.change_vs_baseline_pct is not None:
        sums = "; ".join(
            f"{col.title.lower()} {fmt_mm(value) if col.index is not None else 'pending'}"
            for col, value in zip(tab.columns, tab.sums, strict=True)
        )
        change = ""
        if tab.change_vs_baseline_pct is not None or tab.change_vs_nadir_pct is not None:
            change = (
                f"; change {fmt_pct(tab.change_vs_baseline_pct)} vs baseline, "
                f"{fmt_pct(tab.change_vs_nadir_pct)} vs nadir"
            )
        items.append(_item(codes.COMMENT, f"Sum of target lesion diameters: {sums}{change}"))
    for line in site_split_lines(report):
        items.append(_item(codes.COMMENT, f"By site: {line}"))
    for line in marker_status_lines(report):
        items.append(_item(codes.COMMENT, f"Tumour marker: {line}"))
    for line in metabolic_lines(report):
        items.append(_item(codes.COMMENT, f"Metabolic response: {line}"))
    for criterion, t in _thresholds(report):
        items.append(
            _item(
                codes.NEXT_THRESHOLD, threshold_sentence(report, criterion, t), _CONTAINS, _method(criterion)
            )
        )
    for k in range(len(tab.rows)):
        items.append(_item(codes.LESION_SUMMARY, lesion_sentence(report, tab, k)))
    for row in tab.rows:  # how each mean HU the SRs did not give was obtained; phases nobody could tell
        dicom = report.lesions.get(row.lesion_id)
        for index, how in dicom.hu_computed if dicom is not None else ():
            items.append(_item(codes.COMMENT, f"{row.label} {row.name} {report.label(index)}: {how}"))
        for index, why in dicom.phase_unknown if dicom is not None else ():
            items.append(_item(codes.COMMENT, f"{row.label} {row.name} {report.label(index)}: {why}"))
    for alert in sorted_alerts(report):
        where = "" if alert.timepoint is None else f" [{report.label(alert.timepoint)}]"
        items.append(
            _item(
                codes.ALERT,
                f"{alert.severity.value.upper()} {alert.code}{where}: {alert.message}"
                + (f" ({alert.citation})" if alert.citation else ""),
                _CONTAINS,
                _item(codes.ALERT_CODE, alert.code, _MODIFIER),
                _item(codes.ALERT_SEVERITY, codes.SEVERITY_CODES[alert.severity.value], _MODIFIER),
            )
        )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


# --------------------------------------------------------------------------------------------------------
# The human-readable summary: Encapsulated PDF


def summary_pdf(
    report: ResponseReport,
    *,
    org_root: str,
    created: datetime | None = None,
    sources: Sequence[Instance] = (),
    series: str | None = None,
) -> Dataset:
    """The Encapsulated PDF summary, by default in its own series next to the SR's (``sources``: the SR(s) it
    summarises).

    Encapsulated PDF rather than a Secondary Capture: the text stays vector and searchable (``pdftotext``
    finds every value, nothing is lost to scaling or burned-in pixels), the page prints sharply at any size,
    the file is a few kilobytes, and PACS viewers (OHIF's PDF viewport, dcm4chee, Orthanc, Sectra, Visage)
    display it natively.
    """
    from agent.sr.summary import render_pdf

    pdf = render_pdf(report)
    length = len(pdf)
    if length % 2:
        pdf += b"\x00"  # OB values have even length; the document length excludes the padding
    content_date, content_time = _created(created)
    patient, study = report.patient, report.current
    fp = fingerprint(report)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = derive_uid(org_root, "response-pdf", study.study_uid, fp)
    ds.InstanceCreationDate = content_date
    ds.InstanceCreationTime = content_time
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date or ""
    ds.PatientSex = patient.sex or ""
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.date.strftime("%Y%m%d")
    ds.StudyTime = study.time or ""
    ds.ReferringPhysicianName = study.referring_physician or ""
    ds.StudyID = study.study_id or ""
    ds.AccessionNumber = study.accession or ""
    if study.description:
        ds.StudyDescription = study.description
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series or summary_series_uid(report, org_root)
    ds.SeriesNumber = SUMMARY_SERIES_NUMBER
    ds.SeriesDescription = SUMMARY_SERIES_DESCRIPTION
    ds.SeriesDate = content_date
    ds.SeriesTime = content_time
    ds.Manufacturer = AGENT_NAME
    ds.ManufacturerModelName = AGENT_NAME
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate = content_date
    ds.ContentTime = content_time
    ds.AcquisitionDateTime = content_date + content_time
    ds.BurnedInAnnotation = "YES"  # the page shows the patient's name and ID
    ds.RecognizableVisualFeatures = "NO"
    title = "Tumour response summary" + (" (pre-read)" if report.pre_read else "") + " - unverified"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = DicomSequence()
    if sources:
        refs = []
        for src in sources:
            ref = Dataset()
            ref.ReferencedSOPClassUID = src.sop_class_uid
            ref.ReferencedSOPInstanceUID = src.sop_instance_uid
            refs.append(ref)
        ds.SourceInstanceSequence = DicomSequence(refs)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf
    ds.EncapsulatedDocumentLength = length
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    _set_character_set(ds)
    return ds


def instance_of(ds: Dataset) -> Instance:
    """The evidence reference of a dataset we wrote (e.g. the SR, as the PDF's source)."""
    return Instance(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    )
