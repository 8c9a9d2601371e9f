"""``liver-agent sr assess``: SR files -> timeline -> assessment -> response SR (+ PDF summary) as DICOM.

The offline path of the pipeline. It gathers what ``agent.sr.write`` needs that the clinical model does not
hold: the patient and study headers of the SR files, each lesion's baseline Tracking UID, finding sites,
image references and regions, and the evidence (the images measured and the SRs read). Our own SRs are
recognised by Manufacturer: they never stand in for a radiologist's SR of the same study, and ours for the
newest study are listed as predecessors of the new version.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import pydicom

from agent.commands.sr import read_reports, sr_settings, timeline_context
from agent.pipeline.tracking import ReportInput, TrackedTimeline, TrackingError, build_timeline
from agent.response.alerts import CATALOGUE
from agent.response.model import Alert, Assessment, Severity, Timeline
from agent.response.parse import ValidationError, assessment_to_dict
from agent.response.table import assess_timeline
from agent.sr import write as sr_write
from agent.sr.read import PRE_READ_REASON, SRReport, read_sr
from agent.sr.report import Instance, LesionDicom, PatientInfo, ResponseReport, StudyInfo
from agent.sr.write import AGENT_NAME, instance_of, response_sr, summary_pdf

_HEADER_TAGS = [
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "Modality",
]


def _fail(message: str) -> int:
    print(f"liver-agent sr assess: {message}", file=sys.stderr)
    return 2


def _header(path: str | None) -> pydicom.Dataset:
    if path is None:
        return pydicom.Dataset()
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _is_ours(report: SRReport) -> bool:
    return (report.manufacturer or "").strip() == AGENT_NAME


def _select(usable: list[ReportInput]) -> tuple[list[ReportInput], list[ReportInput]]:
    """(inputs for the timeline, our SRs set aside): ours only count for a study nobody else measured."""
    others = {u.context.study_uid for u in usable if not _is_ours(u.report)}
    keep = [u for u in usable if not _is_ours(u.report) or u.context.study_uid not in others]
    ours = [u for u in usable if u not in keep]
    return keep, ours


def _instance(report: SRReport) -> Instance | None:
    if report.study_uid and report.series_uid and report.sop_instance_uid:
        return Instance(report.study_uid, report.series_uid, report.sop_class_uid, report.sop_instance_uid)
    return None


def _images(report: SRReport) -> list[Instance]:
    """The evidence entries of ``report`` for the images its groups measured (else all its evidence)."""
    measured = {img.sop_instance_uid for g in report.groups for img in g.images}
    complete = [
        e for e in report.evidence if e.study_uid and e.series_uid and e.sop_class_uid and e.sop_instance_uid
    ]
    chosen = [e for e in complete if e.sop_instance_uid in measured] or complete
    return [
        Instance(str(e.study_uid), str(e.series_uid), str(e.sop_class_uid), str(e.sop_instance_uid))
        for e in chosen
    ]


def _study(item: ReportInput, header: pydicom.Dataset) -> StudyInfo:
    ctx = item.context
    study_uid = ctx.study_uid or item.report.study_uid or ""
    same = _text(header, "StudyInstanceUID") == study_uid
    return StudyInfo(
        study_uid=study_uid,
        date=ctx.date or date.min,
        time=(_text(header, "StudyTime") or "")[:6] or None if same else None,
        accession=_text(header, "AccessionNumber") if same else None,
        study_id=_text(header, "StudyID") if same else None,
        description=_text(header, "StudyDescription") if same else None,
        referring_physician=_text(header, "ReferringPhysicianName") if same else None,
        modality=ctx.modality,
    )


def _lesion_facts(tracked: TrackedTimeline, upto: int) -> dict[str, LesionDicom]:
    """Per lesion id: the first Tracking UID and identifier it had (the baseline's), and where it was
    measured last: finding sites, images and regions."""
    first_uid: dict[str, str] = {}
    first_identifier: dict[str, str] = {}
    facts: dict[str, LesionDicom] = {}
    for tp in tracked.timepoints[: upto + 1]:
        report = tp.report.report
        for tl in tp.lesions:
            lesion_id = tl.lesion.id
            src = tl.sources[0] if tl.sources else {}
            uid = src.get("tracking_uid")
            if isinstance(uid, str) and lesion_id not in first_uid:
                first_uid[lesion_id] = uid
            ident = src.get("tracking_identifier")
            if isinstance(ident, str) and lesion_id not in first_identifier:
                first_identifier[lesion_id] = ident
            obs = next((o for o in tp.report.observations if o.source == src), None)
            group = next(
                (
                    g
                    for g in report.groups
                    if g.tracking_identifier == src.get("tracking_identifier")
                    and g.tracking_uid == src.get("tracking_uid")
                    and [i.sop_instance_uid for i in g.images][:16] == src.get("images")
                ),
                None,
            )
            facts[lesion_id] = LesionDicom(
                tracking_uid=None,
                tracking_identifier=None,
                site_codes=obs.site_codes if obs is not None else (),
                images=group.images if group is not None else (),
                regions=group.regions if group is not None else (),
            )
    return {
        k: replace(v, tracking_uid=first_uid.get(k), tracking_identifier=first_identifier.get(k))
        for k, v in facts.items()
    }


def _tracking_alerts(tracked: TrackedTimeline, n: int) -> list[Alert]:
    definition = CATALOGUE.get("LESION_TRACKING_MISMATCH")
    severity = definition.severity if definition else Severity.CRITICAL
    citation = definition.citation if definition else ""
    return [
        Alert(a.code, a.timepoint, severity, a.message, citation) for a in tracked.alerts if a.timepoint < n
    ]


def build_report(
    tracked: TrackedTimeline,
    assessment: Assessment,
    timeline: Timeline,
    *,
    pre_read: bool,
    ours: list[SRReport],
) -> tuple[ResponseReport, list[Instance]]:
    """The ResponseReport for the newest study of ``tracked`` and the SR instances it was made from."""
    n_all = len(tracked.timepoints)
    n = len(timeline.timepoints)
    headers = [_header(tp.report.report.source) for tp in tracked.timepoints]
    studies = tuple(_study(tp.report, h) for tp, h in zip(tracked.timepoints, headers, strict=True))
    newest = tracked.timepoints[-1]
    head = headers[-1]
    patient = PatientInfo(
        name=_text(head, "PatientName") or "",
        patient_id=_text(head, "PatientID") or newest.report.report.patient_id or "",
        birth_date=_text(head, "PatientBirthDate"),
        sex=_text(head, "PatientSex"),
        character_set=_text(head, "SpecificCharacterSet"),
    )
    current = studies[-1]
    evidence: list[Instance] = []
    sources: list[Instance] = []
    for i, tp in enumerate(tracked.timepoints):
        evidence += _images(tp.report.report)
        sr = _instance(tp.report.report)
        if sr is not None and not (pre_read and i == n_all - 1):
            evidence.append(sr)
            sources.append(sr)
    if pre_read and not any(e.study_uid == current.study_uid for e in evidence):
        sr = _instance(newest.report.report)  # no image of the newest study known: its SR stands for it
        if sr is not None:
            evidence.append(sr)
    predecessors = sorted(
        (inst for r in ours if r.study_uid == current.study_uid and (inst := _instance(r)) is not None),
        key=lambda i: i.sop_instance_uid,
    )
    extra = _tracking_alerts(tracked, n)
    known = {(a.code, a.timepoint, a.message) for a in assessment.alerts}
    alerts = assessment.alerts + tuple(a for a in extra if (a.code, a.timepoint, a.message) not in known)
    report = ResponseReport(
        patient=patient,
        studies=studies[:n],
        current=current,
        timeline=timeline,
        assessment=Assessment(assessment.results, alerts),
        lesions=_lesion_facts(tracked, n_all - 1 if not pre_read else n - 1),
        evidence=tuple(dict.fromkeys(evidence)),
        predecessors=tuple(predecessors),
        pre_read=pre_read,
    )
    return report, sources


def assess_files(args: argparse.Namespace) -> int:
    try:
        context = timeline_context(args)
    except ValidationError as exc:
        return _fail(str(exc))
    rules, limits, distance = sr_settings(args)
    if args.link_distance_mm is not None:
        distance = args.link_distance_mm
    from agent.commands import settings_or_exit

    org_root = settings_or_exit(getattr(args, "config", None)).uids.org_root
    usable, failures, _ = read_reports(args.files, rules=rules, limits=limits)
    pre_reads: list[SRReport] = []
    for path, reason in list(failures.items()):
        if reason == PRE_READ_REASON:  # an earlier pre-read of ours: superseded, never an input
            pre_reads.append(read_sr(path, limits=limits))
            del failures[path]
            print(f"{path}: {reason}; set aside", file=sys.stderr)
    for path, reason in failures.items():
        print(f"{path}: {reason}", file=sys.stderr)
    if failures:
        return _fail(f"{len(failures)} file(s) cannot be used; nothing written")
    inputs, ours = _select(usable)
    try:
        tracked = build_timeline(inputs, context, link_distance_mm=distance)
    except TrackingError as exc:
        return _fail(str(exc))
    full = tracked.timeline()
    if args.pre_read:
        if len(full.timepoints) < 2:
            return _fail("--pre-read needs at least one earlier study besides the newest one")
        timeline = Timeline(full.context, full.timepoints[:-1], full.options)
    else:
        timeline = full
    assessment = assess_timeline(timeline)
    try:
        earlier = [o.report for o in ours] + pre_reads
        report, sources = build_report(tracked, assessment, timeline, pre_read=args.pre_read, ours=earlier)
        created = sr_write.clock()  # one moment for the SR and its summary
        sr = response_sr(report, org_root=org_root, created=created)
        out = Path(args.out)
        sr.save_as(out, enforce_file_format=True)
        if args.summary:
            pdf = summary_pdf(report, org_root=org_root, created=created, sources=[instance_of(sr), *sources])
            pdf.save_as(Path(args.summary), enforce_file_format=True)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(assessment_to_dict(assessment), indent=2))
    else:
        print(f"wrote {out}" + (f" and {args.summary}" if args.summary else ""), file=sys.stderr)
    return 0
